"""At-least-once node -> connector relay: resend until ack, window, spill to disk and back in order."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.connector import events as ev
from trackmesh.connector.events import EventError
from trackmesh.connector.relay import (
    NodeRestarted,
    ReliableSender,
    SpillFile,
    decode_ack,
    decode_batch,
    encode_ack,
    encode_batch,
    item_from_json,
)


def ids(items: tuple[ev.SourceEvent | NodeRestarted, ...]) -> list[str]:
    """The ids of a batch's events (no node restarts in these batches)."""
    assert all(isinstance(e, ev.SourceEvent) for e in items), items
    return [e.id for e in items if isinstance(e, ev.SourceEvent)]


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
    assert b3 is not None and ids(b3.events) == ["evt_4", "evt_5"]
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
        got += ids(b.events)
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


# ---- restart marker, persistence at stop, the wire -----------------------------------------


def test_restart_marker_goes_after_what_the_previous_run_left(tmp_path: Path) -> None:
    path = str(tmp_path / "spill.jsonl")
    first = ReliableSender(max_memory=2, spill=SpillFile(path), window=1, batch_size=3)
    for i in range(5):
        first.push(event(i))
    batch = first.poll_transmit(0.0)  # in flight, never acknowledged: the node stops
    assert batch is not None and first.persist()
    assert first.pending == 5
    again = ReliableSender(max_memory=2, spill=SpillFile(path), window=1, batch_size=3)
    again.push(NodeRestarted(266, 1_800_000_000_000))
    got: list[object] = []
    now = 0.0
    while (b := again.poll_transmit(now)) is not None:
        got += [e.id if isinstance(e, ev.SourceEvent) else e for e in b.events]
        again.handle_ack(b.seq)
    assert got == [f"evt_{i}" for i in range(5)] + [NodeRestarted(266, 1_800_000_000_000)]


def test_persist_without_a_spill_file_says_so() -> None:
    s = ReliableSender()
    s.push(event(1))
    assert not s.persist() and s.pending == 1


def test_wire_round_trip_and_bad_lines_are_counted() -> None:
    s = ReliableSender(window=1)
    s.push(NodeRestarted(266, 5))
    s.push(event(1))
    batch = s.poll_transmit(0.0)
    assert batch is not None
    data = encode_batch(266, 2**47 + 3, batch)
    wire = decode_batch(data + b"\n{not json")
    assert (wire.node, wire.boot, wire.seq, wire.bad) == (266, 2**47 + 3, batch.seq, 1)
    assert wire.items == batch.events
    assert decode_ack(encode_ack(2**47 + 3, 9)) == (2**47 + 3, 9)
    for bad in (b"", b"[]", b'{"node": -1, "boot": 1, "seq": 1}', b'{"node": 1, "boot": 1}',
                b'{"node": true, "boot": 1, "seq": 1}'):
        with pytest.raises(EventError):
            decode_batch(bad)
    with pytest.raises(EventError):
        item_from_json(b'{"restarted": {"node": "x", "ts": 1}}')


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_decoders_reject_garbage_with_event_error_only(data: bytes) -> None:
    for decode in (decode_batch, decode_ack, item_from_json):
        with contextlib.suppress(EventError):
            decode(data)


@given(st.lists(st.text(max_size=40), max_size=5))
@settings(max_examples=200, deadline=None)
def test_decode_batch_never_raises_on_any_item_lines(lines: list[str]) -> None:
    head = b'{"node": 1, "boot": 2, "seq": 3}'
    wire = decode_batch(b"\n".join([head, *(line.replace("\n", " ").encode() for line in lines)]))
    assert len(wire.items) + wire.bad == len(lines)
