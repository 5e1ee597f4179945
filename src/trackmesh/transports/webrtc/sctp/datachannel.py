"""WebRTC data channels over one SCTP association (RFC 8831) with DCEP (RFC 8832).

:class:`DataChannelManager` wraps a :class:`~trackmesh.transports.webrtc.sctp.association.
SctpAssociation` and exposes the same driver surface (``handle_data``, ``poll_transmit``,
``handle_timeout``, ``next_deadline``, ``poll_event``), translating SCTP streams into channels:

- Announced channels: :meth:`~DataChannelManager.open` picks a free stream id of our parity
  (RFC 8832 s6: the DTLS client uses even ids, the server odd ones) and sends
  DATA_CHANNEL_OPEN (PPID 50); the peer answers DATA_CHANNEL_ACK. The channel may carry data
  right away; until the ACK arrives its messages are sent ordered (RFC 8832 s6).
- Negotiated channels (``negotiated_id``, e.g. id 0 label "data" in our SDK protocol) are
  agreed out of band: no DCEP, open as soon as the association is.
- Messages use PPID 51 (string) / 53 (binary), and 56 / 57 with a single zero byte for empty
  ones (RFC 8831 s6.6). Reliability maps to PR-SCTP (RFC 8831 s6.1, RFC 3758); a timed
  channel's lifetime counts from the ``now`` given to :meth:`~DataChannelManager.send`.
- Closing resets the outgoing stream (RFC 8831 s6.7, RFC 6525); the peer resets its own in
  response; the channel is closed once both directions are reset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.transports.webrtc.sctp.association import (
    AssociationClosed,
    AssociationEstablished,
    AssociationState,
    DataReceived,
    IncomingStreamsReset,
    OutgoingStreamsReset,
    SctpAssociation,
)

__all__ = [
    "ChannelClosed",
    "ChannelOpened",
    "DataChannel",
    "DataChannelError",
    "DataChannelEvent",
    "DataChannelManager",
    "DcepOpen",
    "Message",
    "parse_dcep_open",
]

PPID_DCEP: Final = 50
PPID_STRING: Final = 51
PPID_BINARY: Final = 53
PPID_STRING_EMPTY: Final = 56
PPID_BINARY_EMPTY: Final = 57

_DCEP_OPEN: Final = 0x03  # RFC 8832 s8.2.1
_DCEP_ACK: Final = 0x02
_OPEN_HEADER: Final = struct.Struct("!BBHIHH")
# Channel types (RFC 8832 s5.1); the 0x80 bit means unordered.
_RELIABLE: Final = 0x00
_PR_REXMIT: Final = 0x01
_PR_TIMED: Final = 0x02
_UNORDERED: Final = 0x80
_PRIORITY_NORMAL: Final = 256  # RFC 8831 s6.4 / W3C "low" is 128, "normal" 256

ChannelState = Literal["connecting", "open", "closing", "closed"]


class DataChannelError(RemoteProtocolError):
    """A malformed DCEP message or data for a channel that does not exist."""


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel_id: int
    label: str
    protocol: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message; ``data`` is UTF-8 when ``is_binary`` is False (see :attr:`text`)."""

    channel_id: int
    data: bytes
    is_binary: bool

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    channel_id: int


DataChannelEvent = ChannelOpened | Message | ChannelClosed | AssociationEstablished | AssociationClosed


@dataclass(frozen=True, slots=True)
class DcepOpen:
    """DATA_CHANNEL_OPEN (RFC 8832 s5.1)."""

    channel_type: int
    priority: int
    reliability: int
    label: str
    protocol: str

    def to_bytes(self) -> bytes:
        label, protocol = self.label.encode(), self.protocol.encode()
        head = _OPEN_HEADER.pack(
            _DCEP_OPEN, self.channel_type, self.priority, self.reliability, len(label), len(protocol)
        )
        return head + label + protocol


def parse_dcep_open(data: bytes) -> DcepOpen:
    if len(data) < _OPEN_HEADER.size or data[0] != _DCEP_OPEN:
        raise DataChannelError("not a DATA_CHANNEL_OPEN")
    _, ctype, prio, rel, llen, plen = _OPEN_HEADER.unpack_from(data)
    if len(data) != _OPEN_HEADER.size + llen + plen:
        raise DataChannelError("DATA_CHANNEL_OPEN length mismatch")
    if ctype & ~_UNORDERED not in (_RELIABLE, _PR_REXMIT, _PR_TIMED):
        raise DataChannelError(f"unknown channel type {ctype:#x}")
    try:
        label = data[_OPEN_HEADER.size : _OPEN_HEADER.size + llen].decode()
        protocol = data[_OPEN_HEADER.size + llen :].decode()
    except UnicodeDecodeError as exc:
        raise DataChannelError("DATA_CHANNEL_OPEN label/protocol is not UTF-8") from exc
    return DcepOpen(ctype, prio, rel, label, protocol)


@dataclass(slots=True)
class DataChannel:
    channel_id: int
    label: str
    protocol: str
    ordered: bool
    max_retransmits: int | None
    max_packet_life_time: int | None  # milliseconds, as in RFC 8832 / W3C
    negotiated: bool
    state: ChannelState = "connecting"
    acked: bool = True  # False while our DATA_CHANNEL_OPEN awaits its ACK
    incoming_reset: bool = False
    outgoing_reset: bool = False
    reset_requested: bool = False


class DataChannelManager:
    """Data channels on one SCTP association; ``dtls_role`` picks the stream-id parity."""

    def __init__(
        self,
        association: SctpAssociation,
        *,
        dtls_role: Literal["client", "server"],
        max_message_size: int | None = None,
    ) -> None:
        self.association = association
        #: The peer's a=max-message-size (RFC 8841 s6.1); larger messages are refused by :meth:`send`.
        #: None or 0 (the attribute's "any size") means no limit.
        self.max_message_size = max_message_size
        self.channels: dict[int, DataChannel] = {}
        self.dropped_messages = 0  # malformed DCEP, unknown channel, unknown PPID
        self._parity = 0 if dtls_role == "client" else 1
        self._events: list[DataChannelEvent] = []

    # --- channel API ------------------------------------------------------------------------

    def open(
        self,
        label: str,
        *,
        negotiated_id: int | None = None,
        ordered: bool = True,
        max_retransmits: int | None = None,
        max_packet_life_time: int | None = None,
        protocol: str = "",
    ) -> int:
        """Open a channel and return its id (the SCTP stream id)."""
        if max_retransmits is not None and max_packet_life_time is not None:
            raise LocalProtocolError("max_retransmits and max_packet_life_time are exclusive (RFC 8831 s6.1)")
        if len(label.encode()) > 0xFFFF or len(protocol.encode()) > 0xFFFF:
            raise LocalProtocolError("label or protocol too long")
        if negotiated_id is not None:
            if not 0 <= negotiated_id < 65535 or negotiated_id in self.channels:
                raise LocalProtocolError(f"channel id {negotiated_id} unavailable")
            cid = negotiated_id
        else:
            cid = self._free_id()
        ch = DataChannel(
            cid, label, protocol, ordered, max_retransmits, max_packet_life_time, negotiated_id is not None
        )
        self.channels[cid] = ch
        if ch.negotiated:
            if self.association.is_established:
                self._set_open(ch)
        else:
            ctype = _RELIABLE if max_retransmits is None and max_packet_life_time is None else 0
            reliability = 0
            if max_retransmits is not None:
                ctype, reliability = _PR_REXMIT, max_retransmits
            elif max_packet_life_time is not None:
                ctype, reliability = _PR_TIMED, max_packet_life_time
            if not ordered:
                ctype |= _UNORDERED
            ch.acked = False
            msg = DcepOpen(ctype, _PRIORITY_NORMAL, reliability, label, protocol).to_bytes()
            self.association.send(cid, PPID_DCEP, msg)  # RFC 8832 s6: reliable and ordered
        return cid

    def send(self, now: float, channel_id: int, data: bytes | str) -> None:
        """Queue one message at ``now`` (a channel's ``max_packet_life_time`` counts from it)."""
        ch = self.channels.get(channel_id)
        if ch is None or ch.state in ("closing", "closed"):
            raise LocalProtocolError(f"channel {channel_id} is not open")
        if isinstance(data, str):
            payload, ppid = data.encode(), PPID_STRING
            if not payload:
                payload, ppid = b"\x00", PPID_STRING_EMPTY  # RFC 8831 s6.6
        else:
            payload, ppid = bytes(data), PPID_BINARY
            if not payload:
                payload, ppid = b"\x00", PPID_BINARY_EMPTY
        if self.max_message_size and len(payload) > self.max_message_size:
            # RFC 8841 s6.1: never send more than the peer said it can take.
            raise LocalProtocolError(
                f"message of {len(payload)} bytes exceeds the peer's max-message-size {self.max_message_size}"
            )
        expires = None if ch.max_packet_life_time is None else now + ch.max_packet_life_time / 1000
        self.association.send(
            channel_id,
            ppid,
            payload,
            unordered=not ch.ordered and ch.acked,  # RFC 8832 s6: ordered until the ACK arrives
            max_retransmits=ch.max_retransmits,
            expires=expires,
        )

    def close(self, channel_id: int) -> None:
        """Close by resetting our outgoing stream (RFC 8831 s6.7)."""
        ch = self.channels.get(channel_id)
        if ch is None or ch.state in ("closing", "closed"):
            return
        ch.state = "closing"
        self._request_reset(ch)

    # --- driver surface ---------------------------------------------------------------------

    def connect(self, now: float) -> None:
        self.association.connect(now)
        self._pump()

    def handle_data(self, now: float, data: bytes) -> None:
        self.association.handle_data(now, data)
        self._pump()

    def handle_timeout(self, now: float) -> None:
        self.association.handle_timeout(now)
        self._pump()

    def poll_transmit(self, now: float) -> bytes | None:
        return self.association.poll_transmit(now)

    def next_deadline(self) -> float | None:
        return self.association.next_deadline()

    def poll_event(self) -> DataChannelEvent | None:
        self._pump()
        return self._events.pop(0) if self._events else None

    # --- internals --------------------------------------------------------------------------

    def _free_id(self) -> int:
        for cid in range(self._parity, 65535, 2):
            if cid not in self.channels:
                return cid
        raise LocalProtocolError("no free stream id")

    def _set_open(self, ch: DataChannel) -> None:
        if ch.state == "connecting":
            ch.state = "open"
            self._events.append(ChannelOpened(ch.channel_id, ch.label, ch.protocol))

    def _request_reset(self, ch: DataChannel) -> None:
        if not ch.reset_requested:
            ch.reset_requested = True
            if self.association.state is not AssociationState.CLOSED:
                self.association.reset_streams([ch.channel_id])

    def _pump(self) -> None:
        while (ev := self.association.poll_event()) is not None:
            if isinstance(ev, DataReceived):
                self._on_data(ev)
            elif isinstance(ev, IncomingStreamsReset):
                for cid in ev.stream_ids:
                    ch = self.channels.get(cid)
                    if ch is not None:
                        ch.incoming_reset = True
                        ch.state = "closing"
                        self._request_reset(ch)  # answer with our own reset (RFC 8831 s6.7)
                        self._maybe_closed(ch)
            elif isinstance(ev, OutgoingStreamsReset):
                for cid in ev.stream_ids:
                    ch = self.channels.get(cid)
                    if ch is not None:
                        ch.outgoing_reset = True
                        self._maybe_closed(ch)
            elif isinstance(ev, AssociationEstablished):
                self._events.append(ev)
                for ch in list(self.channels.values()):
                    if ch.negotiated:
                        self._set_open(ch)
            elif isinstance(ev, AssociationClosed):
                for ch in list(self.channels.values()):
                    ch.state = "closed"
                    self._events.append(ChannelClosed(ch.channel_id))
                self.channels.clear()
                self._events.append(ev)

    def _maybe_closed(self, ch: DataChannel) -> None:
        if ch.incoming_reset and ch.outgoing_reset:
            ch.state = "closed"
            del self.channels[ch.channel_id]
            self._events.append(ChannelClosed(ch.channel_id))

    def _on_data(self, ev: DataReceived) -> None:
        ch = self.channels.get(ev.stream_id)
        if ev.ppid == PPID_DCEP:
            self._on_dcep(ev.stream_id, ev.data, ch)
            return
        if ch is None or ch.state == "closed":
            self.dropped_messages += 1
            return
        if not ch.acked:
            ch.acked = True  # RFC 8832 s6: data from the peer implies it got our OPEN
            self._set_open(ch)
        if ev.ppid == PPID_STRING:
            self._events.append(Message(ch.channel_id, ev.data, False))
        elif ev.ppid == PPID_BINARY:
            self._events.append(Message(ch.channel_id, ev.data, True))
        elif ev.ppid == PPID_STRING_EMPTY:
            self._events.append(Message(ch.channel_id, b"", False))
        elif ev.ppid == PPID_BINARY_EMPTY:
            self._events.append(Message(ch.channel_id, b"", True))
        else:
            self.dropped_messages += 1  # deprecated partial PPIDs 52/54 and unknown ones

    def _on_dcep(self, stream_id: int, data: bytes, ch: DataChannel | None) -> None:
        if data == bytes([_DCEP_ACK]):
            if ch is not None and not ch.acked:
                ch.acked = True
                self._set_open(ch)
            else:
                self.dropped_messages += 1
            return
        try:
            msg = parse_dcep_open(data)
        except DataChannelError:
            self.dropped_messages += 1
            return
        if ch is not None:
            self.dropped_messages += 1  # the id is taken (RFC 8832 s6: a collision is an error)
            return
        ctype = msg.channel_type
        base = ctype & ~_UNORDERED
        ch = DataChannel(
            stream_id,
            msg.label,
            msg.protocol,
            not ctype & _UNORDERED,
            msg.reliability if base == _PR_REXMIT else None,
            msg.reliability if base == _PR_TIMED else None,
            False,
        )
        self.channels[stream_id] = ch
        self.association.send(stream_id, PPID_DCEP, bytes([_DCEP_ACK]))  # RFC 8832 s6
        self._set_open(ch)
