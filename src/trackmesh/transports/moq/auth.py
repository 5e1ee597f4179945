"""Who may do what in a MoQ session: the :class:`Authorizer` a driver gives each session, and
the AUTHORIZATION TOKEN parameter's Token structure (draft-16 s9.2.1.1, the same at draft-20)."""

from __future__ import annotations

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import Truncated
from trackmesh.transports.moq.varint import Reader

__all__ = ["Anonymous", "Authorizer", "authorization_token"]


class Authorizer:
    """Which namespaces a session may publish or subscribe. The default refuses everything; the
    driver passes :class:`Anonymous` (``--moq-anonymous``) or one that checks a token."""

    def setup(self, token: bytes | None, path: str) -> str | None:
        """The client's AUTHORIZATION token (setup parameter) and path (PATH, or the WebTransport
        URL's); a reason refuses the session with UNAUTHORIZED, None accepts it."""
        return None

    def may_publish(self, namespace: m.TrackNamespace) -> bool:
        return False

    def may_subscribe(self, namespace: m.TrackNamespace) -> bool:
        return False

    def may_discover(self, prefix: m.TrackNamespace) -> bool:
        """SUBSCRIBE_NAMESPACE / SUBSCRIBE_TRACKS of ``prefix``: allowed when some namespace under
        it may be subscribed; the answers are then filtered by :meth:`may_subscribe`."""
        return self.may_subscribe(prefix)


class Anonymous(Authorizer):
    def may_publish(self, namespace: m.TrackNamespace) -> bool:
        return True

    def may_subscribe(self, namespace: m.TrackNamespace) -> bool:
        return True


def authorization_token(value: int | bytes | None, vi64: bool) -> bytes | None:
    """The Token Value of an AUTHORIZATION TOKEN parameter (draft-16 s9.2.1.1): Alias Type, then
    for USE_VALUE (0x3) a Token Type and the value, for REGISTER (0x1) an alias first. We keep no
    alias cache (MAX_AUTH_TOKEN_CACHE_SIZE 0), so USE_ALIAS and DELETE carry no usable token."""
    if not isinstance(value, bytes):
        return None
    r = Reader(value, vi64=vi64)
    try:
        alias_type = r.varint()
        if alias_type == 0x1:
            r.varint()  # the alias
        elif alias_type != 0x3:
            return None
        r.varint()  # Token Type: 0 is "negotiated out of band", as ours are
        return r.rest()
    except Truncated:
        return None
