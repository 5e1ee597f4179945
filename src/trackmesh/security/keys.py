"""Keys derived from the app secret: one per use, so a leak or an offline guess in one use says
nothing usable about another.

The app secret is what an operator types (``--secret``) or what the node generates. It is never
used as a key directly (except for atm0s-compatible tokens, see below): each use gets its own
32-byte key from HKDF-SHA256 (RFC 5869) with the use's name as ``info``:

- ``token-signing``: HS256 session tokens (security/tokens.py);
- ``cluster-link``: the zenoh user/password of cluster links (cluster/zenoh_session.py);
- ``conn-id``: the HMAC tag of conn ids (core/ids.py);
- ``gateway-forward``: the gateway's signed ``X-Trackmesh-Client`` header (the client address a
  media node throttles on, http/throttle.py).
- ``standard-webhooks``: the default ``whsec_`` secret of the connector's Standard Webhooks, one
  per app (``webhook_key``, connector/signing.py).
- ``sip-digest``: the digest passwords of SIP callers, HMACs of their usernames (``sip_digest_key``,
  transports/sip/auth.py): nothing stored, every node answers the same.
- ``console-session``: the console's session cookies and CSRF tokens (http/console/session.py).

HKDF's extract step also turns a low-entropy secret into a uniform key, but it cannot add
entropy: a short secret stays guessable offline from any token a browser holds, which is why
``--secret`` requires 16 characters (generated secrets have 32).

``--atm0s-compatible-tokens`` signs and verifies tokens with the app secret itself, as
atm0s-media-server does, so tokens minted by atm0s tooling (or by an app backend that signs
JWTs with the app secret) keep working; the trade is documented in docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSES = (
    "token-signing",
    "cluster-link",
    "conn-id",
    "gateway-forward",
    "standard-webhooks",
    "sip-digest",
    "console-session",
    "cluster-apps",
)
KEY_BYTES = 32
# A fixed, public salt (RFC 5869 s3.1: a salt is optional; a constant one still separates our
# keys from any other HKDF use of the same secret).
_SALT = b"trackmesh app secret v1"


def _raw(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if not raw:
        raise ValueError("the app secret must not be empty")
    return raw


def hkdf_sha256(ikm: bytes, info: bytes, length: int = KEY_BYTES, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 (RFC 5869 s2.2 extract, s2.3 expand): the one implementation every derived key uses."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@lru_cache(maxsize=64)
def derive_key(secret: str | bytes, purpose: str, context: str = "") -> bytes:
    """The 32-byte key of ``purpose`` (one of PURPOSES) derived from the app secret; a non-empty
    ``context`` (e.g. an app id) gives each context its own key of that purpose."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    info = b"trackmesh " + purpose.encode() + (b"|" + context.encode() if context else b"")
    return hkdf_sha256(_raw(secret), info, KEY_BYTES, _SALT)


def webhook_key(secret: str | bytes, app: str = "") -> bytes:
    """The key of app ``app``'s default ``whsec_`` webhook secret (Standard Webhooks, connector/signing.py):
    derived from that app's secret, so it survives restarts unstored and changes with the secret."""
    return derive_key(secret, "standard-webhooks", app)


def sip_digest_key(secret: str | bytes) -> bytes:
    """The key of SIP digest passwords and nonces (transports/sip/auth.py, docs/sip.md)."""
    return derive_key(secret, "sip-digest")


def token_key(secret: str | bytes, atm0s_compatible: bool = False) -> bytes:
    """The HS256 key of session tokens: derived, or the app secret itself in atm0s mode."""
    return _raw(secret) if atm0s_compatible else derive_key(secret, "token-signing")


def sign_forwarded(secret: str | bytes, client: str) -> str:
    """The gateway's ``X-Trackmesh-Client`` value: the client address and a tag only cluster
    members can make, so a media node throttles the real client and not the gateway."""
    tag = hmac.new(derive_key(secret, "gateway-forward"), client.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{client};{tag}"


def verify_forwarded(secret: str | bytes, value: str) -> str | None:
    """The client address of a ``sign_forwarded`` value, or None when it does not verify."""
    client, _, _tag = value.rpartition(";")
    if not client or len(client) > 64:
        return None
    return client if hmac.compare_digest(sign_forwarded(secret, client).encode(), value.encode()) else None
