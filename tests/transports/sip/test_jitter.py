"""The phone's RTP back in order (transports/sip/jitter.py): reordering, duplicates, loss, wrap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.sip.jitter import Lost, ReorderBuffer


def feed(buf: ReorderBuffer, seqs: list[int]) -> list[bytes | Lost]:
    out: list[bytes | Lost] = []
    for s in seqs:
        out += buf.push(s & 0xFFFF, s.to_bytes(4, "big", signed=True))
    return out


def numbers(out: list[bytes | Lost]) -> list[int | Lost]:
    return [x if isinstance(x, Lost) else int.from_bytes(x, "big", signed=True) for x in out]


def test_in_order_passes_at_once_and_a_swap_is_repaired() -> None:
    buf = ReorderBuffer()
    assert numbers(buf.push(10, (10).to_bytes(4, "big"))) == [10]
    assert numbers(feed(buf, [12])) == []  # 11 is missing: 12 waits
    assert numbers(feed(buf, [11])) == [11, 12]
    assert numbers(feed(buf, [11, 12])) == [] and buf.stats.late == 2  # already released
    assert numbers(feed(buf, [14, 14])) == [] and buf.stats.duplicates == 1


def test_a_gap_becomes_lost_after_depth_packets() -> None:
    buf = ReorderBuffer(depth=3)
    assert numbers(feed(buf, [1, 2, 4, 5, 6])) == [1, 2]
    assert numbers(feed(buf, [7])) == [Lost(1), 4, 5, 6, 7]
    assert buf.stats.lost == 1
    assert numbers(feed(buf, [3])) == []  # too late now


def test_wrap_and_resync() -> None:
    buf = ReorderBuffer()
    assert numbers(feed(buf, [65534, 65535, 65536, 65537])) == [65534, 65535, 65536, 65537]
    out = feed(buf, [40000])  # a restarted phone: resynchronise, no thousands of losses
    assert len(out) == 1 and buf.stats.resyncs == 1 and buf.stats.lost == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(1, 60), st.data())
def test_pairwise_reordering_comes_out_in_order_without_loss(start: int, n: int, data: st.DataObject) -> None:
    seqs = [start + i for i in range(n)]  # across the 16-bit wrap too
    order = list(seqs)
    for i in range(0, n - 1, 2):  # disjoint neighbour pairs, each maybe swapped: displacement 1
        if data.draw(st.booleans()):
            order[i], order[i + 1] = order[i + 1], order[i]
    buf = ReorderBuffer(depth=3)
    out = numbers(feed(buf, order))
    # The first packet to arrive starts the stream (a swapped first pair loses its first packet as late).
    expected = [s for s in seqs if s >= order[0]]
    released = out + numbers(feed(buf, []))
    assert released == expected[: len(released)] and len(expected) - len(released) <= 1
    assert buf.stats.lost == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), max_size=200))
def test_garbage_sequences_never_raise_and_release_each_packet_once(seqs: list[int]) -> None:
    buf = ReorderBuffer()
    out: list[bytes | Lost] = []
    for i, s in enumerate(seqs):
        out += buf.push(s, i.to_bytes(4, "big"))
    payloads = [x for x in out if not isinstance(x, Lost)]
    assert len(payloads) == len(set(payloads))  # never twice
    assert len(buf._waiting) <= buf.depth
