"""At-least-once delivery of source events from a node to its zone's connector (sans-IO).

The node side of the cluster path (the zenoh driver is the next step, docs/connector.md): events
are queued in order, sent in numbered batches, and resent every ``resend_after`` seconds until
the connector acknowledges the batch number (it acknowledges after its commit, and deduplicates
by event id, so a resend after a lost ack is harmless). At most ``window`` batches are
unacknowledged at once.

Memory is bounded: past ``max_memory`` queued events, new events go to a :class:`SpillFile`
(append-only JSON lines on disk) and come back in order as the memory queue drains. When the
spill file cannot take more (``max_spill_bytes`` or a full disk), events are dropped, counted
and reported by :attr:`dropped` (the driver logs it): a metric and an error, never a blocked
media worker.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from .events import EventError, SourceEvent, source_from_json, source_to_json


class SpillFile:
    """Append-only overflow on disk, read back from the front. One file; it is truncated when
    every spilled event has been read back."""

    def __init__(self, path: str, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._read_at = 0
        self._size = os.path.getsize(path) if os.path.exists(path) else 0
        self.count = 0
        if self._size:
            with open(path, "rb") as f:
                self.count = sum(1 for _ in f)

    def append(self, line: bytes) -> bool:
        if self._size + len(line) + 1 > self.max_bytes:
            return False
        try:
            with open(self.path, "ab") as f:
                f.write(line + b"\n")
        except OSError:
            return False
        self._size += len(line) + 1
        self.count += 1
        return True

    def read(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        if not self.count:
            return out
        with open(self.path, "rb") as f:
            f.seek(self._read_at)
            while len(out) < n:
                line = f.readline()
                if not line:
                    break
                out.append(line.rstrip(b"\n"))
            self._read_at = f.tell()
        self.count -= len(out)
        if self.count <= 0:
            self.count = 0
            self._read_at = 0
            self._size = 0
            with open(self.path, "wb"):
                pass
        return out


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    events: tuple[SourceEvent, ...]


class ReliableSender:
    def __init__(
        self,
        max_memory: int = 10_000,
        spill: SpillFile | None = None,
        resend_after: float = 1.0,
        window: int = 4,
        batch_size: int = 256,
    ) -> None:
        self.max_memory = max_memory
        self.spill = spill
        self.resend_after = resend_after
        self.window = window
        self.batch_size = batch_size
        self._queue: deque[SourceEvent] = deque()
        self._unacked: dict[int, tuple[Batch, float]] = {}  # seq -> (batch, last sent)
        self._next_seq = 1
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.spilled = 0
        self.dropped = 0

    def push(self, event: SourceEvent) -> None:
        if len(self._queue) < self.max_memory and not (self.spill and self.spill.count):
            self._queue.append(event)
            return
        if self.spill is not None and self.spill.append(source_to_json(event)):
            self.spilled += 1
            return
        self.dropped += 1

    def _refill(self) -> None:
        if self.spill is None or not self.spill.count:
            return
        room = self.max_memory - len(self._queue)
        if room <= 0:
            return
        for line in self.spill.read(room):
            try:
                self._queue.append(source_from_json(line))
            except EventError:
                self.dropped += 1

    def poll_transmit(self, now: float) -> Batch | None:
        """A batch to send now: a resend that is due first, else a new one within the window."""
        for seq, (batch, sent_at) in self._unacked.items():
            if sent_at + self.resend_after <= now:
                self._unacked[seq] = (batch, now)
                self.resent += 1
                return batch
        if len(self._unacked) >= self.window:
            return None
        self._refill()
        if not self._queue:
            return None
        events = tuple(self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue))))
        batch = Batch(self._next_seq, events)
        self._next_seq += 1
        self._unacked[batch.seq] = (batch, now)
        self.sent += 1
        return batch

    def handle_ack(self, seq: int) -> None:
        if self._unacked.pop(seq, None) is not None:
            self.acked += 1

    def next_deadline(self) -> float | None:
        if not self._unacked:
            return None
        return min(sent_at for _, sent_at in self._unacked.values()) + self.resend_after

    @property
    def pending(self) -> int:
        """Events not yet acknowledged (queued, spilled or in flight)."""
        spilled = self.spill.count if self.spill is not None else 0
        return len(self._queue) + spilled + sum(len(b.events) for b, _ in self._unacked.values())
