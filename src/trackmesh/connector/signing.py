"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec v1).

Each delivery carries ``webhook-id`` (the event id, the same on every retry), ``webhook-timestamp``
(unix seconds of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``{id}.{timestamp}.{body}``. The key is the base64 part of a ``whsec_...`` secret, so the
``standardwebhooks`` library (and Svix's) verifies our deliveries with that secret string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from trackmesh.security.keys import webhook_key

SECRET_PREFIX = "whsec_"
# Spec: receivers reject timestamps more than 5 minutes off; we sign each attempt afresh.
TOLERANCE_S = 5 * 60


class SecretError(ValueError):
    """A hook secret that is not ``whsec_`` followed by base64 of 24..64 bytes."""


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("a hook secret starts with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("a hook secret is 'whsec_' followed by base64; the base64 part does not decode") from None
    if not 24 <= len(key) <= 64:
        raise SecretError(f"a hook secret's key is 24..64 bytes; this one has {len(key)}")
    return key


def format_secret(key: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(key).decode()


def derived_secret(app_secret: str, app: str = "") -> str:
    """The default hook secret of an app: derived from its app secret (security/keys.py, HKDF purpose
    ``standard-webhooks`` with the app id as context), so it survives restarts without being stored
    and changes when the app secret does."""
    return format_secret(webhook_key(app_secret, app))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def content_type(body: bytes) -> str | None:
    """The ``content-type`` of a stored body: JSON bodies are objects (``{``); a protobuf
    ``HookEvent`` never starts with that byte (0x7b would be field 15 as a group, which it does
    not have), and atm0s posts it without a content-type. Told from the bytes, so rows queued
    before a ``--hook-body`` change keep the right one."""
    return "application/json" if body[:1] == b"{" else None


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    out = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }
    kind = content_type(body)
    if kind is not None:
        out["content-type"] = kind
    return out


def unsigned_headers(msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """An app without a signing key (none configured yet): the same headers but the signature."""
    out = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    kind = content_type(body)
    if kind is not None:
        out["content-type"] = kind
    return out


def verify(key: bytes, msg_id: str, timestamp: str, signature_header: str, body: bytes, now: int) -> bool:
    """Our own check (docs and tests use the ``standardwebhooks`` package as the reference).
    The header may list several space-separated signatures (key rotation); one match is enough."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > TOLERANCE_S:
        return False
    expected = sign(key, msg_id, ts, body).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in signature_header.split(" ") if s.startswith("v1,"))
