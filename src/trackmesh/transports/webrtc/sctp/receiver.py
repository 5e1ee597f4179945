"""The receiving half of an SCTP association (RFC 4960 s6.2, s6.5, s6.6, s6.9; RFC 3758 s3.6;
RFC 6525 s5.2.2).

:class:`InboundQueue` tracks received TSNs (cumulative point, gaps, duplicates) for SACK
generation, reassembles fragmented messages, and delivers them in SSN order per stream (or at
once when unordered). It also applies FORWARD TSN skips and incoming stream resets, holding
data for a stream whose reset is deferred until the sender's last TSN has arrived.
Used by :mod:`~trackmesh.transports.webrtc.sctp.association`; pure data structure, no timers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from trackmesh.transports.webrtc.sctp.packet import DataChunk, SackChunk

__all__ = ["InboundMessage", "InboundQueue", "OutOfResource", "ssn_gt", "tsn_gt", "tsn_lt"]

_MAX_GAP_BLOCKS: Final = 64  # keeps a SACK well under one packet (16 + 64*4 bytes)
_MAX_DUPS: Final = 16
#: Fragments held at once. The byte window alone does not bound memory: a peer sending 1-byte fragments would
#: make us hold a DataChunk object (~150 B) per byte. Chrome's smallest fragments (50-100 B, a nearly full cwnd)
#: fill a 1 MB window with about 16,000.
MAX_HELD_CHUNKS: Final = 65536
#: In-sequence data is accepted beyond the advertised window (s6.2 drops only data past the next TSN), so a peer
#: that never ends a message could grow it forever; past this many windows held the association is aborted.
HELD_WINDOWS_LIMIT: Final = 4


class OutOfResource(Exception):
    """The peer made us hold more than the limits above: the association is aborted (RFC 4960 s3.3.10.4)."""


def tsn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic on 32-bit TSNs (RFC 4960 s1.6, RFC 1982)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def tsn_gt(a: int, b: int) -> bool:
    return tsn_lt(b, a)


def ssn_gt(a: int, b: int) -> bool:
    """Serial number arithmetic on 16-bit SSNs (RFC 4960 s1.6)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


@dataclass(frozen=True, slots=True)
class InboundMessage:
    stream_id: int
    ppid: int
    data: bytes
    unordered: bool


class InboundQueue:
    """Received-TSN bookkeeping, reassembly and ordered delivery for one association."""

    def __init__(self, peer_initial_tsn: int, window: int) -> None:
        self.cumulative_tsn = (peer_initial_tsn - 1) & 0xFFFFFFFF
        self.window = window
        self.buffered = 0  # bytes held in reassembly or waiting for an earlier SSN
        self.delivered: deque[InboundMessage] = deque()
        #: (request seq, streams) of incoming resets performed since last drained.
        self.resets_performed: list[tuple[int, tuple[int, ...]]] = []
        self._above: set[int] = set()  # received TSNs beyond the cumulative point
        self._dups: list[int] = []
        self._chunks: dict[int, DataChunk] = {}
        # Stored fragments form runs: maximal TSN-contiguous pieces of one message. Keyed both ways so a
        # fragment joins its neighbours' runs in O(1) and a message is copied out once, when its run spans
        # B..E. (Walking to the B fragment on every arrival was quadratic: Chrome fills a nearly full cwnd
        # with fragments of 50-100 bytes, and a 256 KB message in 64-byte fragments took 1.3 s.)
        self._run_end: dict[int, int] = {}  # first TSN of a run -> its last TSN
        self._run_start: dict[int, int] = {}  # last TSN of a run -> its first TSN
        self._waiting: dict[int, dict[int, InboundMessage]] = {}  # stream -> SSN -> message
        self._next_ssn: dict[int, int] = {}
        self._deferred: list[tuple[int, int, tuple[int, ...]]] = []  # (last TSN, request seq, streams)
        self._held: list[DataChunk] = []

    # --- TSN tracking -------------------------------------------------------------------

    @property
    def has_gaps(self) -> bool:
        return bool(self._above)

    def is_duplicate(self, tsn: int) -> bool:
        return not tsn_gt(tsn, self.cumulative_tsn) or tsn in self._above

    def receive(self, chunk: DataChunk) -> bool:
        """Accept one DATA chunk; False if it was a duplicate or dropped for lack of buffer."""
        tsn = chunk.tsn
        if self.is_duplicate(tsn):
            if len(self._dups) < _MAX_DUPS:
                self._dups.append(tsn)
            return False
        in_sequence = tsn == (self.cumulative_tsn + 1) & 0xFFFFFFFF
        # RFC 4960 s6.2: with no buffer left, drop data beyond the next expected TSN.
        if self.buffered + len(chunk.user_data) > 2 * self.window and not in_sequence:
            return False
        if len(self._chunks) >= MAX_HELD_CHUNKS or self.buffered > HELD_WINDOWS_LIMIT * self.window:
            raise OutOfResource(f"{len(self._chunks)} fragments, {self.buffered} bytes held")
        if in_sequence:
            self._advance(tsn)
        else:
            self._above.add(tsn)
        if any(s == chunk.stream_id and tsn_gt(tsn, last) for last, _, streams in self._deferred for s in streams):
            self._held.append(chunk)  # RFC 6525 s5.2.2: queue until the reset is performed
        else:
            self._assemble(chunk)
        self._check_deferred()
        return True

    def _advance(self, tsn: int) -> None:
        self.cumulative_tsn = tsn
        nxt = (tsn + 1) & 0xFFFFFFFF
        while nxt in self._above:
            self._above.discard(nxt)
            self.cumulative_tsn = nxt
            nxt = (nxt + 1) & 0xFFFFFFFF

    def sack(self) -> SackChunk:
        """A SACK for the current state (RFC 4960 s3.3.4, s6.2); clears the duplicate list."""
        cum = self.cumulative_tsn
        offsets = sorted((t - cum) & 0xFFFFFFFF for t in self._above)
        blocks: list[tuple[int, int]] = []
        for off in offsets:
            if off > 0xFFFF:
                break  # gap offsets are 16-bit
            if blocks and blocks[-1][1] + 1 == off:
                blocks[-1] = (blocks[-1][0], off)
            elif len(blocks) < _MAX_GAP_BLOCKS:
                blocks.append((off, off))
            else:
                break
        dups, self._dups = tuple(self._dups), []
        return SackChunk(cum, max(0, self.window - self.buffered), tuple(blocks), dups)

    # --- reassembly and delivery --------------------------------------------------------

    def _same_message(self, a: DataChunk, b: DataChunk) -> bool:
        return a.stream_id == b.stream_id and a.unordered == b.unordered and (a.unordered or a.ssn == b.ssn)

    def _joins(self, a: DataChunk, b: DataChunk) -> bool:
        """Whether ``b`` (TSN a.tsn + 1) continues the message ``a`` belongs to (RFC 4960 s6.9)."""
        return not a.ending and not b.beginning and self._same_message(a, b)

    def _assemble(self, chunk: DataChunk) -> None:
        """Store a chunk and deliver its message if now complete (RFC 4960 s6.9)."""
        tsn = chunk.tsn
        self._chunks[tsn] = chunk
        self.buffered += len(chunk.user_data)
        start = end = tsn
        before = (tsn - 1) & 0xFFFFFFFF
        prev = self._chunks.get(before)
        if prev is not None and self._joins(prev, chunk):
            start = self._run_start.pop(before)  # ``before`` ended its run: ``tsn`` was missing
            del self._run_end[start]
        after = (tsn + 1) & 0xFFFFFFFF
        nxt = self._chunks.get(after)
        if nxt is not None and self._joins(chunk, nxt):
            end = self._run_end.pop(after)
            del self._run_start[end]
        first = self._chunks[start]
        if not (first.beginning and self._chunks[end].ending):
            self._run_end[start] = end
            self._run_start[end] = start
            return
        parts = []
        tsn = start
        while True:
            part = self._chunks.pop(tsn)
            parts.append(part.user_data)
            if tsn == end:
                break
            tsn = (tsn + 1) & 0xFFFFFFFF
        data = b"".join(parts)
        self.buffered -= len(data)
        msg = InboundMessage(chunk.stream_id, first.ppid, data, chunk.unordered)
        if chunk.unordered:
            self.delivered.append(msg)
            return
        expected = self._next_ssn.get(chunk.stream_id, 0)
        if first.ssn == expected:
            self.delivered.append(msg)
            self._next_ssn[chunk.stream_id] = (expected + 1) & 0xFFFF
            self._deliver_waiting(chunk.stream_id)
        elif ssn_gt(first.ssn, expected):
            self._waiting.setdefault(chunk.stream_id, {})[first.ssn] = msg
            self.buffered += len(data)
        # else: an SSN already skipped by FORWARD TSN; drop it.

    def _deliver_waiting(self, stream_id: int) -> None:
        waiting = self._waiting.get(stream_id)
        while waiting:
            expected = self._next_ssn.get(stream_id, 0)
            msg = waiting.pop(expected, None)
            if msg is None:
                return
            self.buffered -= len(msg.data)
            self.delivered.append(msg)
            self._next_ssn[stream_id] = (expected + 1) & 0xFFFF

    # --- FORWARD TSN (RFC 3758 s3.6) ----------------------------------------------------

    def forward_tsn(self, new_cumulative_tsn: int, streams: tuple[tuple[int, int], ...]) -> None:
        if not tsn_gt(new_cumulative_tsn, self.cumulative_tsn):
            return
        for tsn in [t for t in self._chunks if not tsn_gt(t, new_cumulative_tsn)]:
            self.buffered -= len(self._chunks.pop(tsn).user_data)  # abandoned fragments
        # A run that starts at or before the new cumulative TSN, or right after it without a first fragment,
        # belongs to a message the sender abandoned (it abandons whole messages, RFC 3758 s3.5): drop it.
        nxt = (new_cumulative_tsn + 1) & 0xFFFFFFFF
        for start, end in list(self._run_end.items()):
            if tsn_gt(start, nxt) or (start == nxt and self._chunks[start].beginning):
                continue
            del self._run_end[start], self._run_start[end]
            tsn = start
            while True:
                dropped = self._chunks.pop(tsn, None)
                if dropped is not None:
                    self.buffered -= len(dropped.user_data)
                if tsn == end:
                    break
                tsn = (tsn + 1) & 0xFFFFFFFF
        self._above = {t for t in self._above if tsn_gt(t, new_cumulative_tsn)}
        self._advance(new_cumulative_tsn)
        for sid, ssn in streams:
            if not ssn_gt(self._next_ssn.get(sid, 0), ssn):
                self._next_ssn[sid] = (ssn + 1) & 0xFFFF
                waiting = self._waiting.get(sid, {})
                for old in [s for s in waiting if not ssn_gt(s, ssn)]:
                    self.buffered -= len(waiting.pop(old).data)
                self._deliver_waiting(sid)
        self._check_deferred()

    # --- incoming stream reset (RFC 6525 s5.2.2) ----------------------------------------

    def request_reset(self, request_seq: int, last_tsn: int, streams: tuple[int, ...]) -> bool:
        """Reset the incoming SSNs of ``streams`` once ``last_tsn`` has arrived; True if done now."""
        self._deferred.append((last_tsn, request_seq, streams))
        before = len(self.resets_performed)
        self._check_deferred()
        return len(self.resets_performed) > before and self.resets_performed[-1][0] == request_seq

    def reset_pending(self, request_seq: int) -> bool:
        return any(seq == request_seq for _, seq, _ in self._deferred)

    def _check_deferred(self) -> None:
        while self._deferred and not tsn_gt(self._deferred[0][0], self.cumulative_tsn):
            _, seq, streams = self._deferred.pop(0)
            targets = set(streams) if streams else set(self._next_ssn) | set(self._waiting)  # empty = all
            for sid in targets:
                self._next_ssn[sid] = 0
                for msg in self._waiting.pop(sid, {}).values():
                    self.buffered -= len(msg.data)
            self.resets_performed.append((seq, streams))
            held, self._held = self._held, []
            for chunk in held:
                self.receive_held(chunk)

    def receive_held(self, chunk: DataChunk) -> None:
        if any(s == chunk.stream_id and tsn_gt(chunk.tsn, last) for last, _, ss in self._deferred for s in ss):
            self._held.append(chunk)
        else:
            self._assemble(chunk)
