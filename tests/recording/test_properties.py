"""Hypothesis properties of the recorder's parsers and buffers: bad input never raises, and
what comes out keeps its promises (order, no duplicates, strictly increasing sample times)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.recording.clock import PeerClock, TimestampUnwrapper
from trackmesh.recording.frames import ParameterSets, frame_size, opus_channels, plausible
from trackmesh.recording.reorder import ReorderBuffer
from trackmesh.recording.track import Sample, SegmentEnd, SegmentStart, TrackRecorder

CODECS = ["vp8", "vp9", "h264", "h265", "av1", "opus", "pcmu", "weird"]


@given(st.sampled_from(CODECS), st.binary(max_size=64), st.booleans())
def test_frame_checks_never_raise(codec: str, data: bytes, key: bool) -> None:
    assert isinstance(plausible(codec, data, key), bool)
    w, h = frame_size(codec, data)
    assert w >= 0 and h >= 0
    assert opus_channels(data) in (1, 2)
    for hevc in (False, True):
        out = ParameterSets(hevc).complete_keyframe(data)
        assert out is None or data in out


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 0.5)), max_size=300))
def test_reorder_buffer_releases_in_order_without_duplicates(arrivals: list[tuple[int, float]]) -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(0.2)
    now = 0.0
    out: list[int] = []
    for seq, step in arrivals:
        now += step
        buf.push(now, seq, seq)
        while (got := buf.pop(now)) is not None:
            out.append(got[0])
    out.extend(s for s, _ in buf.drain())
    assert len(buf) == 0
    # Released items follow sequence order (mod 2^16) except across a restart of the numbering,
    # and an item is never released twice in a row.
    assert all(a != b for a, b in itertools.pairwise(out))


@given(st.integers(0, 0xFFFF), st.integers(1, 200), st.lists(st.integers(0, 199), max_size=60), st.data())
def test_reordered_packets_come_out_in_order_and_losses_are_skipped(
    base: int, n: int, swaps: list[int], data: st.DataObject
) -> None:
    order = list(range(n))
    for i in swaps:  # local reordering: swap neighbours
        if i + 1 < n:
            order[i], order[i + 1] = order[i + 1], order[i]
    lost = set(data.draw(st.lists(st.integers(1, max(1, n - 2)), max_size=5)))
    buf: ReorderBuffer[int] = ReorderBuffer(0.2)
    out: list[int] = []
    now = 0.0
    for i in order:
        now += 0.0005  # all within the reorder wait: only the lost ones are ever given up
        if i in lost:
            continue
        buf.push(now, (base + i) & 0xFFFF, i)
        while (got := buf.pop(now)) is not None:
            out.append(got[1])
    now += 1.0
    while (got := buf.pop(now)) is not None:
        out.append(got[1])
    # The first packet to arrive starts the numbering: anything before it is late (dropped).
    first = next((i for i in order if i not in lost), n)
    assert out == [i for i in range(n) if i not in lost and i >= first]
    assert buf.skipped == len([i for i in lost if first < i < max(out, default=-1)])


@given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=200))
def test_unwrapped_timestamps_move_by_the_shortest_step(stamps: list[int]) -> None:
    u = TimestampUnwrapper()
    prev = u.unwrap(stamps[0])
    for ts in stamps[1:]:
        cur = u.unwrap(ts)
        assert (cur - ts) % 2**32 == 0
        assert -(2**31) <= cur - prev <= 2**31
        prev = cur


packets = st.lists(
    st.tuples(
        st.sampled_from(["vp8", "VP9", "H264", "opus", "av1"]),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.booleans(),
        st.binary(min_size=0, max_size=40),
        st.integers(0, 2),
    ),
    max_size=120,
)


@settings(max_examples=150)
@given(packets, st.booleans())
def test_the_recorder_survives_any_packets_and_keeps_its_files_well_formed(
    pkts: list[tuple[str, int, int, bool, bytes, int]], video: bool
) -> None:
    rec = TrackRecorder(video, PeerClock(), max_segment=0.5, reorder_wait=0.05)
    now = 1000.0
    for codec, seq, ts, marker, payload, spatial in pkts:
        now += 0.01
        rec.on_packet(now, codec, seq, ts, marker, payload, spatial)
        rec.on_sender_report(now, spatial, ts, (3_000_000_000 << 32) + seq)
        rec.handle_timeout(now + 0.1)
    rec.stop(now + 1)
    open_segment = False
    last = -1
    while (out := rec.poll()) is not None:
        if isinstance(out, SegmentStart):
            assert not open_segment
            open_segment, last = True, -1
        elif isinstance(out, Sample):
            assert open_segment and out.pts > last and out.data
            assert last >= 0 or out.keyframe  # a segment starts on a key frame
            last = out.pts
        elif isinstance(out, SegmentEnd):
            assert open_segment
            open_segment = False
    assert not open_segment
