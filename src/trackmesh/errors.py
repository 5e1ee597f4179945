"""Protocol error classes shared by every layer (rtp, codecs, sdp, the transports).

The split follows h11: a :class:`ProtocolError` is the remote peer's fault (its input is
dropped and counted, never allowed to crash a worker); a :class:`LocalProtocolError` is our
own misuse of an API and signals a bug. Imports nothing from trackmesh.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Input from the network that cannot be accepted."""


class LocalProtocolError(RuntimeError):
    """An API used in a way its state does not allow (a bug on our side)."""
