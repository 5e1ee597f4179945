"""Apps (tenants): who may read which log, and where each app's webhooks go.

atm0s 0.2 compatible: the single-tenant default is one app, id ``""``, whose secret is the
node's ``--secret`` and whose hook is ``--hook-url``. ``--apps FILE`` and/or
``--multi-tenancy-sync URL`` (polled every 30 s) add apps from a document
``{"apps": [{"app_id": "a", "app_secret": "...", "hook": "https://..."}]}``; a sync replaces the
list in full, and a malformed or unreachable document keeps the previous list (error logged).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from trackmesh.security.keys import token_key

from .signing import SecretError, derived_secret, parse_secret

log = logging.getLogger("trackmesh.connector")

SYNC_INTERVAL_S = 30.0
# An app's secret is an app secret like --secret: the same minimum (docs/security.md).
MIN_SECRET_CHARS = 16


class AppsError(ValueError):
    """An app list that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class App:
    app_id: str
    app_secret: str
    hook_url: str | None
    hook_secret: str  # whsec_...


def check_hook_url(url: str, what: str = "hook") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AppsError(f"{what}: {url!r} is not an http(s) URL")
    return url


def parse_apps(data: bytes | str) -> list[App]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppsError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("apps"), list):
        raise AppsError('expected {"apps": [...]}')
    out: list[App] = []
    seen: set[str] = set()
    for i, entry in enumerate(doc["apps"]):
        if not isinstance(entry, dict):
            raise AppsError(f"apps[{i}]: expected an object")
        app_id, secret, hook = entry.get("app_id"), entry.get("app_secret"), entry.get("hook")
        if not isinstance(app_id, str) or not 0 < len(app_id) <= 128 or not app_id.isprintable():
            raise AppsError(f"apps[{i}].app_id: expected a printable string of 1..128 characters")
        if app_id in seen:
            raise AppsError(f"apps[{i}].app_id: {app_id!r} appears twice")
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
            raise AppsError(f"apps[{i}].app_secret: expected a string of at least {MIN_SECRET_CHARS} characters")
        if hook is not None and not isinstance(hook, str):
            raise AppsError(f"apps[{i}].hook: expected a URL string")
        if hook:
            check_hook_url(hook, f"apps[{i}].hook")
        hook_secret = entry.get("hook_secret")
        if hook_secret is None:
            hook_secret = derived_secret(secret, app_id)
        elif not isinstance(hook_secret, str):
            raise AppsError(f"apps[{i}].hook_secret: expected a whsec_ string")
        try:
            parse_secret(hook_secret)
        except SecretError as exc:
            raise AppsError(f"apps[{i}].hook_secret: {exc}") from None
        seen.add(app_id)
        out.append(App(app_id, secret, hook or None, hook_secret))
    return out


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class AppRegistry:
    def __init__(self, root: App) -> None:
        self.root = root
        self._apps: dict[str, App] = {root.app_id: root}
        self._by_secret: list[tuple[bytes, str]] = [(_digest(root.app_secret), root.app_id)]

    def replace(self, apps: list[App]) -> None:
        """The new full list (the root app always stays)."""
        new = {self.root.app_id: self.root}
        for app in apps:
            if app.app_id != self.root.app_id:
                new[app.app_id] = app
        self._apps = new
        self._by_secret = [(_digest(a.app_secret), a.app_id) for a in new.values()]

    def app_for_secret(self, presented: str) -> str | None:
        """The app whose secret ``presented`` is (constant time per app), or None."""
        d = _digest(presented)
        found = None
        for digest, app_id in self._by_secret:
            if hmac.compare_digest(digest, d):
                found = app_id
        return found

    def get(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    def all(self) -> list[App]:
        """Every app, the root (single-tenant) one first."""
        return list(self._apps.values())

    def token_keys(self, atm0s_compatible: bool) -> dict[str, bytes]:
        """Each app's session-token key, made from its own secret as the node's is from
        ``--secret`` (security.keys.token_key): tokens of an app are signed and checked with it."""
        return {a.app_id: token_key(a.app_secret, atm0s_compatible) for a in self._apps.values()}

    def token_key_of(self, app_id: str, atm0s_compatible: bool) -> bytes | None:
        app = self._apps.get(app_id)
        return None if app is None else token_key(app.app_secret, atm0s_compatible)

    def __len__(self) -> int:
        return len(self._apps)

    def load_file(self, path: str) -> None:
        with open(path, "rb") as f:
            self.replace(parse_apps(f.read()))

    def apply_sync(self, body: bytes) -> bool:
        """A sync answer: True if applied; a bad document keeps the previous list."""
        try:
            apps = parse_apps(body)
        except AppsError as exc:
            log.error("multi-tenancy sync: bad document, keeping the previous app list",
                      extra={"fields": {"error": str(exc)}})
            return False
        self.replace(apps)
        return True


async def sync_forever(registry: AppRegistry, url: str, on_change: Any = None) -> None:
    """Poll ``url`` every 30 s (time-out half of that, as atm0s)."""
    import asyncio

    import httpx

    async with httpx.AsyncClient(timeout=SYNC_INTERVAL_S / 2, follow_redirects=False) as client:
        while True:
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    if registry.apply_sync(response.content) and on_change is not None:
                        on_change()
                else:
                    log.error("multi-tenancy sync failed, keeping the previous app list",
                              extra={"fields": {"status": response.status_code}})
            except httpx.HTTPError as exc:
                log.error("multi-tenancy sync failed, keeping the previous app list",
                          extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            await asyncio.sleep(SYNC_INTERVAL_S)
