"""At-least-once delivery of source events from a node to its zone's connector (sans-IO).

The node side of the cluster path (driver: runtime/connector_link.py, docs/connector.md): events
are queued in order, sent in numbered batches, and resent every ``resend_after`` seconds until
the connector acknowledges the batch number (it acknowledges after its commit, and deduplicates
by event id, so a resend after a lost ack is harmless). At most ``window`` batches are
unacknowledged at once (the cluster link uses 1: the connector then stores a node's events in
the order they happened, which its room state needs).

Besides events, the queue carries :class:`NodeRestarted` markers: a node that starts queues one
(after whatever its previous run left in the spill file), and the connector closes, when it
reaches the marker, the sessions of that node its log still has open.

Memory is bounded: past ``max_memory`` queued events, new events go to a :class:`SpillFile`
(append-only JSON lines on disk) and come back in order as the memory queue drains. When the
spill file cannot take more (``max_spill_bytes`` or a full disk), events are dropped, counted
and reported by :attr:`dropped` (the driver logs it): a metric and an error, never a blocked
media worker.
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass

from .events import EventError, SourceEvent, source_from_json, source_to_json


@dataclass(frozen=True, slots=True)
class NodeRestarted:
    """The node started at ``ts`` (unix ms): sessions of it still open in the log are from a
    previous run and are closed (Disconnected with reason NodeFailure) when the connector reaches
    this marker."""

    node: int
    ts: int


Item = SourceEvent | NodeRestarted


def item_to_json(item: Item) -> bytes:
    if isinstance(item, NodeRestarted):
        return json.dumps({"restarted": {"node": item.node, "ts": item.ts}}, separators=(",", ":")).encode()
    return source_to_json(item)


def item_from_json(data: bytes | str) -> Item:
    """Raises EventError on anything but an event or a well-formed marker."""
    marked = b'"restarted"' in data if isinstance(data, bytes) else '"restarted"' in data
    if marked:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventError(f"not JSON: {exc}") from None
        mark = obj.get("restarted") if isinstance(obj, dict) else None
        if isinstance(mark, dict):
            node, ts = mark.get("node"), mark.get("ts")
            if (isinstance(node, int) and isinstance(ts, int) and not isinstance(node, bool)
                    and not isinstance(ts, bool) and 0 <= node < 2**32 and 0 <= ts < 2**63):
                return NodeRestarted(node, ts)
            raise EventError("restarted: expected {node, ts} integers")
    return source_from_json(data)


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

    def rewrite(self, head: list[bytes]) -> bool:
        """Put ``head`` before the lines not read yet (a node stopping persists what it could not
        send); the file is replaced atomically. False when the disk refuses."""
        rest = self.read(self.count) if self.count else []
        lines = head + rest
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                for line in lines:
                    f.write(line + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            return False
        self._read_at = 0
        self._size = sum(len(line) + 1 for line in lines)
        self.count = len(lines)
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
    events: tuple[Item, ...]


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
        self._queue: deque[Item] = deque()
        self._unacked: dict[int, tuple[Batch, float]] = {}  # seq -> (batch, last sent)
        self._next_seq = 1
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.spilled = 0
        self.dropped = 0

    def push(self, event: Item) -> None:
        if len(self._queue) < self.max_memory and not (self.spill and self.spill.count):
            self._queue.append(event)
            return
        if self.spill is not None and self.spill.append(item_to_json(event)):
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
                self._queue.append(item_from_json(line))
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

    def persist(self) -> bool:
        """At stop: everything not acknowledged (in flight, queued) goes to the front of the spill
        file, in order, for the next run to send. False without a spill file or a disk."""
        if self.spill is None:
            return False
        in_flight = [self._unacked[seq][0] for seq in sorted(self._unacked)]
        items = [e for batch in in_flight for e in batch.events] + list(self._queue)
        if not items and not self.spill.count:
            return True
        if not self.spill.rewrite([item_to_json(e) for e in items]):
            return False
        self._unacked.clear()
        self._queue.clear()
        return True

    @property
    def pending(self) -> int:
        """Events not yet acknowledged (queued, spilled or in flight)."""
        spilled = self.spill.count if self.spill is not None else 0
        return len(self._queue) + spilled + sum(len(b.events) for b, _ in self._unacked.values())


# ---- the wire (zenoh payloads; runtime/connector_link.py and runtime/connector_node.py) -------
#
# A batch: one JSON header line {"node", "boot", "seq"} then one line per item. An ack: {"boot",
# "seq"}. ``boot`` is random per run of the sending node, so an ack meant for a previous run is
# ignored. JSON lines, like the spill file, so a batch is readable in a packet capture.

MAX_WIRE_ITEMS = 4096


@dataclass(frozen=True, slots=True)
class WireBatch:
    node: int
    boot: int
    seq: int
    items: tuple[Item, ...]
    bad: int  # item lines that did not parse (dropped and counted by the connector)


def encode_batch(node: int, boot: int, batch: Batch) -> bytes:
    head = json.dumps({"node": node, "boot": boot, "seq": batch.seq}, separators=(",", ":")).encode()
    return b"\n".join([head, *(item_to_json(e) for e in batch.events)])


def _uint(obj: dict[str, object], key: str, high: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < high:
        raise EventError(f"{key}: expected an integer 0..{high - 1}")
    return value


def decode_batch(data: bytes) -> WireBatch:
    """Raises EventError when the header is unusable; bad item lines are counted in ``bad``."""
    lines = data.split(b"\n")
    if len(lines) - 1 > MAX_WIRE_ITEMS:
        raise EventError(f"a batch carries at most {MAX_WIRE_ITEMS} items")
    try:
        head = json.loads(lines[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"header: not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise EventError("header: expected a JSON object")
    node, boot, seq = _uint(head, "node", 2**32), _uint(head, "boot", 2**64), _uint(head, "seq", 2**63)
    items: list[Item] = []
    bad = 0
    for line in lines[1:]:
        try:
            items.append(item_from_json(line))
        except EventError:
            bad += 1
    return WireBatch(node, boot, seq, tuple(items), bad)


def encode_ack(boot: int, seq: int) -> bytes:
    return json.dumps({"boot": boot, "seq": seq}, separators=(",", ":")).encode()


def decode_ack(data: bytes) -> tuple[int, int]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"ack: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError("ack: expected a JSON object")
    return _uint(obj, "boot", 2**64), _uint(obj, "seq", 2**63)
