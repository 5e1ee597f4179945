"""Sans-IO SCTP association over DTLS for WebRTC data channels (RFC 8261, RFC 4960, RFC 3758,
RFC 6525).

One :class:`SctpAssociation` is one SCTP association carried in DTLS application data
(RFC 8261 s5: one SCTP packet per DTLS record, so packets never exceed ``max_packet_size``,
which the driver sets from ``DtlsEndpoint.max_application_data``). The driver feeds records to
:meth:`~SctpAssociation.handle_data`, passes whatever :meth:`~SctpAssociation.poll_transmit`
returns to ``send_application_data``, calls :meth:`~SctpAssociation.handle_timeout` at
:meth:`~SctpAssociation.next_deadline` and drains :meth:`~SctpAssociation.poll_event`.

Either side may call :meth:`~SctpAssociation.connect` (our SDK has the server initiate so an
ICE restart onto another node works; browsers initiate too); both may, and the INIT collision
is resolved per RFC 4960 s5.2.1/s5.2.4. A side that never calls it answers INITs with a
stateless, HMAC-signed state cookie (s5.1.3).

Layout: this module is the state machine (handshake, timers, shutdown, stream reset);
:mod:`.sender` holds the sending half (fragmentation, SACK processing, congestion
control, RTO, PR-SCTP), :mod:`.receiver` the receiving half (TSN tracking, SACK
generation, reassembly, ordered delivery) and :mod:`.packet` the wire format.

Time is an argument: every call whose outcome depends on it (``connect``, ``handle_data``,
``handle_timeout``, ``poll_transmit``, ``shutdown``) takes ``now``, and the association keeps
no clock of its own; ``send`` takes an absolute ``expires`` instead of a lifetime.

Deviations and simplifications, deliberate for WebRTC:

- Timer defaults follow common WebRTC stacks rather than RFC 4960 s15 (RTO.Initial 1 s,
  RTO.Min 0.2 s, RTO.Max 10 s): data channels are interactive.
- Out-of-the-blue packets (s8.4) and an INIT or new-tag COOKIE ECHO on an established
  association (s5.2.2, s5.2.4 action A, peer restart) are dropped and counted, not answered.
- One outgoing FIFO: a large message delays later messages on other streams (no I-DATA,
  RFC 8260, and no stream scheduler).
- Delayed SACKs are not piggybacked on outgoing DATA.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from trackmesh.errors import LocalProtocolError
from trackmesh.transports.webrtc.sctp.packet import (
    CHUNK_FORWARD_TSN,
    CHUNK_RECONFIG,
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    OutgoingResetRequest,
    ReconfigChunk,
    ReconfigResponse,
    SackChunk,
    SctpPacketError,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
    build_packet,
    parse_packet,
    serialize_chunk,
)
from trackmesh.transports.webrtc.sctp.receiver import InboundQueue, OutOfResource, tsn_gt
from trackmesh.transports.webrtc.sctp.sender import OutboundQueue, SctpStats

__all__ = [
    "AssociationClosed",
    "AssociationEstablished",
    "AssociationState",
    "DataReceived",
    "IncomingStreamsReset",
    "OutgoingStreamsReset",
    "SctpAssociation",
    "SctpEvent",
    "SctpStats",
]

DEFAULT_PORT: Final = 5000  # RFC 8841 s5 default sctp-port
DEFAULT_MAX_PACKET: Final = 1163  # DtlsEndpoint.max_application_data for a 1200-byte GCM datagram
_COMMON_HEADER: Final = 12
_MAX_STREAMS: Final = 65535
_COOKIE_LIFE: Final = 60.0  # RFC 4960 s15 Valid.Cookie.Life
_SACK_DELAY: Final = 0.2  # RFC 4960 s6.2: at most 200 ms (s15 suggests 200 ms)
_COOKIE: Final = struct.Struct("!dIIIIIHHB")
_COOKIE_MAC: Final = 16
_RESULT_PERFORMED: Final = 1  # RFC 6525 s4.4
_RESULT_BAD_SEQ: Final = 5
_RESULT_IN_PROGRESS: Final = 6
_CAUSE_USER_ABORT: Final = 12  # RFC 4960 s3.3.10.12


class AssociationState(enum.Enum):
    """RFC 4960 s4 states."""

    CLOSED = "closed"
    COOKIE_WAIT = "cookie-wait"
    COOKIE_ECHOED = "cookie-echoed"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"


@dataclass(frozen=True, slots=True)
class AssociationEstablished:
    pass


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    ppid: int
    data: bytes
    unordered: bool


@dataclass(frozen=True, slots=True)
class IncomingStreamsReset:
    """The peer reset these outgoing streams of its own (RFC 6525 s5.2.2); their SSNs restart."""

    stream_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OutgoingStreamsReset:
    """Our reset request for these streams completed (``success``) or was refused."""

    stream_ids: tuple[int, ...]
    success: bool = True


@dataclass(frozen=True, slots=True)
class AssociationClosed:
    """The association ended; ``reason`` is None after a graceful shutdown (RFC 4960 s9.2)."""

    reason: str | None


SctpEvent = AssociationEstablished | DataReceived | IncomingStreamsReset | OutgoingStreamsReset | AssociationClosed


class SctpAssociation:
    """One SCTP association (RFC 4960) carried over DTLS (RFC 8261)."""

    def __init__(
        self,
        *,
        cookie_key: bytes,
        local_port: int = DEFAULT_PORT,
        remote_port: int = DEFAULT_PORT,
        max_packet_size: int = DEFAULT_MAX_PACKET,
        receive_window: int = 1 << 20,
        rto_initial: float = 1.0,
        rto_min: float = 0.2,
        rto_max: float = 10.0,
        max_retransmissions: int = 10,  # RFC 4960 s15 Association.Max.Retrans
        max_init_retransmits: int = 8,  # RFC 4960 s15 Max.Init.Retransmits
        heartbeat_interval: float | None = 30.0,  # RFC 4960 s15 HB.interval
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(cookie_key) < 16:
            raise LocalProtocolError("cookie_key must be at least 16 bytes")
        self.state = AssociationState.CLOSED
        self.stats = SctpStats()
        self._key = cookie_key
        self._local_port = local_port
        self._remote_port = remote_port
        self._window = receive_window
        self._max_retrans = max_retransmissions
        self._max_init_retrans = max_init_retransmits
        self._hb_interval = heartbeat_interval
        self._random = random_bytes
        self._local_tag = self._random_u32(nonzero=True)
        self._local_itsn = self._random_u32()
        self._peer_tag = 0
        self._peer_itsn = 0
        self._terminated = False
        if max_packet_size < 256:
            raise LocalProtocolError("max_packet_size must be at least 256")
        self._max_packet = max_packet_size
        # peer capabilities (from INIT / INIT ACK / cookie)
        self._peer_reconfig = False
        self._out_streams = _MAX_STREAMS
        self._in_streams = _MAX_STREAMS
        self._inbound = InboundQueue(0, receive_window)
        self._out = OutboundQueue(
            initial_tsn=self._local_itsn, max_packet=max_packet_size, rto_initial=rto_initial,
            rto_min=rto_min, rto_max=rto_max, stats=self.stats,
        )  # fmt: skip
        self._errors = 0
        # outputs
        self._raw_out: deque[bytes] = deque()  # whole packets (INIT, INIT ACK, ABORT, ...)
        self._control: deque[Chunk] = deque()  # chunks bundled with the local tag
        self._events: deque[SctpEvent] = deque()
        self._sack_now = False
        self._sack_deadline: float | None = None
        self._data_packets_unacked = 0
        # timers
        self._t1: float | None = None  # T1-init / T1-cookie
        self._t1_count = 0
        self._t1_chunk: bytes = b""
        self._t2: float | None = None
        self._t2_count = 0
        self._hb_deadline: float | None = None
        self._hb_outstanding = False
        # stream reset (RFC 6525)
        self._reset_queue: list[int] = []
        self._reset_inflight: OutgoingResetRequest | None = None
        self._reset_deadline: float | None = None
        self._reconfig_seq = self._local_itsn
        self._peer_reconfig_seq = 0
        self._last_reconfig_response: ReconfigResponse | None = None
        self._resetting: set[int] = set()

    def _random_u32(self, *, nonzero: bool = False) -> int:
        while True:
            value = int.from_bytes(self._random(4), "big")
            if value or not nonzero:  # RFC 4960 s5.3.1: the tag MUST NOT be 0
                return value

    # --- public API -----------------------------------------------------------------------

    @property
    def max_packet_size(self) -> int:
        return self._max_packet

    @max_packet_size.setter
    def max_packet_size(self, value: int) -> None:
        if value < 256:
            raise LocalProtocolError("max_packet_size must be at least 256")
        self._max_packet = value
        self._out.set_max_packet(value)

    @property
    def is_established(self) -> bool:
        return self.state is AssociationState.ESTABLISHED

    @property
    def buffered_amount(self) -> int:
        """User bytes queued or in flight (not yet cumulatively acknowledged)."""
        return self._out.buffered_amount

    def connect(self, now: float) -> None:
        """Start the association as initiator: send INIT (RFC 4960 s5.1 step A)."""
        if self.state is not AssociationState.CLOSED or self._terminated:
            return
        init = InitChunk(
            self._local_tag, self._window, _MAX_STREAMS, _MAX_STREAMS, self._local_itsn,
            True, (CHUNK_FORWARD_TSN, CHUNK_RECONFIG),
        )  # fmt: skip
        self._t1_chunk = serialize_chunk(init)
        self._raw_out.append(build_packet(self._local_port, self._remote_port, 0, [self._t1_chunk]))
        self.state = AssociationState.COOKIE_WAIT
        self._t1, self._t1_count = now + self._out.rto, 0

    def send(
        self,
        stream_id: int,
        ppid: int,
        data: bytes,
        *,
        unordered: bool = False,
        max_retransmits: int | None = None,
        expires: float | None = None,
    ) -> None:
        """Queue one message; fragmented to fit ``max_packet_size`` (RFC 4960 s6.9).

        ``max_retransmits`` or ``expires`` (a time on the clock of the ``now`` arguments: the
        sender's "now" plus the message's lifetime) make it partially reliable (RFC 3758 s3.1):
        it is abandoned once that time has passed. Queuing reads no clock, so ``send`` takes no
        ``now``. Allowed before the association is established (queued until then).
        """
        if self._terminated or self.state in (
            AssociationState.SHUTDOWN_PENDING, AssociationState.SHUTDOWN_SENT,
            AssociationState.SHUTDOWN_RECEIVED, AssociationState.SHUTDOWN_ACK_SENT,
        ):  # fmt: skip
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        if not 0 <= stream_id < self._out_streams:
            raise LocalProtocolError(f"stream {stream_id} out of range")
        if stream_id in self._resetting:
            raise LocalProtocolError(f"stream {stream_id} is being reset")
        if not data:
            raise LocalProtocolError("SCTP cannot carry an empty message (RFC 4960 s3.3.1)")
        self._out.enqueue(stream_id, ppid, data, unordered, max_retransmits, expires)

    def reset_streams(self, stream_ids: list[int] | tuple[int, ...]) -> None:
        """Reset our outgoing streams after their queued data (RFC 6525 s5.1.2); closes channels."""
        for sid in stream_ids:
            if sid not in self._resetting:
                self._resetting.add(sid)
                self._reset_queue.append(sid)

    def shutdown(self, now: float) -> None:
        """Graceful close once all data is acknowledged (RFC 4960 s9.2); T2 runs from ``now``."""
        if self.state is AssociationState.ESTABLISHED:
            self.state = AssociationState.SHUTDOWN_PENDING
            self._check_shutdown(now)
        elif self.state in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
            self._close(None, send_abort=self.state is not AssociationState.CLOSED)

    def abort(self, reason: str = "") -> None:
        """Send ABORT with a User-Initiated Abort cause (RFC 4960 s9.1) and close."""
        if self._terminated:
            return
        self._close(f"aborted locally: {reason}" if reason else "aborted locally", send_abort=True, cause=reason)

    def handle_data(self, now: float, data: bytes) -> None:
        """One DTLS application-data record = one SCTP packet (RFC 8261 s5)."""
        if self._terminated:
            return
        self.stats.packets_received += 1
        try:
            packet = parse_packet(data)
        except SctpPacketError:
            self.stats.packets_dropped += 1
            return
        if packet.destination_port != self._local_port or packet.source_port != self._remote_port:
            self.stats.packets_dropped += 1
            return
        if not self._accept_tag(packet.verification_tag, packet.chunks):
            self.stats.packets_dropped += 1
            return
        had_data = False
        for chunk in packet.chunks:
            if self._terminated:
                break
            if isinstance(chunk, DataChunk):
                had_data = True
                self._on_data(chunk)
            elif isinstance(chunk, UnknownChunk):
                if not chunk.type & 0x80:  # RFC 4960 s3.2: upper bits 0x: stop processing
                    break
            else:
                self._dispatch(now, chunk)
        if had_data:
            self._after_data(now)
        self._drain_inbound()

    def poll_transmit(self, now: float) -> bytes | None:
        """The next SCTP packet to send at ``now`` (as one DTLS record), or None."""
        if self._raw_out:
            self.stats.packets_sent += 1
            return self._raw_out.popleft()
        if self._terminated or self.state in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT):
            return None
        parts: list[bytes] = []
        size = _COMMON_HEADER
        if self._sack_now or (self._sack_deadline is not None and self._sack_deadline <= now):
            parts.append(serialize_chunk(self._inbound.sack()))
            size += len(parts[-1])
            self._sack_now, self._sack_deadline, self._data_packets_unacked = False, None, 0
        size = self._add_control(parts, size)
        if self.state is not AssociationState.COOKIE_ECHOED:
            size = self._add_reconfig_and_forward_tsn(now, parts, size)
            allow_new = self.state in (
                AssociationState.ESTABLISHED, AssociationState.SHUTDOWN_PENDING, AssociationState.SHUTDOWN_RECEIVED,
            )  # fmt: skip
            self._out.add_data(parts, size, now, allow_new)
        if not parts:
            return None
        self.stats.packets_sent += 1
        return build_packet(self._local_port, self._remote_port, self._peer_tag, parts)

    def poll_event(self) -> SctpEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        if self._terminated:
            return None
        times = [self._t1, self._t2, self._out.t3, self._sack_deadline, self._reset_deadline, self._hb_deadline]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def handle_timeout(self, now: float) -> None:
        if self._terminated:
            return
        if self._t1 is not None and now >= self._t1:
            self._on_t1(now)
        if self._out.t3 is not None and now >= self._out.t3:
            self._errors += 1
            if self._errors > self._max_retrans:
                self._close("peer unreachable (retransmission limit)", send_abort=True)
                return
            self._out.on_t3(now)
        if self._t2 is not None and now >= self._t2:
            self._on_t2(now)
        if self._reset_deadline is not None and now >= self._reset_deadline:
            self._reset_deadline = None
            if self._reset_inflight is not None:
                self._control.append(ReconfigChunk((self._reset_inflight,)))
                self._reset_deadline = now + self._out.rto
        if self._hb_deadline is not None and now >= self._hb_deadline:
            self._on_heartbeat_timer(now)
        # the delayed SACK itself goes out in poll_transmit once its deadline has passed

    # --- receive path ---------------------------------------------------------------------

    def _accept_tag(self, vtag: int, chunks: tuple[Chunk, ...]) -> bool:
        """Verification tag rules (RFC 4960 s8.5, s8.5.1)."""
        if not chunks:
            return False
        first = chunks[0]
        if isinstance(first, InitChunk):
            return vtag == 0 and len(chunks) == 1  # s6.10: INIT is never bundled
        if isinstance(first, AbortChunk | ShutdownCompleteChunk):
            expected: int = self._peer_tag if first.t_bit else self._local_tag
            return self._peer_tag != 0 and vtag == expected
        if isinstance(first, CookieEchoChunk):
            return vtag == self._local_tag  # the cookie itself is checked in _on_cookie_echo
        return vtag == self._local_tag and self.state is not AssociationState.CLOSED

    def _dispatch(self, now: float, chunk: Chunk) -> None:
        if isinstance(chunk, SackChunk):
            if self._peer_tag and self.state not in (AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
                self._on_sack(now, chunk.cumulative_tsn, chunk.a_rwnd, chunk.gap_blocks)
        elif isinstance(chunk, InitChunk):
            self._on_init(now, chunk)
        elif isinstance(chunk, InitAckChunk):
            self._on_init_ack(now, chunk)
        elif isinstance(chunk, CookieEchoChunk):
            self._on_cookie_echo(now, chunk)
        elif isinstance(chunk, CookieAckChunk):
            if self.state is AssociationState.COOKIE_ECHOED:
                self._t1 = None
                self._established(now)
        elif isinstance(chunk, HeartbeatChunk):
            self._control.append(HeartbeatAckChunk(chunk.info))  # s8.3
        elif isinstance(chunk, HeartbeatAckChunk):
            self._on_heartbeat_ack(now, chunk.info)
        elif isinstance(chunk, AbortChunk):
            self._close(f"aborted by peer{_describe_causes(chunk.causes)}", send_abort=False)
        elif isinstance(chunk, ShutdownChunk):
            self._on_shutdown(now, chunk)
        elif isinstance(chunk, ShutdownAckChunk):
            if self.state in (AssociationState.SHUTDOWN_SENT, AssociationState.SHUTDOWN_ACK_SENT):
                pkt = build_packet(self._local_port, self._remote_port, self._peer_tag, (ShutdownCompleteChunk(),))
                self._raw_out.append(pkt)
                self._close(None, send_abort=False)
        elif isinstance(chunk, ShutdownCompleteChunk):
            if self.state is AssociationState.SHUTDOWN_ACK_SENT:
                self._close(None, send_abort=False)
        elif isinstance(chunk, ForwardTsnChunk):
            if self._peer_tag:
                self._inbound.forward_tsn(chunk.new_cumulative_tsn, chunk.streams)
                self._sack_now = True  # RFC 3758 s3.6
        elif isinstance(chunk, ReconfigChunk):
            self._on_reconfig(now, chunk)
        elif isinstance(chunk, ErrorChunk):
            pass  # informational (e.g. stale cookie, s3.3.10); retransmission timers recover

    def _on_sack(self, now: float, cum: int, a_rwnd: int | None, gaps: tuple[tuple[int, int], ...]) -> None:
        """A SACK, or a SHUTDOWN's cumulative TSN ack (``a_rwnd`` None, s9.2)."""
        if self._out.on_sack(now, cum, a_rwnd, gaps):
            self._errors = 0  # s8.1: the error counter resets when data is acknowledged
        self._check_shutdown(now)

    def _on_data(self, chunk: DataChunk) -> None:
        if self.state in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
            self.stats.data_chunks_dropped += 1
            return
        if chunk.stream_id >= self._in_streams:
            self.stats.data_chunks_dropped += 1  # s6.5: invalid stream identifier
            return
        try:
            accepted = self._inbound.receive(chunk)
        except OutOfResource as exc:
            self.stats.data_chunks_dropped += 1
            self._close(f"peer exceeded receive limits: {exc}", send_abort=True, cause="out of resource")
            return
        if not accepted:
            self.stats.data_chunks_dropped += 1
            self._sack_now = True  # s6.2: report duplicates at once

    def _after_data(self, now: float) -> None:
        # RFC 4960 s6.2: SACK at least every second packet and within 200 ms; s6.7: at once on gaps.
        self._data_packets_unacked += 1
        if self._data_packets_unacked >= 2 or self._inbound.has_gaps or self.state is not AssociationState.ESTABLISHED:
            self._sack_now = True
        elif self._sack_deadline is None:
            self._sack_deadline = now + _SACK_DELAY

    def _drain_inbound(self) -> None:
        inbound = self._inbound
        while inbound.delivered:
            m = inbound.delivered.popleft()
            self._events.append(DataReceived(m.stream_id, m.ppid, m.data, m.unordered))
        while inbound.resets_performed:
            seq, streams = inbound.resets_performed.pop(0)
            self._events.append(IncomingStreamsReset(streams))
            resp = ReconfigResponse(seq, _RESULT_PERFORMED)
            self._last_reconfig_response = resp
            self._control.append(ReconfigChunk((resp,)))

    # --- handshake (RFC 4960 s5) ----------------------------------------------------------

    def _on_init(self, now: float, init: InitChunk) -> None:
        if self.state not in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
            self.stats.packets_dropped += 1  # s5.2.2 restart: not supported
            return
        # s5.1 step B (stateless) and s5.2.1 (collision): always our one tag and initial TSN.
        exts = set(init.supported_extensions)
        flags = int(init.forward_tsn_supported or CHUNK_FORWARD_TSN in exts) | (CHUNK_RECONFIG in exts) << 1
        body = _COOKIE.pack(
            now, self._local_tag, init.initiate_tag, self._local_itsn, init.initial_tsn, init.a_rwnd,
            init.outbound_streams, init.inbound_streams, flags,
        )  # fmt: skip
        cookie = body + hmac.new(self._key, body, hashlib.sha256).digest()[:_COOKIE_MAC]
        ack = InitAckChunk(
            self._local_tag, self._window, _MAX_STREAMS, _MAX_STREAMS, self._local_itsn, cookie,
            True, (CHUNK_FORWARD_TSN, CHUNK_RECONFIG),
        )  # fmt: skip
        self._raw_out.append(build_packet(self._local_port, self._remote_port, init.initiate_tag, (ack,)))

    def _on_init_ack(self, now: float, ack: InitAckChunk) -> None:
        if self.state is not AssociationState.COOKIE_WAIT:
            return  # s5.2.3: discard
        exts = set(ack.supported_extensions)
        self._setup_peer(
            ack.initiate_tag, ack.initial_tsn, ack.a_rwnd, ack.outbound_streams, ack.inbound_streams,
            ack.forward_tsn_supported or CHUNK_FORWARD_TSN in exts, CHUNK_RECONFIG in exts,
        )  # fmt: skip
        self._t1_chunk = serialize_chunk(CookieEchoChunk(ack.state_cookie))
        self._control.append(CookieEchoChunk(ack.state_cookie))
        self.state = AssociationState.COOKIE_ECHOED
        self._t1, self._t1_count = now + self._out.rto, 0

    def _on_cookie_echo(self, now: float, echo: CookieEchoChunk) -> None:
        cookie = echo.cookie
        body, mac = cookie[: _COOKIE.size], cookie[_COOKIE.size :]
        expected = hmac.new(self._key, body, hashlib.sha256).digest()[:_COOKIE_MAC]
        if len(cookie) != _COOKIE.size + _COOKIE_MAC or not hmac.compare_digest(mac, expected):
            self.stats.packets_dropped += 1  # s5.1.5 step 2
            return
        ts, local_tag, peer_tag, _local_itsn, peer_itsn, a_rwnd, os_, mis, flags = _COOKIE.unpack(body)
        if local_tag != self._local_tag or not 0 <= now - ts <= _COOKIE_LIFE:
            self.stats.packets_dropped += 1  # s5.1.5 step 3: stale (we do not send the ERROR)
            return
        if self.state in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
            # s5.1.5 (new association) or s5.2.4 actions B/D (collision): adopt the cookie's peer.
            if self.state is not AssociationState.COOKIE_ECHOED or peer_itsn != self._peer_itsn:
                self._setup_peer(peer_tag, peer_itsn, a_rwnd, os_, mis, bool(flags & 1), bool(flags & 2))
            self._peer_tag = peer_tag
            self._t1 = None
            self._control.appendleft(CookieAckChunk())
            self._established(now)
        elif peer_tag == self._peer_tag:
            self._control.appendleft(CookieAckChunk())  # s5.2.4 action D: our COOKIE ACK was lost
        else:
            self.stats.packets_dropped += 1  # s5.2.4 action A (peer restart): not supported

    def _setup_peer(self, tag: int, itsn: int, a_rwnd: int, os_: int, mis: int, fwd: bool, reconfig: bool) -> None:
        self._peer_tag = tag
        self._peer_itsn = itsn
        self._out_streams = min(_MAX_STREAMS, mis)
        self._in_streams = min(_MAX_STREAMS, os_)
        self._peer_reconfig = reconfig
        self._peer_reconfig_seq = itsn  # RFC 6525 s5.1.1: starts at the initial TSN
        self._inbound = InboundQueue(itsn, self._window)
        self._out.setup_peer(a_rwnd, fwd)

    def _established(self, now: float) -> None:
        self.state = AssociationState.ESTABLISHED
        self._events.append(AssociationEstablished())
        if self._hb_interval is not None:
            self._hb_deadline = now + self._hb_interval

    def _on_t1(self, now: float) -> None:
        self._t1_count += 1
        if self._t1_count > self._max_init_retrans:
            self._close("association setup timed out", send_abort=False)
            return
        self._out.backoff()  # s6.3.3 rule E2 applies to T1 too (s5.1)
        if self.state is AssociationState.COOKIE_WAIT:
            self._raw_out.append(build_packet(self._local_port, self._remote_port, 0, [self._t1_chunk]))
        elif self.state is AssociationState.COOKIE_ECHOED:
            self._raw_out.append(build_packet(self._local_port, self._remote_port, self._peer_tag, [self._t1_chunk]))
        self._t1 = now + self._out.rto

    # --- shutdown and abort (RFC 4960 s9) -------------------------------------------------

    def _on_shutdown(self, now: float, chunk: ShutdownChunk) -> None:
        if self.state in (AssociationState.ESTABLISHED, AssociationState.SHUTDOWN_PENDING):
            self._on_sack(now, chunk.cumulative_tsn, None, ())
            self.state = AssociationState.SHUTDOWN_RECEIVED
            self._check_shutdown(now)
        elif self.state is AssociationState.SHUTDOWN_SENT:
            self.state = AssociationState.SHUTDOWN_ACK_SENT  # s9.2 simultaneous shutdown
            self._control.append(ShutdownAckChunk())
            self._t2, self._t2_count = now + self._out.rto, 0

    def _check_shutdown(self, now: float) -> None:
        if not self._out.idle:
            return
        if self.state is AssociationState.SHUTDOWN_PENDING:
            self.state = AssociationState.SHUTDOWN_SENT
            self._control.append(ShutdownChunk(self._inbound.cumulative_tsn))
        elif self.state is AssociationState.SHUTDOWN_RECEIVED:
            self.state = AssociationState.SHUTDOWN_ACK_SENT
            self._control.append(ShutdownAckChunk())
        else:
            return
        self._t2, self._t2_count = now + self._out.rto, 0

    def _on_t2(self, now: float) -> None:
        self._t2_count += 1
        if self._t2_count > self._max_retrans:
            self._close("shutdown timed out", send_abort=True)
            return
        self._out.backoff()
        if self.state is AssociationState.SHUTDOWN_SENT:
            self._control.append(ShutdownChunk(self._inbound.cumulative_tsn))
        elif self.state is AssociationState.SHUTDOWN_ACK_SENT:
            self._control.append(ShutdownAckChunk())
        self._t2 = now + self._out.rto

    def _close(self, reason: str | None, *, send_abort: bool, cause: str = "") -> None:
        if send_abort and self._peer_tag:
            causes = b""
            if cause or reason:
                info = cause.encode()[:256]
                causes = struct.pack("!HH", _CAUSE_USER_ABORT, 4 + len(info)) + info
                causes += b"\x00" * (-len(causes) % 4)
            pkt = build_packet(self._local_port, self._remote_port, self._peer_tag, (AbortChunk(causes),))
            self._raw_out.append(pkt)
        was_open = self.state is not AssociationState.CLOSED or self._peer_tag != 0
        self.state = AssociationState.CLOSED
        self._terminated = True
        self._control.clear()
        self._t1 = self._t2 = self._out.t3 = self._sack_deadline = self._reset_deadline = self._hb_deadline = None
        if was_open or reason is not None:
            self._events.append(AssociationClosed(reason))

    # --- heartbeat (RFC 4960 s8.3) --------------------------------------------------------

    def _on_heartbeat_timer(self, now: float) -> None:
        assert self._hb_interval is not None
        if self._hb_outstanding:
            self._errors += 1
            if self._errors > self._max_retrans:
                self._close("peer unreachable (heartbeat)", send_abort=True)
                return
        if self.state is AssociationState.ESTABLISHED and self._out.idle:
            self._control.append(HeartbeatChunk(struct.pack("!d", now) + self._random(8)))
            self._hb_outstanding = True
        self._hb_deadline = now + self._hb_interval + self._out.rto

    def _on_heartbeat_ack(self, now: float, info: bytes) -> None:
        self._hb_outstanding = False
        self._errors = 0
        if len(info) == 16:
            sent = struct.unpack_from("!d", info)[0]
            if 0 <= now - sent < 120:
                self._out.rtt_sample(now - sent)

    # --- stream reset (RFC 6525) ----------------------------------------------------------

    def _on_reconfig(self, now: float, chunk: ReconfigChunk) -> None:
        if self.state in (AssociationState.CLOSED, AssociationState.COOKIE_WAIT, AssociationState.COOKIE_ECHOED):
            return
        for param in chunk.params:
            if isinstance(param, OutgoingResetRequest):
                self._on_reset_request(param)
            elif isinstance(param, ReconfigResponse):
                self._on_reconfig_response(now, param)

    def _on_reset_request(self, req: OutgoingResetRequest) -> None:
        # RFC 6525 s5.2.2; retransmitted requests get the same answer again (s5.2.1).
        if req.request_seq == self._peer_reconfig_seq:
            self._peer_reconfig_seq = (self._peer_reconfig_seq + 1) & 0xFFFFFFFF
            if not self._inbound.request_reset(req.request_seq, req.last_tsn, req.streams):
                self._control.append(ReconfigChunk((ReconfigResponse(req.request_seq, _RESULT_IN_PROGRESS),)))
        elif req.request_seq == (self._peer_reconfig_seq - 1) & 0xFFFFFFFF:
            if self._inbound.reset_pending(req.request_seq):
                resp = ReconfigResponse(req.request_seq, _RESULT_IN_PROGRESS)
            else:
                resp = ReconfigResponse(req.request_seq, _RESULT_PERFORMED)
            self._control.append(ReconfigChunk((resp,)))
        else:
            self._control.append(ReconfigChunk((ReconfigResponse(req.request_seq, _RESULT_BAD_SEQ),)))

    def _on_reconfig_response(self, now: float, resp: ReconfigResponse) -> None:
        req = self._reset_inflight
        if req is None or resp.response_seq != req.request_seq:
            return
        if resp.result == _RESULT_IN_PROGRESS:
            self._reset_deadline = now + self._out.rto  # ask again later
            return
        self._reset_inflight = None
        self._reset_deadline = None
        self._reconfig_seq = (self._reconfig_seq + 1) & 0xFFFFFFFF
        ok = resp.result in (0, _RESULT_PERFORMED)
        for sid in req.streams:
            self._resetting.discard(sid)
            if ok:
                self._out.out_ssn[sid] = 0
        self._events.append(OutgoingStreamsReset(req.streams, ok))

    def _add_control(self, parts: list[bytes], size: int) -> int:
        while self._control:
            raw = serialize_chunk(self._control[0])
            if _COMMON_HEADER + len(raw) > self._max_packet:
                self._control.popleft()  # e.g. a HEARTBEAT ACK echoing an oversized info: never
                self.stats.oversized_chunks_dropped += 1  # exceed the DTLS record limit (RFC 8261 s5)
                continue
            if size + len(raw) > self._max_packet:
                break
            self._control.popleft()
            parts.append(raw)
            size += len(raw)
        return size

    def _add_reconfig_and_forward_tsn(self, now: float, parts: list[bytes], size: int) -> int:
        if self._reset_inflight is None and self._reset_queue and self.state is AssociationState.ESTABLISHED:
            busy = self._out.busy_streams()
            ready = tuple(s for s in self._reset_queue if s not in busy)
            if ready:
                self._reset_queue = [s for s in self._reset_queue if s in busy]
                req = OutgoingResetRequest(
                    self._reconfig_seq, (self._peer_reconfig_seq - 1) & 0xFFFFFFFF,
                    (self._out.next_tsn - 1) & 0xFFFFFFFF, ready,
                )  # fmt: skip
                self._reset_inflight = req
                self._reset_deadline = now + self._out.rto
                self._control.append(ReconfigChunk((req,)))
        size = self._add_control(parts, size)  # the reset request queued above
        out = self._out
        if out.forward_tsn_due and tsn_gt(out.adv_ack, out.cum_ack):
            raw = serialize_chunk(out.forward_tsn_chunk())
            if not parts or size + len(raw) <= self._max_packet:
                parts.append(raw)
                size += len(raw)
                out.forward_tsn_due = False
        return size

    # --- send path (RFC 4960 s6.1, s7) ----------------------------------------------------


def _describe_causes(causes: bytes) -> str:
    if len(causes) < 4:
        return ""
    code, length = struct.unpack_from("!HH", causes)
    info = causes[4:length] if code == _CAUSE_USER_ABORT else b""
    text = info.decode("utf-8", "replace")
    return f" (cause {code}{': ' + text if text else ''})"
