"""The sending half of an SCTP association (RFC 4960 s6.1-s6.3, s7; RFC 3758 s3.5).

:class:`OutboundQueue` fragments messages (s6.9), assigns TSNs and SSNs when a message's
first fragment is first sent (so a message that expires unsent costs no SSN), tracks
outstanding chunks, processes SACKs (gap blocks, fast retransmit on the third miss
indication, s7.2.4), runs congestion control (cwnd/ssthresh, s7.2) and the RTO estimator
(s6.3.1), and abandons partially reliable messages with FORWARD TSN (RFC 3758).
Used by :mod:`~trackmesh.transports.webrtc.sctp.association`, which owns the timers' effects
on the association (error counting, failure).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from trackmesh.transports.webrtc.sctp.packet import DataChunk, ForwardTsnChunk, serialize_chunk
from trackmesh.transports.webrtc.sctp.receiver import tsn_gt, tsn_lt

__all__ = ["OutboundQueue", "SctpStats"]

_DATA_HEADER: Final = 16
_ALPHA: Final = 0.125  # RFC 4960 s6.3.1 RTO.Alpha
_BETA: Final = 0.25  # RFC 4960 s6.3.1 RTO.Beta


@dataclass(slots=True)
class SctpStats:
    packets_received: int = 0
    packets_sent: int = 0
    packets_dropped: int = 0  # malformed, bad checksum, bad tag or port, out of the blue
    data_chunks_dropped: int = 0  # duplicates, no buffer, bad stream
    retransmissions: int = 0
    fast_retransmissions: int = 0
    t3_expirations: int = 0
    messages_abandoned: int = 0
    oversized_chunks_dropped: int = 0


@dataclass(slots=True, eq=False)
class _OutMessage:
    stream_id: int
    ppid: int
    unordered: bool
    max_retransmits: int | None
    expires: float | None
    ssn: int = 0
    abandoned: bool = False
    chunks: list[_OutChunk] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _OutChunk:
    msg: _OutMessage
    data: bytes
    beginning: bool
    ending: bool
    tsn: int = -1
    sent_count: int = 0
    sent_at: float = 0.0
    acked: bool = False  # by a gap block; cumulatively acked chunks leave the queue
    retransmit: bool = False
    in_flight: bool = False
    misses: int = 0
    fast_retransmitted: bool = False


class OutboundQueue:
    """Send-side state of one association."""

    def __init__(
        self, *, initial_tsn: int, max_packet: int, rto_initial: float, rto_min: float, rto_max: float, stats: SctpStats
    ) -> None:
        self.stats = stats
        self.next_tsn = initial_tsn
        self.cum_ack = (initial_tsn - 1) & 0xFFFFFFFF
        self.adv_ack = self.cum_ack  # RFC 3758 s3.5 Advanced.Peer.Ack.Point
        self.pending: deque[_OutChunk] = deque()
        self.outstanding: dict[int, _OutChunk] = {}
        self.out_ssn: dict[int, int] = {}
        self.flight = 0
        self.peer_rwnd = 0
        self.peer_forward_tsn = False
        self.cwnd = 0
        self._ssthresh = 0
        self._partial_acked = 0
        self._fast_recovery_exit: int | None = None
        self.forward_tsn_due = False
        self.rto = rto_initial
        self._rto_min, self._rto_max = rto_min, rto_max
        self.srtt: float | None = None
        self._rttvar = 0.0
        self.t3: float | None = None
        self.set_max_packet(max_packet)

    def set_max_packet(self, value: int) -> None:
        self._max_packet = value
        self._mtu = value
        self._fragment = (value - 12 - _DATA_HEADER) & ~3  # common header, DATA header; 4-aligned

    def setup_peer(self, a_rwnd: int, forward_tsn: bool) -> None:
        self.peer_rwnd = a_rwnd
        self.peer_forward_tsn = forward_tsn
        # RFC 4960 s7.2.1 initial cwnd and ssthresh
        self.cwnd = min(4 * self._mtu, max(2 * self._mtu, 4380))
        self._ssthresh = a_rwnd

    def enqueue(
        self,
        stream_id: int,
        ppid: int,
        data: bytes,
        unordered: bool,
        max_retransmits: int | None,
        expires: float | None,
    ) -> None:
        msg = _OutMessage(stream_id, ppid, unordered, max_retransmits, expires)
        size = self._fragment
        for off in range(0, len(data), size):
            chunk = _OutChunk(msg, data[off : off + size], off == 0, off + size >= len(data))
            msg.chunks.append(chunk)
            self.pending.append(chunk)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.outstanding

    @property
    def buffered_amount(self) -> int:
        return sum(len(c.data) for c in self.pending) + sum(len(c.data) for c in self.outstanding.values())

    def busy_streams(self) -> set[int]:
        return {c.msg.stream_id for c in self.pending}

    def backoff(self) -> None:
        self.rto = min(self.rto * 2, self._rto_max)  # RFC 4960 s6.3.3 E2

    def add_data(self, parts: list[bytes], size: int, now: float, allow_new: bool) -> None:
        """Append retransmitted, then new DATA chunks to a packet being built (RFC 4960 s6.1)."""
        # Retransmissions first (s6.1 rule C: earliest TSNs), then new data; cwnd and rwnd apply.
        for tsn in sorted(
            (t for t, c in self.outstanding.items() if c.retransmit), key=lambda t: (t - self.cum_ack) & 0xFFFFFFFF
        ):
            c = self.outstanding[tsn]
            if self._expired(c, now):
                continue
            if self.flight >= self.cwnd and self.flight > 0:
                return
            raw = serialize_chunk(self._data_chunk(c))
            if size + len(raw) > self._max_packet:
                return
            parts.append(raw)
            size += len(raw)
            c.retransmit = False
            self._transmitted(c, now)
            self.stats.retransmissions += 1
        if not allow_new:
            return
        while self.pending:
            c = self.pending[0]
            msg = c.msg
            if msg.abandoned or (c.beginning and msg.expires is not None and now >= msg.expires):
                self.pending.popleft()
                if not msg.abandoned:
                    msg.abandoned = True
                    self.stats.messages_abandoned += 1
                continue
            if self.flight > 0 and (self.flight >= self.cwnd or len(c.data) > self.peer_rwnd - self.flight):
                return  # s6.1 rules A and B (one packet may always be in flight)
            if size + _DATA_HEADER + ((len(c.data) + 3) & ~3) > self._max_packet:  # padded (s3.2)
                return
            self.pending.popleft()
            c.tsn = self.next_tsn
            self.next_tsn = (self.next_tsn + 1) & 0xFFFFFFFF
            if c.beginning and not msg.unordered:
                msg.ssn = self.out_ssn.get(msg.stream_id, 0)
                self.out_ssn[msg.stream_id] = (msg.ssn + 1) & 0xFFFF
            self.outstanding[c.tsn] = c
            raw = serialize_chunk(self._data_chunk(c))
            parts.append(raw)
            size += len(raw)
            self._transmitted(c, now)

    def _data_chunk(self, c: _OutChunk) -> DataChunk:
        m = c.msg
        return DataChunk(c.tsn, m.stream_id, m.ssn, m.ppid, c.data, m.unordered, c.beginning, c.ending)

    def _transmitted(self, c: _OutChunk, now: float) -> None:
        c.sent_count += 1
        c.sent_at = now
        c.misses = 0
        if not c.in_flight:
            c.in_flight = True
            self.flight += len(c.data)
        if self.t3 is None:
            self.t3 = now + self.rto  # s6.3.2 rule R1

    def _leave_flight(self, c: _OutChunk) -> None:
        if c.in_flight:
            c.in_flight = False
            self.flight -= len(c.data)

    def _expired(self, c: _OutChunk, now: float) -> bool:
        """RFC 3758 s3.5 A1/A2: abandon a message past its lifetime or retransmission limit."""
        m = c.msg
        if m.abandoned:
            return True
        over = m.max_retransmits is not None and c.sent_count > m.max_retransmits
        if not over and not (m.expires is not None and now >= m.expires):
            return False
        if not self.peer_forward_tsn:
            return False  # without PR-SCTP support the data stays reliable
        m.abandoned = True
        self.stats.messages_abandoned += 1
        for part in m.chunks:
            self._leave_flight(part)
            part.retransmit = False
        self._advance_ack_point()
        return True

    def _advance_ack_point(self) -> None:
        """RFC 3758 s3.5 C1-C3: move past abandoned chunks and schedule a FORWARD TSN."""
        if tsn_lt(self.adv_ack, self.cum_ack):
            self.adv_ack = self.cum_ack
        for tsn, c in self.outstanding.items():
            if not tsn_gt(tsn, self.adv_ack):
                continue
            if not c.msg.abandoned:
                break
            self.adv_ack = tsn
        if tsn_gt(self.adv_ack, self.cum_ack):
            self.forward_tsn_due = True

    def forward_tsn_chunk(self) -> ForwardTsnChunk:
        streams: dict[int, int] = {}
        for tsn, c in self.outstanding.items():
            if tsn_gt(tsn, self.adv_ack):
                break
            if not c.msg.unordered:
                streams[c.msg.stream_id] = c.msg.ssn
        return ForwardTsnChunk(self.adv_ack, tuple(sorted(streams.items())))

    def on_sack(self, now: float, cum: int, a_rwnd: int | None, gaps: tuple[tuple[int, int], ...]) -> bool:
        """RFC 4960 s6.2.1 (processing a SACK), s7.2 (congestion control)."""
        if tsn_lt(cum, self.cum_ack) or not tsn_lt(cum, self.next_tsn):
            return False  # stale or acknowledges data never sent
        flight_before = self.flight
        advanced = cum != self.cum_ack
        bytes_acked = 0
        rtt: float | None = None
        while self.outstanding:
            tsn = next(iter(self.outstanding))
            if tsn_gt(tsn, cum):
                break
            c = self.outstanding.pop(tsn)
            if not c.acked and not c.msg.abandoned:
                bytes_acked += len(c.data)
                if c.sent_count == 1:  # Karn's algorithm (s6.3.1 C5)
                    rtt = now - c.sent_at
            self._leave_flight(c)
        self.cum_ack = cum
        htna: int | None = cum if advanced else None  # highest newly acknowledged TSN (s7.2.4)
        ranges = [((cum + s) & 0xFFFFFFFF, (cum + e) & 0xFFFFFFFF) for s, e in gaps if s <= e]
        for tsn, c in self.outstanding.items():
            in_gap = any(not tsn_lt(tsn, s) and not tsn_gt(tsn, e) for s, e in ranges)
            if in_gap and not c.acked:
                c.acked, c.retransmit = True, False
                if not c.msg.abandoned:
                    bytes_acked += len(c.data)
                    if c.sent_count == 1:
                        rtt = now - c.sent_at
                self._leave_flight(c)
                htna = tsn
            elif not in_gap and c.acked and a_rwnd is not None:
                c.acked, c.retransmit = False, True  # s6.2.1: the peer reneged
        fast = False
        if gaps and htna is not None:
            for tsn, c in self.outstanding.items():
                if not tsn_lt(tsn, htna):
                    break
                if c.acked or c.retransmit or c.msg.abandoned or c.sent_count == 0:
                    continue
                c.misses += 1
                if c.misses >= 3 and not c.fast_retransmitted:  # s7.2.4
                    c.fast_retransmitted, c.retransmit = True, True
                    self._leave_flight(c)
                    self.stats.fast_retransmissions += 1
                    fast = True
        if self._fast_recovery_exit is not None and not tsn_lt(cum, self._fast_recovery_exit):
            self._fast_recovery_exit = None
        if fast and self._fast_recovery_exit is None:
            self._ssthresh = max(self.cwnd // 2, 4 * self._mtu)
            self.cwnd = self._ssthresh
            self._partial_acked = 0
            self._fast_recovery_exit = (self.next_tsn - 1) & 0xFFFFFFFF
        elif advanced and self._fast_recovery_exit is None and flight_before + self._fragment > self.cwnd:
            # "cwnd fully utilised" (s7.2.1): no room was left for another full-sized chunk.
            if self.cwnd <= self._ssthresh:  # s7.2.1 slow start
                self.cwnd += min(bytes_acked, self._mtu)
            else:  # s7.2.2 congestion avoidance
                self._partial_acked += bytes_acked
                if self._partial_acked >= self.cwnd:
                    self._partial_acked -= self.cwnd
                    self.cwnd += self._mtu
        if a_rwnd is not None:
            self.peer_rwnd = a_rwnd
        if rtt is not None:  # newest chunk acked by this SACK and never retransmitted (C5)
            self.rtt_sample(rtt)
        if not any(not c.acked for c in self.outstanding.values()):
            self.t3 = None  # s6.3.2 rule R2
        elif advanced:
            self.t3 = now + self.rto  # rule R3
        self._advance_ack_point()
        if self.forward_tsn_due and not tsn_gt(self.adv_ack, self.cum_ack):
            self.forward_tsn_due = False
        return advanced

    def rtt_sample(self, r: float) -> None:
        """RFC 4960 s6.3.1 C1-C3."""
        if self.srtt is None:
            self.srtt, self._rttvar = r, r / 2
        else:
            self._rttvar = (1 - _BETA) * self._rttvar + _BETA * abs(self.srtt - r)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * r
        self.rto = min(max(self.srtt + 4 * self._rttvar, self._rto_min), self._rto_max)

    def on_t3(self, now: float) -> None:
        """RFC 4960 s6.3.3 (T3-rtx expiry) and s7.2.3 (loss by timeout)."""
        self.t3 = None
        self.stats.t3_expirations += 1
        self.rto = min(self.rto * 2, self._rto_max)  # E2
        self._ssthresh = max(self.cwnd // 2, 4 * self._mtu)
        self.cwnd = self._mtu
        self._partial_acked = 0
        self._fast_recovery_exit = None
        for c in list(self.outstanding.values()):
            if not c.acked and not c.msg.abandoned:
                self._leave_flight(c)
                c.retransmit = True
                self._expired(c, now)
        self._advance_ack_point()
        if tsn_gt(self.adv_ack, self.cum_ack):
            self.forward_tsn_due = True  # RFC 3758 s3.5 C3: resend FORWARD TSN on T3
        if any(not c.acked for c in self.outstanding.values()):
            self.t3 = now + self.rto  # E3
