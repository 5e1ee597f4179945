"""The console's login sessions: signed, expiring cookies, CSRF tokens and the same-origin check.

Sans-IO (``now`` is an argument). A session is ``{app, expiry, nonce, root?}`` signed with HMAC-SHA256 under
the ``console-session`` key derived from the node's secret (security/keys.py), so a forged or
altered cookie fails the signature and an old one fails the expiry. Logging out revokes the nonce
(kept until the cookie would have expired anyway, at most ``max_revoked``).

Cross-site requests are refused twice over: the cookie is ``SameSite=Strict`` (a browser does not
send it on a request another site starts), and every state-changing call must come from our own
origin (``Origin``, else ``Referer``, naming the ``Host`` it was sent to) and carry the session's
CSRF token in ``X-CSRF-Token`` (a header a cross-site form cannot set).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from trackmesh.security.keys import derive_key

__all__ = ["COOKIE_NAME", "ConsoleSession", "ConsoleSessions", "same_origin"]

COOKIE_NAME = "trackmesh_console"
DEFAULT_TTL = 8 * 3600
MAX_COOKIE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    app: str  # the app (tenant) whose secret logged in; "" is the node's own --secret
    expires: int  # unix seconds
    nonce: str
    # The console role's cluster secret: the operator over every app (sees and acts on all of them).
    root: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleSessions:
    def __init__(self, secret: str, ttl: int = DEFAULT_TTL, max_revoked: int = 10_000) -> None:
        self._key = derive_key(secret, "console-session")
        self.ttl = ttl
        self.max_revoked = max_revoked
        self._revoked: dict[str, int] = {}  # nonce -> its session's expiry

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, app: str, now: float, root: bool = False) -> tuple[str, ConsoleSession]:
        """A new session of ``app`` (``root``: over every app): (cookie value, session)."""
        session = ConsoleSession(app, int(now) + self.ttl, secrets.token_urlsafe(16), root)
        fields: dict[str, object] = {"a": session.app, "e": session.expires, "n": session.nonce}
        if root:
            fields["r"] = 1
        payload = _b64(json.dumps(fields).encode())
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, value: str | None, now: float) -> ConsoleSession | None:
        """The session a cookie names, or None (missing, forged, expired, revoked, malformed)."""
        if not value or len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
            return None
        payload, tag = value.split(".")
        if not hmac.compare_digest(self._sign(payload).encode(), tag.encode()):  # bytes: any text compares
            return None
        try:
            obj = json.loads(_unb64(payload))
            session = ConsoleSession(str(obj["a"]), int(obj["e"]), str(obj["n"]), obj.get("r") == 1)
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= now or session.nonce in self._revoked:
            return None
        return session

    def revoke(self, session: ConsoleSession, now: float) -> None:
        """Logout: the cookie stops working at once, not only when the browser drops it."""
        for nonce, expires in list(self._revoked.items()):
            if expires <= now:
                del self._revoked[nonce]
        if len(self._revoked) >= self.max_revoked:
            self._revoked.pop(next(iter(self._revoked)))
        self._revoked[session.nonce] = session.expires

    def csrf_token(self, session: ConsoleSession) -> str:
        return self._sign("csrf|" + session.nonce)

    def csrf_ok(self, session: ConsoleSession, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token(session).encode(), presented.encode())


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """The request was started by a page of the origin it is sent to. ``Origin`` decides when
    present (``null`` never matches); else ``Referer``; a request with neither is refused."""
    if not host:
        return False
    source = origin if origin is not None else referer
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
