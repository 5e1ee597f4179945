"""Session tokens: HS256 JWTs in atm0s 0.2's format.

The key is ``security.keys.token_key``: derived from the app secret (HKDF, ``token-signing``), or
the app secret itself with ``--atm0s-compatible-tokens`` (docs/security.md).

Multi-tenancy (as atm0s 0.2): a token of app X carries ``sub = X`` and is signed with X's key,
made the same way from X's own app secret, so X's backend can mint its tokens itself.
``verify_for_app`` picks the key by the token's ``sub``; as ``sub`` is signed too, a token
claiming app Y verifies only with Y's key: one app's secret neither mints for nor reads another.

Claims: ``iss`` is the token kind (whip, whep, webrtc, rtpengine, rtmp: the stream key, sip, moq) so a
token cannot be used on another kind of endpoint; ``exp``/``iat``/``nbf`` from the ttl; custom ``room``,
``peer``, ``record`` and ``extra_data``; a ``moq`` token also has ``publish`` and ``subscribe``: the MoQ
namespace prefixes ("a/b" strings) its session may publish and subscribe under.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

# atm0s-compatible tokens are signed with the app secret itself, which users choose (we require
# >= 16 characters; generated ones have 32). Derived keys have 32 bytes. The trade is in docs/security.md.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

KINDS = ("whip", "whep", "webrtc", "rtpengine", "rtmp", "sip", "moq")
MAX_TTL = 7 * 24 * 3600


class TokenError(ValueError):
    """A token that cannot be used; the message says why (it becomes the 401 body)."""


@dataclass(frozen=True)
class SessionToken:
    kind: str
    room: str | None
    peer: str | None
    record: bool = False
    extra_data: str | None = None
    expires_at: int = 0
    # The app (multi-tenancy, atm0s's JWT ``sub``); "" is the single-tenant default app.
    app: str = ""
    # MoQ (docs/moq.md): namespace prefixes, fields joined by "/", this session may use.
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


def app_secret_matches(secret: str, presented: str) -> bool:
    return hmac.compare_digest(
        hashlib.sha256(secret.encode()).digest(), hashlib.sha256(presented.encode()).digest()
    )


def issue(key: str | bytes, token: SessionToken, ttl: int, now: int) -> str:
    if token.kind not in KINDS:
        raise ValueError(f"unknown token kind {token.kind!r}")
    claims: dict[str, Any] = {"iss": token.kind, "iat": now, "nbf": now - 1, "exp": now + ttl}
    if token.room is not None:
        claims["room"] = token.room
    if token.peer is not None:
        claims["peer"] = token.peer
    if token.record:
        claims["record"] = True
    if token.extra_data is not None:
        claims["extra_data"] = token.extra_data
    if token.app:
        claims["sub"] = token.app
    if token.publish:
        claims["publish"] = list(token.publish)
    if token.subscribe:
        claims["subscribe"] = list(token.subscribe)
    return jwt.encode(claims, key, algorithm="HS256")


def verify(key: str | bytes, token: str, kind: str, now: int) -> SessionToken:
    """Check signature, expiry and kind. ``now`` is wall-clock seconds (the caller's clock)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["iss", "exp"]},
        )
    except jwt.InvalidSignatureError:
        raise TokenError("token signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"token is malformed: {exc}") from None
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now:
        raise TokenError("token has expired")
    if claims.get("iss") != kind:
        raise TokenError(f"token is for {claims.get('iss')!r}, not {kind!r}")
    room, peer, extra = claims.get("room"), claims.get("peer"), claims.get("extra_data")
    for name, value in (("room", room), ("peer", peer), ("extra_data", extra)):
        if value is not None and not isinstance(value, str):
            raise TokenError(f"token claim {name!r} must be a string")
    app = claims.get("sub", "")
    if not isinstance(app, str):
        raise TokenError("token claim 'sub' must be a string")
    scopes: dict[str, tuple[str, ...]] = {}
    for name in ("publish", "subscribe"):
        value = claims.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TokenError(f"token claim {name!r} must be a list of strings")
        scopes[name] = tuple(value)
    return SessionToken(
        kind, room, peer, claims.get("record") is True, extra, exp, app, scopes["publish"], scopes["subscribe"]
    )


#: The token key of an app id ("" = the single-tenant app), or None for an app this node does not know.
AppTokenKeys = Callable[[str], "bytes | None"]


def claimed_app(token: str) -> str:
    """The ``sub`` of a token *before* its signature is checked: only to choose the key that
    checks it (``verify_for_app``), never trusted on its own."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"token is malformed: {exc}") from None
    app = claims.get("sub", "") if isinstance(claims, dict) else ""
    if not isinstance(app, str):
        raise TokenError("token claim 'sub' must be a string")
    return app


def verify_for_app(keys: AppTokenKeys, token: str, kind: str, now: int) -> SessionToken:
    """``verify`` with the key of the app the token names (its ``sub``; none: the single-tenant app)."""
    app = claimed_app(token)
    key = keys(app)
    if key is None:
        raise TokenError(f"token is for app {app!r}, which this node does not know")
    verified = verify(key, token, kind, now)
    if verified.app != app:  # cannot differ (the signature covers sub); kept as a guard
        raise TokenError("token app does not match its key")
    return verified
