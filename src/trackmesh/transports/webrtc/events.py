"""What a :class:`~trackmesh.transports.webrtc.peer.WebRtcPeer` tells its driver, and the
small shared piece its parts use: the outbox type.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from trackmesh.net import Address

__all__ = [
    "ApplicationData",
    "Connected",
    "Disconnected",
    "IceSelected",
    "Outbox",
    "PeerEvent",
]

#: Datagrams to send, appended by every peer of a worker; the driver drains it after each input.
Outbox = deque[tuple[bytes, Address]]


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


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """One DTLS application record from the client (an SCTP packet, RFC 8261 s3): for the layer
    above that runs data channels on this connection (the SDK session), drained like any other
    event after the input that carried it. Nothing acts on it inside the peer."""

    data: bytes


PeerEvent = Connected | Disconnected | IceSelected | ApplicationData
