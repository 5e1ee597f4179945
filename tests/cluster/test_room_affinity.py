"""RoomAffinity (runtime/cluster_node.py): the routing table that keeps a room on one worker of
its node, learnt from routing decisions and the workers' room reports; no process, no clock."""

from __future__ import annotations

from trackmesh.runtime.cluster_node import AFFINITY_GRACE, RoomAffinity


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
