"""MoQ sessions authorized by a ``moq`` session token (``POST /token/moq``, docs/moq.md).

The token comes in the client's AUTHORIZATION TOKEN setup parameter or as ``?jwt=`` on the URL
(the WebTransport URL, or the PATH setup parameter over raw QUIC). Its ``publish`` and
``subscribe`` claims are namespace prefixes ("a/b"): a namespace may be used when its first
fields equal one of them. The token is checked once, at setup (its expiry then too).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable

from trackmesh.security.tokens import AppTokenKeys, TokenError, verify, verify_for_app
from trackmesh.transports.moq.auth import Authorizer
from trackmesh.transports.moq.messages import TrackNamespace

__all__ = ["TokenAuthorizer"]

#: The rooms' MoQ namespaces, ("trackmesh", <room>) (runtime/moq_rooms.py, moq_room_ingest.py).
ROOMS_NAMESPACE = (b"trackmesh",)


def _prefixes(scopes: tuple[str, ...]) -> list[tuple[bytes, ...]]:
    return [tuple(field.encode() for field in scope.split("/")) for scope in scopes]


def _covered(namespace: TrackNamespace, prefixes: list[tuple[bytes, ...]]) -> bool:
    return any(namespace[: len(p)] == p for p in prefixes)


class TokenAuthorizer(Authorizer):
    """One session's rights, from its token."""

    def __init__(self, key: bytes | str | AppTokenKeys, clock: Callable[[], float] = time.time) -> None:
        """``key``: the token key, or the token keys by app (multi-tenancy: a tenant's token is
        checked with its app's key, security/tokens.py ``verify_for_app``)."""
        self._key = key
        self._clock = clock
        self._publish: list[tuple[bytes, ...]] = []
        self._subscribe: list[tuple[bytes, ...]] = []
        self.peer: str | None = None
        self.record = False  # the token says record: true (runtime/moq_room_ingest.py)
        self.app = ""

    def setup(self, token: bytes | None, path: str) -> str | None:
        if token is None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            if query.get("jwt"):
                token = query["jwt"][0].encode()
        if not token:
            return "a moq token is needed: the AUTHORIZATION TOKEN setup parameter or ?jwt= on the URL"
        try:
            raw, now = token.decode("ascii", "replace"), int(self._clock())
            key = self._key
            if isinstance(key, (bytes, str)):
                claims = verify(key, raw, "moq", now)
            else:
                claims = verify_for_app(key, raw, "moq", now)
        except TokenError as exc:
            return str(exc)
        self._publish = _prefixes(claims.publish)
        self._subscribe = _prefixes(claims.subscribe)
        self.peer = claims.peer
        self.record = claims.record
        self.app = claims.app
        return None

    def _rooms_namespace(self, namespace: TrackNamespace) -> bool:
        """A tenant may not use the rooms' namespaces: the relay's namespaces are not per app, and
        ("trackmesh", <room>) names the single-tenant app's rooms (docs/connector.md, multi-tenancy)."""
        return bool(self.app) and namespace[:1] == ROOMS_NAMESPACE

    def may_publish(self, namespace: TrackNamespace) -> bool:
        return not self._rooms_namespace(namespace) and _covered(namespace, self._publish)

    def may_subscribe(self, namespace: TrackNamespace) -> bool:
        return not self._rooms_namespace(namespace) and _covered(namespace, self._subscribe)

    def may_discover(self, prefix: TrackNamespace) -> bool:
        # A broader prefix (even the empty one) may be watched: only covered namespaces are reported.
        if self._rooms_namespace(prefix):
            return False
        return any(p[: len(prefix)] == prefix or prefix[: len(p)] == p for p in self._subscribe)
