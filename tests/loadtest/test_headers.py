"""Header-only subscribers and the verification sample of the load generator (no network)."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.loadtest.headers import HeaderSink, VerifyPolicy, pooled_latencies
from trackmesh.loadtest.recording import AUDIO, VIDEO
from trackmesh.rtp.packet import build_rtp_packet

PT = {111: AUDIO, 96: VIDEO}
SRTP_TAG = bytes(16)  # what follows the header is never read: an SRTP payload and tag stand in as zeros


def _feed(sink: HeaderSink, pt: int, seq: int, ssrc: int, now: float, size: int = 100) -> None:
    pkt = build_rtp_packet(pt, seq & 0xFFFF, 1234, ssrc, bytes(size)) + SRTP_TAG
    buf = bytearray(2048)
    buf[: len(pkt)] = pkt
    sink.on_header(buf, len(pkt), now)


def test_default_policy_verifies_everyone_up_to_50_then_every_10th() -> None:
    p = VerifyPolicy()
    assert sum(p.verified(i) for i in range(50)) == 50
    assert sum(p.verified(i) for i in range(375)) == 83
    assert sum(p.verified(i) for i in range(1000)) == 145
    for n in (20, 51, 200, 375, 1000, 5000):
        k = sum(p.verified(i) for i in range(n))
        assert k >= min(n, 20) and k >= 0.1 * n
    # Beyond 50, each verified subscriber stands for itself and the 9 that follow it.
    assert [p.group(i) for i in (0, 49, 50, 55, 59, 60, 61)] == [0, 49, 50, 50, 50, 60, 60]
    assert all(p.verified(p.group(i)) for i in range(500))


def test_policy_extremes_and_bad_values() -> None:
    assert all(VerifyPolicy(0, 1.0).verified(i) for i in range(100))
    assert [i for i in range(100) if VerifyPolicy(3, 0.0).verified(i)] == [0, 1, 2]
    assert [i for i in range(10) if VerifyPolicy(1, 0.5).verified(i)] == [0, 1, 3, 5, 7, 9]
    with pytest.raises(ValueError):
        VerifyPolicy(-1, 0.1)
    with pytest.raises(ValueError):
        VerifyPolicy(10, 1.5)


def test_pooled_latencies_weigh_each_sample_by_the_subscribers_it_stands_for() -> None:
    early = array("f", [1.0, 2.0])
    late = array("f", [10.0])
    assert pooled_latencies([(early, 1), (late, 3)]) == [1.0, 2.0, 10.0, 10.0, 10.0]
    assert pooled_latencies([]) == []


def test_counts_loss_duplicates_reordering_and_wraparound_from_the_header() -> None:
    sink = HeaderSink(PT, (AUDIO, VIDEO))
    t = 100.0
    _feed(sink, 111, 10, 0xA, t)
    _feed(sink, 96, 65530, 0xB, t)
    sink.open_window(t + 0.01)
    seqs = [65531, 65532, 65534, 65535, 0, 2, 1, 3]  # 65533 lost, 1 late (reordered), across the wrap
    for i, s in enumerate(seqs):
        _feed(sink, 96, s, 0xB, t + 0.02 + i * 0.01)
    _feed(sink, 96, 0, 0xB, t + 0.2)  # a duplicate
    for i in range(11, 21):
        _feed(sink, 111, i, 0xA, t + 0.02 + i * 0.01)
    _feed(sink, 111, 7, 0xA, t + 0.3)  # older than the stream's first packet
    sink.cut()
    _feed(sink, 111, 21, 0xA, t + 0.4)  # after the cut: not judged yet
    assert sink.duplicated == 1 and sink.reordered == 2
    assert sorted(sink.loss_streams()) == [0.0, pytest.approx(1 / 9)]
    assert sink.loss_total() == pytest.approx(1 / 19)
    assert sink.window_received() == 8 + 10 + 1 and sink.bytes > 0
    assert sink.first_arrival == t and sink.all_streams_at() == t
    # Silences: the video stream's last new packet at t + 0.09 (a duplicate is not news), closing at t + 1.0.
    assert sink.close_window(t + 1.0) == pytest.approx(0.91)
    assert sink.max_gap == pytest.approx(0.91)


def test_an_expected_stream_never_heard_is_total_loss_and_a_whole_window_of_silence() -> None:
    sink = HeaderSink(PT, (AUDIO, VIDEO))
    sink.open_window(0.0)
    for i in range(50):
        _feed(sink, 111, i, 0xA, 0.02 * i)
    sink.cut()
    assert sink.all_streams_at() is None
    assert sink.loss_streams() == [0.0, 1.0]
    assert sink.loss_total() == 1.0
    assert sink.close_window(2.0) == 2.0
    _feed(sink, 100, 1, 0xC, 2.0)  # a payload type we did not offer (RTX, FEC): counted apart
    assert sink.other_pt == 1 and len(sink.streams) == 1


def test_windows_trim_the_bitmaps_and_judge_only_their_own_sequence_numbers() -> None:
    sink = HeaderSink({96: VIDEO}, (VIDEO,))
    for i in range(20000):
        if i != 100:  # lost before the window: not this window's loss
            _feed(sink, 96, i, 0xB, i * 0.001)
    sink.open_window(20.0)
    assert len(sink.streams[0xB].seen) < 10000
    for i in range(20000, 20100):
        if i % 10 != 0:
            _feed(sink, 96, i, 0xB, 20.0 + (i - 20000) * 0.001)
    sink.cut()
    assert sink.loss_total() == pytest.approx(10 / 100)  # 20000, 20010, ..., 20090 of 20000..20099


@given(
    start=st.integers(0, 0xFFFF),
    n=st.integers(2, 400),
    lost=st.sets(st.integers(0, 398), max_size=100),
)
def test_loss_is_the_share_of_sequence_numbers_missing_whatever_the_start(start: int, n: int, lost: set[int]) -> None:
    sink = HeaderSink({96: VIDEO}, (VIDEO,))
    _feed(sink, 96, start, 1, 0.0)  # heard before the window opens
    sink.open_window(0.5)
    dropped = {i for i in lost if i < n - 1}  # the last one arrives: the range ends there
    for i in range(1, n + 1):
        if i - 1 not in dropped:
            _feed(sink, 96, start + i, 1, 1.0 + i * 0.001)
    sink.cut()
    assert sink.loss_total() == pytest.approx(len(dropped) / n)
    assert sink.duplicated == 0 and sink.reordered == 0


@given(st.binary(min_size=12, max_size=64))
def test_any_header_bytes_are_counted_never_raise(data: bytes) -> None:
    sink = HeaderSink(PT, (AUDIO, VIDEO))
    buf = bytearray(2048)
    buf[: len(data)] = data
    sink.on_header(buf, len(data), 1.0)
    sink.on_header(buf, len(data), 1.1)
    assert sink.received + sink.other_pt + sink.duplicated + sink.reordered == 2
