"""Protocol error classes shared by every layer (rtp, codecs, sdp, the transports). Imports nothing from trackmesh.

The split follows h11: :class:`ProtocolError` is the common base; a :class:`RemoteProtocolError`
is the remote peer's fault (its input is dropped and counted, never allowed to crash a worker),
a :class:`LocalProtocolError` is our own misuse of an API and signals a bug. Input boundaries
(``WebRtcPeer.handle_datagram``) catch only :class:`RemoteProtocolError`: anything else raised
while handling a datagram (an ``IndexError`` or ``KeyError`` from our own code, a
:class:`LocalProtocolError`) is a bug and leaves the boundary, so tests see it.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """A protocol rule was broken; the subclass says by whom."""


class RemoteProtocolError(ProtocolError, ValueError):
    """Input from the network that cannot be accepted."""


class LocalProtocolError(ProtocolError, RuntimeError):
    """An API used in a way its state does not allow (a bug on our side)."""
