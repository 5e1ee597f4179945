"""Where a standalone node sends a room's new viewer with ``--room-spread K`` (runtime/spread_routing.py)."""

from __future__ import annotations

from trackmesh.runtime.spread_routing import SpreadRouting


def test_below_k_sessions_viewers_join_the_rooms_worker_then_the_least_busy_one_home_on_ties() -> None:
    routing = SpreadRouting(k=2, workers=3)
    routing.reported([{"big": 1}, {}, {"other": 1}])
    assert routing.viewer("big", 0) == 0  # 1 session < K: home
    # Now 2 sessions: worker 1 is idle; then 0 and 1 have... 2 and 1, so 1 again; then ties go home.
    assert routing.viewer("big", 0) == 1
    assert routing.viewer("big", 0) == 1
    assert routing.viewer("big", 0) == 2  # 2, 2, 1: the least busy
    assert routing.viewer("big", 0) == 0  # 2, 2, 2: home on ties
    assert routing.spread_viewers == 3
    assert routing.sessions("big") == 6


def test_reports_replace_the_counts_and_a_worker_that_did_not_answer_keeps_its_own() -> None:
    routing = SpreadRouting(k=1, workers=2)
    routing.reported([{"r": 5}, {"r": 1}])
    assert routing.viewer("r", 0) == 1
    routing.reported([{"r": 1}, None])  # worker 1 did not answer: 2 sessions counted there still
    assert routing.sessions("r") == 1
    assert routing.viewer("r", 0) == 0
    assert routing.viewer("r", 0) == 0  # 2, 2: home
    assert routing.viewer("unknown", 1) == 1  # a room with no session yet: its home
