"""At-least-once node -> connector relay: resend until ack, window, spill to disk and back in order."""

from __future__ import annotations

from pathlib import Path

from trackmesh.connector import events as ev
from trackmesh.connector.relay import ReliableSender, SpillFile


def event(i: int) -> ev.SourceEvent:
    return ev.SourceEvent(f"evt_{i}", "", ev.HookEvent(1, i, ev.PeerEvent(i, ev.Join("r", f"p{i}"))))


def test_resends_until_acked_and_window_bounds_flight() -> None:
    s = ReliableSender(resend_after=1.0, window=2, batch_size=2)
    for i in range(6):
        s.push(event(i))
    b1, b2 = s.poll_transmit(0.0), s.poll_transmit(0.0)
    assert b1 is not None and b2 is not None and s.poll_transmit(0.0) is None
    assert s.next_deadline() == 1.0
    again = s.poll_transmit(1.0)
    assert again == b1 and s.resent == 1
    s.handle_ack(b1.seq)
    s.handle_ack(b1.seq)  # a duplicate ack
    assert s.poll_transmit(1.0) == b2  # due too: resent before anything new
    b3 = s.poll_transmit(1.0)
    assert b3 is not None and [e.id for e in b3.events] == ["evt_4", "evt_5"]
    assert s.pending == 4


def test_spill_to_disk_keeps_order_and_bounds_memory(tmp_path: Path) -> None:
    spill = SpillFile(str(tmp_path / "spill.jsonl"))
    s = ReliableSender(max_memory=3, spill=spill, window=1, batch_size=2)
    for i in range(10):
        s.push(event(i))
    assert s.spilled == 7 and spill.count == 7
    got: list[str] = []
    now = 0.0
    while (b := s.poll_transmit(now)) is not None:
        got += [e.id for e in b.events]
        s.handle_ack(b.seq)
    assert got == [f"evt_{i}" for i in range(10)]
    assert spill.count == 0 and (tmp_path / "spill.jsonl").stat().st_size == 0


def test_full_spill_drops_and_counts(tmp_path: Path) -> None:
    spill = SpillFile(str(tmp_path / "spill.jsonl"), max_bytes=300)
    s = ReliableSender(max_memory=1, spill=spill)
    for i in range(10):
        s.push(event(i))
    assert s.dropped > 0 and s.spilled + s.dropped + 1 == 10


def test_spill_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "spill.jsonl")
    first = SpillFile(path)
    for i in range(3):
        assert first.append(ev.source_to_json(event(i)))
    again = SpillFile(path)
    assert again.count == 3
    assert [ev.source_from_json(x).id for x in again.read(10)] == ["evt_0", "evt_1", "evt_2"]
