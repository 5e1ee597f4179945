"""RoomAffinity (runtime/cluster_node.py): the routing table that keeps a room on one worker of
its node, learnt from routing decisions and the workers' room reports; no process, no clock."""

from __future__ import annotations

import time

from trackmesh.config import NodeConfig
from trackmesh.runtime.cluster_node import AFFINITY_GRACE, ClusterMediaNode, RoomAffinity


def test_a_routed_room_stays_with_its_worker_until_reported_empty() -> None:
    a = RoomAffinity()
    assert a.get("r") is None
    a.routed("r", 1, now=10.0)
    assert a.get("r") == 1
    # The worker has not joined the session yet: its report misses the room, the routing holds.
    a.reported({0: [], 1: []}, now=10.5)
    assert a.get("r") == 1
    # Once it reports the room, the report keeps it there past the grace.
    a.reported({0: [], 1: ["r"]}, now=11.0)
    a.reported({0: [], 1: ["r"]}, now=10.0 + AFFINITY_GRACE + 1)
    assert a.get("r") == 1
    # The room emptied on that worker (and nothing was routed lately): forgotten.
    a.reported({0: [], 1: []}, now=10.0 + AFFINITY_GRACE + 2)
    assert a.get("r") is None


def test_a_room_reported_by_two_workers_stays_where_it_was_routed() -> None:
    a = RoomAffinity()
    a.routed("r", 1, now=0.0)
    a.reported({0: ["r"], 1: ["r"]}, now=1.0)
    assert a.get("r") == 1
    a.reported({0: ["r"], 1: ["r"]}, now=AFFINITY_GRACE + 5)
    assert a.get("r") == 1
    # Never routed here (a node restart): the lowest worker index wins, deterministically.
    b = RoomAffinity()
    b.reported({1: ["q"], 0: ["q"]}, now=0.0)
    assert b.get("q") == 0


def test_reports_with_session_counts_sum_a_spread_rooms_sessions_over_workers() -> None:
    a = RoomAffinity()
    a.routed("r", 0, now=0.0)
    a.joined("r")
    a.joined("r")
    assert a.sessions("r") == 2  # routed, not reported yet
    a.reported({0: {"r": 3, "q": 1}, 1: {"r": 5}}, now=1.0)
    assert a.sessions("r") == 8 and a.sessions("q") == 1 and a.sessions("x") == 0
    assert a.get("r") == 0  # the home worker stays the one it was routed to
    a.reported({0: {"r": 3}, 1: {"r": 5}}, now=AFFINITY_GRACE + 5)
    assert a.get("r") == 0  # ... and the one hosting it after the grace
    a.reported({0: {}, 1: {"r": 4}}, now=AFFINITY_GRACE + 6)
    assert a.get("r") == 1 and a.sessions("r") == 4  # the publisher's worker emptied: the room moves


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index


def _node(workers: int, spread: int) -> ClusterMediaNode:
    node = ClusterMediaNode(NodeConfig(role="media", secret="s" * 16, workers=workers, room_spread=spread))
    node.workers = [_Worker(i) for i in range(workers)]  # type: ignore[misc]
    return node


def test_room_spread_sends_viewers_to_the_least_busy_worker_once_the_room_has_k_sessions() -> None:
    node = _node(3, spread=3)
    home = node.worker_for_room("big").index  # the publisher
    # Below K sessions the viewers join the room's worker, as without --room-spread.
    assert node.worker_for_viewer("big").index == home
    assert node.worker_for_viewer("big").index == home
    # From K on, each viewer goes to the worker with the fewest sessions, counted as they are routed
    # (load reports come once a second, a join storm comes faster), the home worker on ties.
    picked = [node.worker_for_viewer("big").index for _ in range(9)]
    assert picked.count(home) == 1 and all(picked.count(i) == 4 for i in range(3) if i != home), picked
    assert node.spread_viewers == 8
    # Publishers stay on the room's worker, however busy.
    assert node.worker_for_room("big").index == home
    # A report resets the counts to what the workers hold.
    node._sessions = {0: 0, 1: 0, 2: 0}
    node._sessions[home] = 10
    node.affinity.reported({home: {"big": 10}}, now=time.monotonic())
    assert node.worker_for_viewer("big").index != home


def test_without_room_spread_or_with_one_worker_every_viewer_joins_the_rooms_worker() -> None:
    for node in (_node(2, spread=0), _node(1, spread=1)):
        home = node.worker_for_room("r").index
        assert {node.worker_for_viewer("r").index for _ in range(10)} == {home}
        assert node.spread_viewers == 0
    # A room nobody publishes in yet: its first viewer pins it like any first session.
    node = _node(2, spread=1)
    first = node.worker_for_viewer("fresh").index
    assert node.affinity.get("fresh") == first
