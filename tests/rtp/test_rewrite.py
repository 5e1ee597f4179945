from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.rtp.rewrite import SeqTsRewriter, SeqUnwrapper, extend_seq, extend_ts


def test_extend_seq_wraps_both_ways() -> None:
    assert extend_seq(65535, 0) == 65536
    assert extend_seq(65536, 65535) == 65535
    assert extend_seq(65536 + 10, 5) == 65536 + 5
    assert extend_seq(100, 100 + 0x7FFF) == 100 + 0x7FFF
    assert extend_ts(0xFFFFFFF0, 0x10) == 0x100000010
    assert extend_ts(0x100000010, 0xFFFFFFF0) == 0xFFFFFFF0


def test_unwrapper_monotonic_over_wrap() -> None:
    u = SeqUnwrapper()
    seqs = [65533, 65535, 65534, 0, 1, 2]
    ext = [u.unwrap(s) for s in seqs]
    assert ext == [65536 + 65533, 65536 + 65535, 65536 + 65534, 131072, 131073, 131074]
    assert u.peek(65000) < u.highest


def test_first_source_passes_through() -> None:
    rw = SeqTsRewriter(90000)
    assert rw.rewrite(1, 100, 5000, 0.0) == (100, 5000)
    assert rw.rewrite(1, 101, 8000, 0.033) == (101, 8000)
    assert rw.last_seq == 101


def test_initial_values() -> None:
    rw = SeqTsRewriter(90000, initial_seq=7, initial_ts=1000)
    assert rw.rewrite(1, 500, 90000, 0.0) == (7, 1000)
    assert rw.rewrite(1, 501, 93000, 0.0) == (8, 4000)


def test_switch_is_continuous_and_timestamp_advances_by_wall_time() -> None:
    rw = SeqTsRewriter(90000)
    rw.rewrite(1, 100, 5000, 0.0)
    rw.rewrite(1, 101, 8000, 1.0)
    # New source with unrelated numbers, 100 ms after the last forwarded packet.
    assert rw.rewrite(2, 40000, 123456789, 1.1) == (102, 8000 + 9000)
    assert rw.rewrite(2, 40001, 123456789 + 3000, 1.13) == (103, 8000 + 12000)
    assert rw.switches == 2
    # Packet from the new source older than the switch point is dropped.
    assert rw.rewrite(2, 39999, 123456789 - 3000, 1.14) is None
    assert rw.dropped == 1


def test_switch_with_zero_elapsed_still_increases_timestamp() -> None:
    rw = SeqTsRewriter(48000)
    rw.rewrite(1, 1, 960, 5.0)
    seq, ts = rw.rewrite(2, 9, 0, 5.0) or (0, 0)
    assert (seq, ts) == (2, 961)


def test_reordering_within_source_is_consistent() -> None:
    rw = SeqTsRewriter(90000)
    rw.rewrite(1, 10, 0, 0.0)
    rw.rewrite(2, 500, 1000, 0.5)  # out seq 11
    assert rw.rewrite(2, 503, 1000, 0.6) == (14, 45000)
    assert rw.rewrite(2, 501, 1000, 0.6) == (12, 45000)
    assert rw.rewrite(2, 502, 1000, 0.6) == (13, 45000)
    # Retransmission maps to the same outgoing number.
    assert rw.rewrite(2, 501, 1000, 0.7) == (12, 45000)


def test_wraparound_of_input_and_output() -> None:
    rw = SeqTsRewriter(90000, initial_seq=65534, initial_ts=0xFFFFFF00)
    assert rw.rewrite(1, 65535, 0xFFFFFFFF, 0.0) == (65534, 0xFFFFFF00)
    assert rw.rewrite(1, 0, 0x100 + 0xFF, 0.01) == (65535, 0x1FF + 0xFFFFFF01 - 2**32)
    assert rw.rewrite(1, 1, 0x1000, 0.02) == (0, (0x1000 + 0xFFFFFF01 - 0x100000000) & 0xFFFFFFFF)
    # Switch across the output wrap.
    out = rw.rewrite(2, 30000, 7, 0.03)
    assert out is not None and out[0] == 1


def test_long_pause_is_capped() -> None:
    rw = SeqTsRewriter(1000, max_ts_gap=2.0)
    rw.rewrite(1, 0, 0, 0.0)
    assert rw.rewrite(2, 0, 0, 600.0) == (1, 2000)


@given(
    st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 40), st.floats(0.0, 0.5)),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_property_outgoing_contiguous_and_monotonic(
    steps: list[tuple[int, int, float]], seq0: int, ts0: int
) -> None:
    """In-order packets of switching sources give +1 seqs and strictly increasing timestamps."""
    rw = SeqTsRewriter(90000)
    seqs = {1: seq0, 2: (seq0 * 7) & 0xFFFF, 3: 65530}
    tss = {1: ts0, 2: (ts0 * 13) & 0xFFFFFFFF, 3: 0xFFFFFFF0}
    now = 0.0
    last: tuple[int, int] | None = None
    ext_ts = 0
    for src, count, dt in steps:
        for _ in range(count):
            now += dt / count
            seqs[src] = (seqs[src] + 1) & 0xFFFF
            tss[src] = (tss[src] + 3000) & 0xFFFFFFFF
            out = rw.rewrite(src, seqs[src], tss[src], now)
            assert out is not None
            if last is not None:
                assert out[0] == (last[0] + 1) & 0xFFFF
                step = (out[1] - last[1]) & 0xFFFFFFFF
                assert 0 < step < 2**31
                ext_ts += step
            last = out
