"""Room events derived from Join/Leave, with Stopped after --destroy-room-after of emptiness."""

from __future__ import annotations

from trackmesh.connector.events import AllPeersLeaved, PeerJoined, PeerLeaved, Started, Stopped
from trackmesh.connector.rooms import RoomChange, RoomTracker


def drain(t: RoomTracker) -> list[RoomChange]:
    out = []
    while (c := t.poll_event()) is not None:
        out.append(c)
    return out


def test_lifecycle_and_stop_after_emptiness() -> None:
    t = RoomTracker(destroy_after=120.0)
    t.on_join("", "r", "a", 1, 0.0)
    t.on_join("", "r", "b", 2, 1.0)
    t.on_join("", "r", "b", 2, 1.5)  # a duplicate (at-least-once) derives nothing
    assert [c.event for c in drain(t)] == [Started(), PeerJoined("a"), PeerJoined("b")]
    t.on_leave("", "r", "a", 1, 10.0)
    t.on_leave("", "r", "a", 1, 10.5)
    t.on_leave("", "r", "b", 2, 20.0)
    assert [c.event for c in drain(t)] == [PeerLeaved("a"), PeerLeaved("b"), AllPeersLeaved()]
    assert t.next_deadline() == 140.0
    t.handle_timeout(139.9)
    assert drain(t) == []
    t.handle_timeout(140.0)
    assert drain(t) == [RoomChange("", "r", Stopped())]
    assert t.next_deadline() is None and t.live_rooms == 0


def test_rejoin_before_the_deadline_keeps_the_room() -> None:
    t = RoomTracker(destroy_after=120.0)
    t.on_join("app1", "r", "a", 1, 0.0)
    t.on_leave("app1", "r", "a", 1, 5.0)
    t.on_join("app1", "r", "a", 3, 60.0)
    drain(t)
    assert t.next_deadline() is None
    t.handle_timeout(1000.0)
    assert drain(t) == []
    t.on_leave("app1", "r", "a", 3, 1000.0)
    t.handle_timeout(1120.0)
    assert drain(t)[-1] == RoomChange("app1", "r", Stopped())


def test_apps_do_not_share_rooms_and_restore_resumes_timers() -> None:
    t = RoomTracker(destroy_after=120.0)
    t.on_join("a", "r", "p", 1, 0.0)
    t.on_join("b", "r", "p", 2, 0.0)
    assert [c.event for c in drain(t)].count(Started()) == 2
    t2 = RoomTracker(destroy_after=120.0)
    t2.restore("a", "r", [("p", 1)], None)
    t2.restore("b", "r", [], 50.0)
    assert t2.next_deadline() == 170.0
    t2.handle_timeout(170.0)
    assert drain(t2) == [RoomChange("b", "r", Stopped())]
    assert t2.members("a", "r") == {("p", 1)}
