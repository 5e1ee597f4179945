"""ZenohRegistry across real zenoh sessions on 127.0.0.1 (private netns only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackmesh.cluster.zenoh_registry import ZenohRegistry

from .conftest import Pump, endpoint, free_port, wait_for


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, bytes | None]] = []
        self.state: dict[str, bytes] = {}
        self.when: dict[str, float] = {}  # key -> the now of its latest change

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.log.append(("put", key, value))
        self.state[key] = value
        self.when[key] = now

    def on_registry_delete(self, now: float, key: str) -> None:
        self.log.append(("del", key, None))
        self.state.pop(key, None)
        self.when[key] = now


def linked(*ns) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: all(len(n.peers()) >= len(ns) - 1 for n in ns))


def test_put_watch_delete_across_nodes_with_replay(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    linked(a, b)
    pa, pb = Pump(), Pump()
    # B's clock reads 42.0: what reaches B from A is stamped with it when B's loop runs it.
    ra, rb = ZenohRegistry(a.session, pa, time.monotonic), ZenohRegistry(b.session, pb, lambda: 42.0)
    ra.put(0.0, "r/room1/p/alice/1", b"A1")
    ra.put(0.0, "r/room2/p/zed/2", b"other room")
    # Replay: B watches after A's put and receives it.
    w = Recorder()
    rb.watch(0.0, "r/room1/", w)
    pb.until(lambda: w.state == {"r/room1/p/alice/1": b"A1"})
    assert w.when == {"r/room1/p/alice/1": 42.0}
    # Changes after the watch: put, update, delete.
    ra.put(0.0, "r/room1/t/alice/cam/1", b"T")
    ra.put(0.0, "r/room1/p/alice/1", b"A1v2")
    pb.until(lambda: w.state == {"r/room1/p/alice/1": b"A1v2", "r/room1/t/alice/cam/1": b"T"})
    ra.delete(0.0, "r/room1/t/alice/cam/1")
    pb.until(lambda: "r/room1/t/alice/cam/1" not in w.state)
    assert w.when["r/room1/t/alice/cam/1"] == 42.0
    # B's own entries reach B's watcher synchronously, and A's watcher later.
    wa = Recorder()
    ra.watch(3.0, "r/room1/", wa)
    assert wa.state == {"r/room1/p/alice/1": b"A1v2"}  # own entries: synchronous replay
    assert wa.when == {"r/room1/p/alice/1": 3.0}  # ...with the watch's now
    rb.put(7.0, "r/room1/p/bob/3", b"B")
    assert w.state["r/room1/p/bob/3"] == b"B"
    assert w.when["r/room1/p/bob/3"] == 7.0  # synchronous: the put's now
    pa.until(lambda: wa.state.get("r/room1/p/bob/3") == b"B")
    pb.drain(0.2)
    assert all(key.startswith("r/room1/") for _, key, _ in w.log)
    # Identical re-puts are not reported again.
    n = len(w.log)
    ra.put(0.0, "r/room1/p/alice/1", b"A1v2")
    pb.drain(0.2)
    assert len(w.log) == n
    # After unwatch nothing more arrives.
    rb.unwatch("r/room1/", w)
    ra.put(0.0, "r/room1/p/carol/4", b"C")
    pb.drain(0.3)
    assert len(w.log) == n
    ra.close()
    rb.close()


def test_three_nodes_second_watcher_and_prefix_isolation(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    c = nodes(seeds=[*a.config.listen, *b.config.listen])
    linked(a, b, c)
    pumps = [Pump(), Pump(), Pump()]
    ra, rb, rc = (ZenohRegistry(n.session, p, time.monotonic) for n, p in zip((a, b, c), pumps, strict=True))
    ra.put(0.0, "r/x/p/a/1", b"a")
    rb.put(0.0, "r/x/p/b/2", b"b")
    rb.put(0.0, "r/xy/p/b/2", b"not in r/x/")
    w1, w2 = Recorder(), Recorder()
    rc.watch(0.0, "r/x/", w1)
    pumps[2].until(lambda: w1.state == {"r/x/p/a/1": b"a", "r/x/p/b/2": b"b"})
    rc.watch(0.0, "r/x/", w2)  # second watcher of the prefix: replayed from this node's copy, at once
    assert w2.state == w1.state
    rb.delete(0.0, "r/x/p/b/2")
    pumps[2].until(lambda: w1.state == w2.state == {"r/x/p/a/1": b"a"})
    assert set(rc.remote_members()) == {ra.member}


def test_entries_vanish_when_a_session_closes_abruptly(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    linked(a, b)
    pa, pb = Pump(), Pump()
    ra, rb = ZenohRegistry(a.session, pa, time.monotonic), ZenohRegistry(b.session, pb, time.monotonic)
    ra.put(0.0, "r/r/p/a/1", b"x")
    ra.put(0.0, "r/r/t/a/cam/1", b"y")
    w = Recorder()
    rb.watch(0.0, "r/r/", w)
    pb.until(lambda: len(w.state) == 2)
    a.session.close()  # no registry.close(): no deletes are sent, the liveliness token just goes
    took = pb.until(lambda: not w.state, timeout=3.0)
    assert took < 3.0
    assert ("del", "r/r/p/a/1", None) in w.log and ("del", "r/r/t/a/cam/1", None) in w.log


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "hang"])
def test_entries_of_a_killed_or_hung_node_vanish_within_3_seconds(nodes, sig: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    b = nodes()
    seed_port = int(b.config.listen[0].rsplit(":", 1)[1])
    pb = Pump()
    rb = ZenohRegistry(b.session, pb, time.monotonic)
    w = Recorder()
    rb.watch(0.0, "r/k/", w)
    script = Path(__file__).with_name("node_proc.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(free_port()), str(seed_port), "r/k/p/ghost/9", "r/k/t/ghost/cam/9"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        pb.until(lambda: len(w.state) == 2, timeout=5.0)
        proc.send_signal(sig)  # SIGKILL: sockets close at once; SIGSTOP: silence until the lease ends
        start = time.monotonic()
        pb.until(lambda: not w.state, timeout=3.0)
        assert time.monotonic() - start < 3.0
        assert rb.members_lost >= 1
    finally:
        proc.kill()  # SIGKILL also ends a stopped process
        proc.wait()


def test_late_put_after_member_death_is_ignored(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    pa = Pump()
    ra = ZenohRegistry(a.session, pa, time.monotonic)
    w = Recorder()
    ra.watch(0.0, "r/z/", w)
    ra._member_gone("deadbeef")
    ra._remote_put("deadbeef", "r/z/p/x/1", 5, b"stale")
    assert w.state == {}
    # A delete seen during a replay leaves a tombstone: a late, older reply cannot revive the key.
    ra._inflight += 1
    ra._remote_put("cafe", "r/z/p/y/1", 3, b"v3")
    ra._remote_delete("cafe", "r/z/p/y/1", 4)
    ra._remote_put("cafe", "r/z/p/y/1", 3, b"v3")
    assert w.state == {}
    ra._remote_put("cafe", "r/z/p/y/1", 2, b"older")
    assert w.state == {}
    ra._remote_put("cafe", "r/z/p/y/1", 5, b"newer")
    assert w.state == {"r/z/p/y/1": b"newer"}
    assert endpoint(1) == "tcp/127.0.0.1:1"



def test_entries_put_before_the_link_is_up_arrive_once_it_is(nodes) -> None:  # type: ignore[no-untyped-def]
    """B puts while it has no link at all (its seed is not up yet): nobody receives those puts live,
    and A's replay query ran before B was reachable. A learns of B from B's liveliness token once
    their link is up, and fetches what B holds (zenoh_registry.py ``_member_alive``). Seen in a
    full mesh, where a peer's session opens before its links are (bench/cluster_growth.py)."""
    port = free_port()
    b = nodes(seeds=[endpoint(port)])
    rb = ZenohRegistry(b.session, Pump(), time.monotonic)
    for i in range(3):
        rb.put(0.0, f"r/room/p/early{i}/1", b"E")
    assert b.links() == 0
    a = nodes(port=port)  # B's seed comes up now; A watches at once, before zenoh's retry links B
    pa = Pump()
    ra = ZenohRegistry(a.session, pa, time.monotonic)
    w = Recorder()
    ra.watch(0.0, "r/", w)
    pa.until(lambda: len(w.state) == 3, timeout=15)
    assert sorted(w.state) == [f"r/room/p/early{i}/1" for i in range(3)]
