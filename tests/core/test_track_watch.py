"""TrackWatch (core/track_watch.py): mute and layer reports for the event log, on a virtual clock."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.core.ids import SessionId
from trackmesh.core.track_watch import LAYER_SETTLE, MIN_INTERVAL, MUTE_AFTER, TrackWatch

S = SessionId(7)


def test_a_track_that_stops_sending_is_muted_and_its_next_packet_unmutes_it() -> None:
    w = TrackWatch()
    assert w.published(0.0, S, "mic", 0) is None
    assert w.published(1.0, S, "mic", 50) is None
    reports = {t: w.published(float(t), S, "mic", 50) for t in range(2, 20)}  # no packet after t=1
    assert [t for t, r in reports.items() if r is not None] == [int(1 + MUTE_AFTER)]
    assert reports[int(1 + MUTE_AFTER)] is True
    assert w.published(20.0, S, "mic", 51) is False  # unmuted at once (the last report is > 5 s old)
    assert w.published(21.0, S, "mic", 52) is None


def test_a_track_that_never_sent_is_not_muted() -> None:
    w = TrackWatch()
    assert all(w.published(float(t), S, "cam", 0) is None for t in range(30))


def test_a_flapping_track_is_reported_at_most_once_per_interval_and_where_it_settled() -> None:
    w = TrackWatch()
    w.published(0.0, S, "mic", 1)
    packets, reports = 1, []
    # Sends for a second, stops for 4 s (muted each time), over 60 s.
    for t in range(1, 61):
        if t % 5 == 0:
            packets += 1
        r = w.published(float(t), S, "mic", packets)
        if r is not None:
            reports.append((t, r))
    times = [t for t, _ in reports]
    assert all(b - a >= MIN_INTERVAL for a, b in itertools.pairwise(times))
    assert [r for _, r in reports] == [r % 2 == 0 for r in range(len(reports))]  # alternates, starting muted
    assert len(reports) <= 60 / MIN_INTERVAL


def test_layer_changes_are_reported_once_settled_and_the_first_layer_is_the_baseline() -> None:
    w = TrackWatch()
    assert w.forwarded(0.0, S, "video_0", (0, 2)) is None  # baseline
    assert w.forwarded(1.0, S, "video_0", (2, 2)) is None  # not settled yet
    assert w.forwarded(1.0 + LAYER_SETTLE, S, "video_0", (2, 2)) == (2, 2)
    assert w.forwarded(10.0, S, "video_0", (2, 2)) is None
    # A brief dip that comes back before it settles is not an event.
    assert w.forwarded(11.0, S, "video_0", (1, 2)) is None
    assert w.forwarded(12.0, S, "video_0", (2, 2)) is None
    assert w.forwarded(30.0, S, "video_0", (2, 2)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 3.0), st.integers(0, 2), st.integers(0, 2)), max_size=200))
def test_layer_reports_never_come_faster_than_the_interval(steps: list[tuple[float, int, int]]) -> None:
    w = TrackWatch()
    now, last = 0.0, None
    reported: list[float] = []
    w.forwarded(now, S, "v", (0, 0))
    for dt, s, t in steps:
        now += dt
        got = w.forwarded(now, S, "v", (s, t))
        if got is not None:
            assert got == (s, t) and got != last
            if reported:
                assert now - reported[-1] >= MIN_INTERVAL
            reported.append(now)
            last = got


def test_gone_tracks_and_sessions_are_forgotten() -> None:
    w = TrackWatch()
    w.published(0.0, S, "a", 1)
    w.published(0.0, S, "b", 1)
    w.forwarded(0.0, S, "v", (0, 0))
    w.forwarded(0.0, SessionId(8), "v", (0, 0))
    assert len(w) == 4
    w.keep(S, {"a"}, set())
    assert len(w) == 2
    w.forget(S)
    w.forget(SessionId(8))
    assert len(w) == 0
