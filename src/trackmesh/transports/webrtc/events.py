"""What a :class:`~trackmesh.transports.webrtc.peer.WebRtcPeer` tells its driver, and the
small shared pieces its parts use: the mode, the worker-wide clock cell and the outbox type.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from trackmesh.net import Address

__all__ = [
    "Connected",
    "Disconnected",
    "IceSelected",
    "Outbox",
    "PeerEvent",
    "PeerMode",
    "SharedClock",
]

#: Datagrams to send, appended by every peer of a worker; the driver drains it after each input.
Outbox = deque[tuple[bytes, Address]]


class PeerMode(enum.Enum):
    """WHIP: the client only publishes; WHEP: it only views (and auto-follows the room);
    SDK: the SDK transport decides what each m-line carries."""

    WHIP = "whip"
    WHEP = "whep"
    SDK = "sdk"


class SharedClock:
    """The worker's current ``now``, shared by all its peers.

    A viewer's sink runs inside the *publisher's* ``handle_datagram`` (the core forwards
    synchronously), so it cannot see the ``now`` of its own last input; every peer entry point
    stores ``now`` here first, and sinks read it. One instance per worker.
    """

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, now: float) -> None:
        # Monotonic: a stale ``now`` from a late caller never moves time backwards.
        if now > self.now:
            self.now = now


@dataclass(frozen=True, slots=True)
class Connected:
    """ICE nominated a pair and DTLS-SRTP keys are in place: media flows."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection is over (consent expired, DTLS failed or closed, or ``close``).

    The driver closes the core endpoint (``worker.close_endpoint``) and unbinds the addresses.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class IceSelected:
    """ICE nominated ``addr`` (first time or a new one): bind it to this peer in the demux."""

    addr: Address


PeerEvent = Connected | Disconnected | IceSelected
