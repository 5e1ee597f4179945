"""Opt-in per-room metrics (runtime/room_metrics.py, --metrics-room-labels): pure parts, no node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.promtool import PROMTOOL, promtool_problems, sample
from trackmesh.http.exposition import Exposition
from trackmesh.http.metrics import ROOM_COUNTERS, add_room_metrics, merge_rooms
from trackmesh.runtime import room_metrics
from trackmesh.runtime.room_metrics import ROOM_TOTALS, RoomMetrics


def totals(rtp: int = 0, fwd: int = 0, octets: int = 0) -> dict[str, int]:
    return {"rtp_packets_received": rtp, "forwarded_packets": fwd, "forwarded_bytes": octets, "nacks_sent": 99}


def test_the_exposition_and_the_workers_agree_on_the_order_of_the_totals() -> None:
    assert tuple(ROOM_COUNTERS) == ROOM_TOTALS


def test_busiest_rooms_are_kept_and_the_rest_counted() -> None:
    rooms = RoomMetrics(2)
    live = [("a", totals(fwd=5)), ("b", totals(fwd=1)), ("b", totals(fwd=1)), ("c", totals(fwd=9)), (None, totals())]
    snap = rooms.snapshot(live)
    # b has the most sessions; a and c tie on one each, c forwarded more.
    assert snap == {"rooms": [["b", 2, 0, 2, 0], ["c", 1, 0, 9, 0]], "omitted": 1}


def test_a_rooms_totals_keep_its_closed_sessions_while_it_lives_then_it_is_forgotten() -> None:
    rooms = RoomMetrics(10)
    snap = rooms.snapshot([("r", totals(100, 200, 3000)), ("r", totals(1, 2, 3))])
    assert snap["rooms"] == [["r", 2, 101, 202, 3003]]
    rooms.on_closed("r", totals(100, 250, 3500))  # the first session leaves, having counted a bit more
    rooms.on_closed(None, totals(7, 7, 7))  # closed before it joined: in no room
    assert rooms.snapshot([("r", totals(1, 3, 4))])["rooms"] == [["r", 1, 101, 253, 3504]]  # never goes down
    rooms.on_closed("r", totals(1, 3, 4))
    assert rooms.snapshot([]) == {"rooms": [], "omitted": 0}
    assert rooms.retired == {}  # no live session: forgotten at the scrape
    assert rooms.snapshot([("r", totals())])["rooms"] == [["r", 1, 0, 0, 0]]  # a new room of that name


def test_closed_rooms_waiting_for_a_scrape_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(room_metrics, "RETIRED_LIMIT", 3)
    rooms = RoomMetrics(10)
    for i in range(5):
        rooms.on_closed(f"r{i}", totals(1))
    assert list(rooms.retired) == ["r2", "r3", "r4"]  # the oldest went first


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 1000)), max_size=40), st.integers(1, 5))
def test_the_node_keeps_its_busiest_rooms_when_each_room_is_on_one_worker(
    sessions: list[tuple[str, int]], limit: int
) -> None:
    # A room's sessions share one worker (runtime: sessions of a room go to one worker), so each
    # worker's own top-N holds every room of the node's top-N.
    worker_a, worker_b = RoomMetrics(limit), RoomMetrics(limit)
    snaps = [worker_a.snapshot((r, totals(fwd=f)) for r, f in sessions if r < "e"),
             worker_b.snapshot((r, totals(fwd=f)) for r, f in sessions if r >= "e")]  # fmt: skip
    merged = merge_rooms(snaps, limit)
    everything = RoomMetrics(len(sessions) + 1).snapshot((r, totals(fwd=f)) for r, f in sessions)["rooms"]
    assert merged["rooms"] == everything[:limit]
    assert len(merged["rooms"]) + merged["omitted"] == len({r for r, _ in sessions})


def test_merge_sums_a_room_across_workers() -> None:
    workers = [{"rooms": [["x", 1, 1, 2, 3]], "omitted": 2}, {"rooms": [["x", 2, 10, 20, 30]], "omitted": 0}]
    merged = merge_rooms(workers, 5)
    assert merged == {"rooms": [["x", 3, 11, 22, 33]], "omitted": 2}


def test_room_series_are_escaped_and_pass_promtool() -> None:
    exp = Exposition()
    odd = 'a "quoted" \\ room\n<img src=x onerror=alert(1)>'.replace("\n", " ")
    add_room_metrics(exp, {"rooms": [[odd, 2, 10, 20, 300], ["plain", 1, 0, 0, 0]], "omitted": 4})
    text = exp.render()[0]
    assert sample(text, "trackmesh_room_sessions", room=odd.replace("\\", "\\\\").replace('"', '\\"')) == 2
    assert sample(text, "trackmesh_room_forwarded_bytes_total", room="plain") == 0
    assert sample(text, "trackmesh_room_labels_omitted") == 4
    if PROMTOOL is not None:
        assert promtool_problems(text) == ""
