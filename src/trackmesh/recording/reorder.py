"""A reorder buffer in front of a depacketizer, sans-IO.

The depacketizer wants packets in sequence order and treats a gap as loss. On a live network a
missing packet is often only late: reordered, or retransmitted after a NACK (RFC 4585 s6.2.1).
Forwarding cannot wait for it, a recording can: packets are held until the gap fills or the
oldest held packet has waited ``wait`` seconds, then the gap is given up and released as loss.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

__all__ = ["MAX_HELD", "ReorderBuffer"]

T = TypeVar("T")

#: Hold at most this many packets (about a second of 2.5 Mbps video): past that, give the gap up.
MAX_HELD: Final = 1024
#: A sequence number this far behind the next expected one is late or a duplicate (RFC 3550 A.1).
_MAX_MISORDER: Final = 100


class ReorderBuffer(Generic[T]):
    """Items keyed by 16-bit sequence numbers in, items in sequence order out (``pop``).

    A missing sequence number is waited for until the packet after it has waited ``wait``
    seconds (so each gap gets its wait from when it became known, not one after another).
    ``late`` counts items that arrived after their place was released (or duplicates);
    ``skipped`` the sequence numbers given up as lost."""

    __slots__ = ("_held", "_next", "late", "skipped", "wait")

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._held: dict[int, tuple[int, T, float]] = {}  # extended seq -> (16-bit seq, item, arrival)
        self._next = -1  # extended sequence number expected next
        self.late = 0
        self.skipped = 0

    def push(self, now: float, seq: int, item: T) -> None:
        if self._next < 0:
            self._next = seq
        base = self._next & 0xFFFF
        delta = (seq - base) & 0xFFFF
        if delta >= 0x8000:
            # Behind the next expected one: late or a duplicate, unless so far behind that the
            # sender restarted its numbering.
            if 0x10000 - delta <= _MAX_MISORDER:
                self.late += 1
                return
            self._restart(seq)
            delta = 0
        ext = self._next + delta
        if ext in self._held:
            self.late += 1
            return
        self._held[ext] = (seq, item, now)

    def _restart(self, seq: int) -> None:
        # The sender restarted its numbering: what is held belongs to the old one and can no
        # longer be ordered against the new; it is dropped (counted) and numbering starts over.
        self.skipped += len(self._held)
        self._held.clear()
        self._next = seq

    def pop(self, now: float) -> tuple[int, T] | None:
        """The next item in order, or None: the head is missing and still worth waiting for."""
        held = self._held
        if not held:
            return None
        got = held.pop(self._next, None)
        if got is None:
            first = min(held)
            if now - held[first][2] < self.wait and len(held) < MAX_HELD:
                return None
            # Give the gap up: jump to the lowest held sequence number (a loss the depacketizer sees).
            self.skipped += first - self._next
            self._next = first
            got = held.pop(first)
        self._next += 1
        return got[0], got[1]

    def deadline(self) -> float | None:
        """When the head-of-line gap is given up, if anything is held."""
        if not self._held:
            return None
        return self._held[min(self._held)][2] + self.wait

    def drain(self) -> list[tuple[int, T]]:
        """Everything held, in order (end of stream)."""
        out = [self._held[k][:2] for k in sorted(self._held)]
        self._held.clear()
        return out

    def __len__(self) -> int:
        return len(self._held)
