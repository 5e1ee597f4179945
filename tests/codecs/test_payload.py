"""The shared depacketizer loop: sequence gaps, late and duplicate packets, flush, counters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.codecs.payload import MAX_MISORDER
from trackmesh.codecs.vp8 import Vp8Depacketizer, Vp8Packetizer


def drain(d: Vp8Depacketizer) -> list[bytes]:
    out = []
    while (frame := d.poll_frame()) is not None:
        out.append(frame.data)
    return out


def test_duplicates_and_late_packets_are_ignored() -> None:
    d = Vp8Depacketizer()
    a, b = Vp8Packetizer().packetize(b"\x10" + bytes(20), 15)
    d.push(a, 65535, 0, False)
    d.push(a, 65535, 0, False)  # duplicate
    d.push(b, 0, 0, True)
    d.push(a, 65535, 0, False)  # late duplicate after the frame ended
    assert drain(d) == [b"\x10" + bytes(20)]
    assert (d.late_packets, d.lost_packets, d.dropped_frames) == (2, 0, 0)


def test_gap_counts_lost_packets_and_drops_the_frame() -> None:
    d = Vp8Depacketizer()
    pk = Vp8Packetizer()
    a, _, c = pk.packetize(b"\x10" + bytes(20), 11)
    (single,) = pk.packetize(b"\x11\x01", 100)
    d.push(a, 10, 0, False)
    d.push(c, 12, 0, True)
    d.push(single, 13, 3000, True)
    assert drain(d) == [b"\x11\x01"]
    assert (d.lost_packets, d.dropped_frames, d.frames) == (1, 1, 1)


def test_sequence_restart_far_behind_is_a_new_start() -> None:
    d = Vp8Depacketizer()
    (p,) = Vp8Packetizer().packetize(b"\x10\x00", 100)
    d.push(p, 5000, 0, True)
    d.push(p, 5000 - MAX_MISORDER - 1, 3000, True)
    assert len(drain(d)) == 2 and d.late_packets == 0


def test_flush_drops_a_frame_without_its_marker() -> None:
    d = Vp8Depacketizer()
    a, _ = Vp8Packetizer().packetize(b"\x10" + bytes(20), 15)
    d.push(a, 1, 0, False)
    d.flush()
    assert drain(d) == [] and d.dropped_frames == 1


@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(0, 0xFFFF), st.integers(0, 3), st.booleans())))
def test_any_sequence_never_raises(packets: list[tuple[bytes, int, int, bool]]) -> None:
    d = Vp8Depacketizer()
    for payload, seq, ts, marker in packets:
        d.push(payload, seq, ts, marker)
    d.flush()
    assert len(drain(d)) == d.frames
