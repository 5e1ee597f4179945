"""Who may call which room: a bearer token, or digest credentials derived from the app secret.

Two ways, both stateless (nothing is stored per caller):

1. A ``sip`` token (``POST /token/sip``) in the Request-URI's user part (``sip:<token>@host``) or
   in an ``X-Trackmesh-Token`` header: checked by the caller-supplied ``verify_token``.
2. Digest (RFC 3261 s22, RFC 7616/8760) for softphones and PBXs, which are configured with a
   username and a password: the username carries the grant, ``tm1.<base64url of JSON [room, peer,
   expiry]>``, and the password is an HMAC of the username under a key derived from the app secret
   (:func:`sip_password`). So the server checks a response by recomputing the password, and a
   username cannot be altered without the password changing. A request without credentials gets a
   401 challenge (SHA-256 and MD5); a wrong or expired one a 403 that names no part; a good response
   on an old nonce a new challenge with ``stale=true``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from trackmesh.errors import RemoteProtocolError

from .digest import DigestServer, Verdict, compute_ha1, parse_credentials
from .message import Request, SipUri

__all__ = [
    "TOKEN_HEADER",
    "CallAuthenticator",
    "Denied",
    "Grant",
    "sip_password",
    "sip_username",
]

TOKEN_HEADER = "X-Trackmesh-Token"
USERNAME_PREFIX = "tm1."
MAX_USERNAME = 2048


@dataclass(frozen=True, slots=True)
class Grant:
    room: str
    peer: str | None  # None: the caller names itself (sip-<its From user>)
    username: str | None = None  # digest: the authenticated username (a registration's key)
    wait_for_peers: bool = False  # atm0s' WaitOtherPeers: ring (180) until someone else is in the room
    record: bool = False  # the token says record: true: the caller's audio is recorded
    app: str = ""  # the token's app (multi-tenancy): the call joins that app's room


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def sip_username(room: str, peer: str | None, expires_at: int) -> str:
    """The digest username of a grant (the password comes from :func:`sip_password`)."""
    raw = json.dumps([room, peer, expires_at], separators=(",", ":"), ensure_ascii=False).encode()
    return USERNAME_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sip_password(key: bytes, username: str) -> str:
    """HMAC-SHA256 of the username, 128 bits in base64url: what the softphone is configured with."""
    mac = hmac.new(key, b"sip-password:" + username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")


def _decode_username(username: str) -> tuple[str, str | None, int] | None:
    # 128-character room and peer names (the token API's caps) in UTF-8 stay under 2 KiB here.
    if not username.startswith(USERNAME_PREFIX) or len(username) > MAX_USERNAME:
        return None
    body = username[len(USERNAME_PREFIX) :]
    try:
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not (isinstance(value, list) and len(value) == 3):
        return None
    room, peer, expires = value
    if not isinstance(room, str) or not (peer is None or isinstance(peer, str)) or not isinstance(expires, int):
        return None
    return room, peer, expires


class CallAuthenticator:
    """Decides INVITE and REGISTER requests; ``verify_token(token, wallclock)`` answers a Grant or an
    error message (the driver checks signature, kind and expiry with the node's token key)."""

    def __init__(
        self,
        key: bytes,
        realm: str,
        verify_token: Callable[[str, int], Grant | str],
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("MD5",),
    ) -> None:
        self._key = key
        self.digest = DigestServer(key, realm, nonce_ttl=nonce_ttl, algorithms=algorithms)
        self.verify_token = verify_token
        self.counters = {"token_ok": 0, "token_refused": 0, "challenged": 0, "digest_ok": 0, "digest_refused": 0}

    def challenge(self, now: float, *, stale: bool = False) -> Denied:
        """A 401 with our challenges."""
        return self._challenge(now, stale=stale)

    def _challenge(self, now: float, *, stale: bool = False) -> Denied:
        self.counters["challenged"] += 1
        values = self.digest.challenges(now, stale=stale)
        return Denied(401, "Unauthorized", tuple(("WWW-Authenticate", v) for v in values))

    def authorize(self, now: float, wallclock: int, req: Request) -> Grant | Denied:
        token = req.headers.get(TOKEN_HEADER)
        if token is None:
            try:
                user = SipUri.parse(req.uri).user or ""
            except RemoteProtocolError:
                user = ""
            if user.count(".") == 2 and len(user) > 40:  # a JWT: header.claims.signature
                token = user
        if token is not None:
            verdict = self.verify_token(token, wallclock)
            if isinstance(verdict, str):
                self.counters["token_refused"] += 1
                return Denied(403, f"Forbidden ({verdict})")
            self.counters["token_ok"] += 1
            return verdict
        header = req.headers.get("Authorization")
        if header is None:
            return self._challenge(now)
        try:
            creds = parse_credentials(header)
        except RemoteProtocolError:
            self.counters["digest_refused"] += 1
            return Denied(400, "Bad Request (malformed Authorization)")
        grant = _decode_username(creds.username)
        ha1 = None
        if grant is not None and creds.algorithm in ("SHA-256", "MD5"):
            password = sip_password(self._key, creds.username)
            ha1 = compute_ha1(creds.algorithm, creds.username, self.digest.realm, password)
        checked = self.digest.check(now, req.method, req.uri, creds, ha1)
        if checked is Verdict.STALE:
            return self._challenge(now, stale=True)
        if checked is not Verdict.OK or grant is None or grant[2] <= wallclock:
            # One answer for a wrong password, user, realm or an expired grant (no hint which).
            self.counters["digest_refused"] += 1
            return Denied(403, "Forbidden")
        self.counters["digest_ok"] += 1
        return Grant(grant[0], grant[1], creds.username)
