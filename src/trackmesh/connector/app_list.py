"""The zone's app list as the connector hands it to the cluster (multi-tenancy in a cluster,
docs/connector.md): a sealed document every member of the zone opens with the cluster secret.

Media nodes and gateways have no ``--apps``: the zone's connector owns the list (``--apps``,
``--multi-tenancy-sync``) and publishes it on ``tm/apps/<zone>`` (runtime/cluster_apps.py). A
member needs each app's secret (to verify and mint its tokens, and to recognise it on
``Authorization: Bearer``), so the document is encrypted and authenticated with AES-256-GCM
under a key derived from the cluster secret (security/keys.py, purpose ``cluster-apps``), with the
zone's key as associated data: only holders of the cluster secret read it, nobody alters it, and
one zone's list cannot be replayed as another's. ``issued`` (the connector's wall clock, ms) lets
a member keep the newest list when a query's answer and a newer put cross.

Layout: ``0x01 | nonce (12 bytes) | AES-GCM(JSON {"issued": ms, "apps": [...]})``; the JSON's
``apps`` are the ``--apps`` document's entries (app_id, app_secret, hook, hook_secret).
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trackmesh.security.keys import derive_key

from .apps import App, AppsError, parse_apps

__all__ = ["AppListError", "open_app_list", "seal_app_list"]

_VERSION = 1
_NONCE = 12
MAX_DOCUMENT = 4 * 1024 * 1024  # far above any real app list; a bigger payload is refused unread


class AppListError(ValueError):
    """A sealed app list that cannot be used (wrong secret or zone, altered, malformed)."""


def _aead(secret: str) -> AESGCM:
    return AESGCM(derive_key(secret, "cluster-apps"))


def seal_app_list(secret: str, key: str, apps: list[App], issued_ms: int) -> bytes:
    """The sealed document of ``apps`` for the zone key ``key``."""
    doc = {
        "issued": issued_ms,
        "apps": [{"app_id": a.app_id, "app_secret": a.app_secret, "hook": a.hook_url, "hook_secret": a.hook_secret}
                 for a in apps],
    }  # fmt: skip
    nonce = os.urandom(_NONCE)
    return bytes([_VERSION]) + nonce + _aead(secret).encrypt(nonce, json.dumps(doc).encode(), key.encode())


def open_app_list(secret: str, key: str, data: bytes) -> tuple[int, list[App]]:
    """(issued ms, apps) of a sealed document; AppListError when it is not one of ours for ``key``."""
    if len(data) > MAX_DOCUMENT:
        raise AppListError("app list too large")
    if len(data) < 1 + _NONCE + 16 or data[0] != _VERSION:
        raise AppListError("not a sealed app list (version or length)")
    try:
        plain = _aead(secret).decrypt(data[1 : 1 + _NONCE], data[1 + _NONCE :], key.encode())
    except InvalidTag:
        raise AppListError("app list does not verify (another cluster secret or zone, or altered)") from None
    try:
        doc = json.loads(plain)
        issued = doc["issued"] if isinstance(doc, dict) else None
        if not isinstance(issued, int) or isinstance(issued, bool) or issued < 0:
            raise AppListError("app list without a valid issued time")
        return issued, parse_apps(plain)
    except (ValueError, KeyError, AppsError) as exc:
        raise AppListError(f"malformed app list: {exc}") from None
