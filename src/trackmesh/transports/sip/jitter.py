"""The phone's RTP in order: a small reorder buffer with loss reporting (RFC 3550 s5.1, A.1).

Phones send one packet per ptime; the network may reorder, duplicate or lose them. The buffer
releases packets in sequence order as soon as the next expected one is there, so in-order
traffic passes with no added delay. A packet that arrives ahead of a gap waits; once more than
``depth`` packets wait, the gap is declared lost and released as a :class:`Lost` entry (the caller
conceals it), then the waiting packets follow. Duplicates and packets older than what was
released are dropped and counted. Sequence numbers are extended past the 16-bit wrap; a jump of
more than ``MAX_JUMP`` (a restarted phone, a new SSRC) resynchronises instead of reporting
thousands of losses.

Sans-IO and clock-free: driven by arrivals only (the added latency is bounded by ``depth``
packets, 60 ms at the default 3 x 20 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JitterStats", "Lost", "ReorderBuffer"]

MAX_JUMP = 100  # packets: beyond this a sequence jump is a resynchronisation, not a loss


@dataclass(frozen=True, slots=True)
class Lost:
    """``count`` consecutive packets never came (declared lost)."""

    count: int


class JitterStats:
    __slots__ = ("duplicates", "early", "late", "lost", "resyncs")

    def __init__(self) -> None:
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.early = 0  # arrived ahead of a missing packet (reordered, or before a loss)
        self.resyncs = 0


class ReorderBuffer:
    """Packets in, (sequence-ordered payloads | Lost) out."""

    __slots__ = ("_cycles", "_last_raw", "_next", "_waiting", "depth", "stats")

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.stats = JitterStats()
        self._next: int | None = None  # the extended sequence number we release next
        self._waiting: dict[int, bytes] = {}
        self._cycles = 0
        self._last_raw: int | None = None

    def _extend(self, seq: int) -> int:
        last = self._last_raw
        if last is not None:
            if seq < last and last - seq > 0x8000:
                self._cycles += 0x10000  # wrapped forward
            elif seq > last and seq - last > 0x8000:
                return self._cycles - 0x10000 + seq  # a late packet from before the wrap
        self._last_raw = seq
        return self._cycles + seq

    def push(self, seq: int, payload: bytes) -> list[bytes | Lost]:
        """One packet; what can be released now, in order."""
        ext = self._extend(seq & 0xFFFF)
        if self._next is None or abs(ext - self._next) > MAX_JUMP:
            if self._next is not None:
                self.stats.resyncs += 1
            self._waiting.clear()
            self._next = ext
        if ext < self._next:
            self.stats.late += 1
            return []
        if ext in self._waiting:
            self.stats.duplicates += 1
            return []
        if ext != self._next:
            self.stats.early += 1
        self._waiting[ext] = payload
        out: list[bytes | Lost] = []
        self._release(out)
        if len(self._waiting) > self.depth:
            first = min(self._waiting)
            gap = first - self._next
            self.stats.lost += gap
            out.append(Lost(gap))
            self._next = first
            self._release(out)
        return out

    def _release(self, out: list[bytes | Lost]) -> None:
        assert self._next is not None
        while self._next in self._waiting:
            out.append(self._waiting.pop(self._next))
            self._next += 1
