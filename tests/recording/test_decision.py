"""The cluster-wide recording decision (recording/decision.py), in memory: several members share
one store of entries, as the registry gives them; each takes API calls and cleans up its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.recording.decision import Decision, Recorder, RoomDecisions, decision_key, parse_key, recorder_key


class Cluster:
    """Members over one registry: every put and delete reaches every member (in order), and
    each member deletes its own garbage, as runtime/recording.py does."""

    def __init__(self, *names: str) -> None:
        self.members = {n: RoomDecisions(n) for n in names}
        self.store: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> None:
        self.store[key] = value
        for m in self.members.values():
            m.on_put(key, value)

    def delete(self, key: str) -> None:
        self.store.pop(key, None)
        for m in self.members.values():
            m.on_delete(key)

    def settle(self, room: str) -> None:
        changed = True
        while changed:
            changed = False
            for name, m in self.members.items():
                if m.garbage(room):
                    self.delete(decision_key(room, name))
                    changed = True

    def start(self, name: str, room: str, peers: list[str] | None, wall: float, session: str) -> Decision:
        d = self.members[name].start(room, "", peers, wall, session)
        self.put(decision_key(room, name), d.encode())
        self.settle(room)
        return d

    def stop(self, name: str, room: str, wall: float) -> Decision | None:
        res = self.members[name].stop(room, wall)
        if res is None:
            return None
        self.put(decision_key(room, name), res[0].encode())
        self.settle(room)
        return res[1]

    def effective(self, room: str) -> set[Decision | None]:
        return {m.effective(room) for m in self.members.values()}


def test_a_start_on_one_node_is_the_rooms_recording_on_every_node() -> None:
    c = Cluster("1.0", "2.0", "3.0")
    d = c.start("1.0", "demo", None, 100.0, "S1")
    assert c.effective("demo") == {d}
    assert d.on and d.peers is None and d.session == "S1"


def test_a_second_start_elsewhere_joins_the_session_adds_peers_and_replaces_the_entry() -> None:
    c = Cluster("1.0", "2.0")
    c.start("1.0", "demo", ["alice"], 100.0, "S1")
    d2 = c.start("2.0", "demo", ["bob"], 50.0, "S2")  # a clock behind: still newer than what it saw
    assert d2.session == "S1" and d2.peers == ("alice", "bob") and d2.stamp > 100.0
    assert c.effective("demo") == {d2}
    assert list(c.store) == [decision_key("demo", "2.0")]  # the first one's entry is gone
    d3 = c.start("1.0", "demo", None, 200.0, "S3")
    assert d3.peers is None and d3.session == "S1"


def test_a_stop_on_another_node_ends_it_everywhere_and_leaves_no_entry() -> None:
    c = Cluster("1.0", "2.0", "3.0")
    started = c.start("1.0", "demo", None, 100.0, "S1")
    assert c.stop("3.0", "demo", 101.0) == started
    assert c.effective("demo") == {None}
    assert c.store == {}
    assert c.stop("2.0", "demo", 102.0) is None  # not recording: the API answers 404
    again = c.start("2.0", "demo", None, 103.0, "S2")
    assert again.session == "S2" and c.effective("demo") == {again}


def test_a_stop_waits_for_the_entries_it_supersedes_before_it_goes() -> None:
    a, b = RoomDecisions("1.0"), RoomDecisions("2.0")
    on = a.start("demo", "", None, 100.0, "S1")
    for m in (a, b):
        m.on_put(decision_key("demo", "1.0"), on.encode())
    stop, _ = b.stop("demo", 101.0) or (None, None)
    assert stop is not None
    b.on_put(decision_key("demo", "2.0"), stop.encode())
    assert b.effective("demo") is None
    assert not b.garbage("demo")  # the start it supersedes is still there (node 1 has not seen it)
    a.on_put(decision_key("demo", "2.0"), stop.encode())
    assert a.garbage("demo")  # node 1's start is superseded: node 1 deletes it
    b.on_delete(decision_key("demo", "1.0"))
    assert b.garbage("demo")  # now the stop has nothing left to supersede


def test_the_owner_leaving_the_cluster_ends_its_recording() -> None:
    c = Cluster("1.0", "2.0")
    c.start("1.0", "demo", None, 100.0, "S1")
    c.delete(decision_key("demo", "1.0"))  # the registry drops a lost member's entries
    assert c.effective("demo") == {None}


def test_rooms_are_independent_and_names_are_encoded() -> None:
    c = Cluster("1.0", "2.0")
    a = c.start("1.0", "a/../b", None, 100.0, "S1")
    c.start("2.0", "other", ["x"], 100.0, "S2")
    c.stop("2.0", "other", 101.0)
    assert c.effective("a/../b") == {a} and c.effective("other") == {None}
    assert parse_key(decision_key("a/../b", "1.0")) == ("a/../b", "d", "1.0")


def test_recorders_say_which_nodes_record() -> None:
    m = RoomDecisions("1.0")
    m.on_put(recorder_key("demo", "513.1"), Recorder("513.1", 513, 1, "S1", 2).encode())
    m.on_put(recorder_key("demo", "257.0"), Recorder("257.0", 257, 0, "S1", 1).encode())
    assert [r.view() for r in m.room_recorders("demo")] == [
        {"node": 257, "zone": 1, "worker": 0, "session": "S1", "tracks": 1},
        {"node": 513, "zone": 2, "worker": 1, "session": "S1", "tracks": 2},
    ]
    m.on_delete(recorder_key("demo", "257.0"))
    assert [r.node for r in m.room_recorders("demo")] == [513]


def test_bad_entries_are_dropped_and_counted() -> None:
    m = RoomDecisions("1.0")
    bad = [
        ("rec/demo/d/2.0", b"not json"),
        ("rec/demo/d/2.0", b"[1]"),
        ("rec/demo/d/2.0", b'{"on": "yes", "stamp": 1, "app": "", "session": "", "peers": null}'),
        ("rec/demo/d/2.0", b'{"on": true, "stamp": 1, "app": "", "session": "", "peers": [1]}'),
        ("rec/demo/n/2.0", b'{"node": "x", "worker": 0, "session": "", "tracks": 0}'),
        ("rec/demo/x/2.0", b"{}"),
        ("rec/demo", b"{}"),
    ]
    for key, value in bad:
        assert m.on_put(key, value) is None
    assert m.bad_entries == len(bad)
    assert m.effective("demo") is None and m.room_recorders("demo") == []
    assert m.on_delete("rec/nonsense") is None


@given(st.binary(max_size=200), st.text(max_size=30))
def test_any_bytes_under_rec_are_taken_or_dropped_never_raised(value: bytes, key_tail: str) -> None:
    m = RoomDecisions("1.0")
    m.on_put("rec/" + key_tail, value)
    m.on_put("rec/r/d/x", value)
    m.on_put("rec/r/n/x", value)
    m.on_delete("rec/" + key_tail)
    m.effective("r")


@given(
    st.lists(
        st.tuples(st.sampled_from(["1.0", "2.0", "3.0"]), st.booleans(), st.floats(0, 1000)),
        min_size=1,
        max_size=12,
    )
)
def test_any_sequence_of_calls_ends_as_the_last_call_says_with_at_most_one_entry(
    calls: list[tuple[str, bool, float]],
) -> None:
    c = Cluster("1.0", "2.0", "3.0")
    last: bool | None = None
    for i, (name, start, wall) in enumerate(calls):
        if start:
            c.start(name, "r", None, wall, f"S{i}")
            last = True
        elif c.stop(name, "r", wall) is not None:
            last = False
    (effective,) = c.effective("r")
    assert (effective is not None) == bool(last)
    assert len(c.store) <= 1
