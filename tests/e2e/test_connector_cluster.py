"""The connector as a cluster role: ``trackmesh connector`` and ``trackmesh media`` as real processes
(loopback only, scouting off, inside the private network namespace). WHIP sessions (aiortc) on the
media node make the events; they travel over zenoh to the connector, which stores them and serves
the log API.

- kill -9 of the connector while events wait at the media node (in memory, then in its spill
  file across a restart of the media node): after its restart every event is in the log, once
  (deduplicated by id); garbage on the connector's key is dropped and counted;
- kill -9 of a media node: the connector closes its sessions (NodeFailure) and the room events
  follow; a media node restarted on the same data dir while no connector ran has what its
  previous run left open closed by its restart marker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, Member, http
from tests.connector.receiver import HookReceiver
from trackmesh.connector.events import DisconnectReason

from .conftest import CLIENTS_DIR

pytestmark = pytest.mark.e2e

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")
NODE_FAILURE = int(DisconnectReason.NODE_FAILURE)



# Called with no argument; ``...`` lets callers bind loop variables as lambda defaults (lambda m=m: ...).
def wait_until(cond: Callable[..., bool], timeout: float, what: str, *logs: Member) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(m.log(80) for m in logs))
        time.sleep(0.1)


def api(m: Member, path: str) -> Any:
    status, _, body = http("GET", m.base + path, headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 200, body
    return json.loads(body)["data"]


def log_events(conn: Member) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = 0
    while True:
        rows = api(conn, f"/api/connector/log/events?limit=1000&page={page}")
        out += rows
        if len(rows) < 1000:
            return out
        page += 1


def by_session(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events:
        out.setdefault(str(e["session"]), []).append(e["event"])
    return out


def link_metric(m: Member, what: str) -> float:
    _, _, body = http("GET", m.base + "/metrics")
    found = re.search(rf'^trackmesh_connector_link{{what="{what}"}} (\S+)$', body.decode(), re.M)
    return float(found.group(1)) if found else -1.0


def publish(media: Member, room: str, peer: str, duration: float) -> subprocess.Popen[str]:
    body = json.dumps({"room": room, "peer": peer, "ttl": 600}).encode()
    status, _, raw = http("POST", media.base + "/token/whip", body,
                          {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"})  # fmt: skip
    assert status == 200, raw
    token = json.loads(raw)["data"]["token"]
    return subprocess.Popen([sys.executable, CLIENT, "whip", media.base + "/whip/endpoint", "--token", token,
                             "--duration", str(duration), "--timeout", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(CLIENTS_DIR))  # fmt: skip


def finished(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err[-2000:])


def connector(cluster: Cluster, db: Path, *extra: str, seeds: list[str] | None = None) -> Member:
    return cluster.start("connector", 1, 1, "--connector-db", f"sqlite:///{db}", *extra, seeds=seeds)


def media(cluster: Cluster, data: Path, seeds: list[str], workers: int = 1) -> Member:
    return cluster.start("media", 1, 10, "--data-dir", str(data), seeds=seeds, workers=workers)


CLOSED = ["Connecting", "Connected", "Join", "RemoteTrackStarted", "RemoteTrackEnded", "Leave", "Disconnected"]
# A request straight to a media node (no gateway in front): the node's HTTP layer places it and
# reports the route events itself, as standalone's does.
DIRECT = ["RouteBegin", "RouteSuccess", *CLOSED]


def connector_metric(conn: Member, what: str) -> float:
    _, _, body = http("GET", conn.base + "/metrics")
    found = re.search(rf'^trackmesh_connector{{what="{what}"}} (\S+)$', body.decode(), re.M)
    return float(found.group(1)) if found else -1.0


def test_kill_9_of_the_connector_with_events_queued_at_the_media_node_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    from trackmesh.cluster.zenoh_session import ClusterConfig, open_node
    from trackmesh.core.ids import SessionId, session_worker

    db, data = tmp_path / "connector.db", tmp_path / "media"
    conn = connector(cluster, db, seeds=[])
    # Two workers: room queued-1 goes to worker 1 (a child process: its events reach the node's link over
    # the worker pipe), queued-2 and queued-3 to worker 0 (cluster_node.py's room hash, both idle).
    m = media(cluster, data, [conn.seed], workers=2)
    finished(publish(m, "queued-1", "alice", 1))
    wait_until(lambda: any(v[-1:] == ["Disconnected"] for v in by_session(log_events(conn)).values()), 20,
               "the first session's events in the log", conn, m)  # fmt: skip
    conn.kill()
    conn.lines.append("(killed)")
    # While no connector runs: a second session's events wait at the media node.
    finished(publish(m, "queued-2", "bob", 1))
    wait_until(lambda: link_metric(m, "link_pending") >= len(DIRECT), 15, "events pending at the media node", m)
    assert link_metric(m, "link_batches_resent") >= 1, "the media node resends while the connector is away"
    # A third session; then the media node stops (SIGINT): what is not acknowledged goes to its spill
    # file, and its next run on the same data dir sends it.
    finished(publish(m, "queued-3", "carol", 1))
    wait_until(lambda: link_metric(m, "link_pending") >= 2 * len(DIRECT), 15, "more events pending", m)
    pending = link_metric(m, "link_pending")
    assert m.stop() == 0, m.log()
    spill = data / "connector-spill-266.jsonl"
    assert len(spill.read_bytes().splitlines()) >= pending, m.log()
    m2 = media(cluster, data, [], workers=2)
    conn2 = connector(cluster, db, seeds=[m2.seed])
    wait_until(lambda: link_metric(m2, "link_pending") == 0, 20, "the media node's queue drained", conn2, m2)
    events = log_events(conn2)
    sessions = by_session(events)
    assert len(sessions) == 3, sessions
    for names in sessions.values():
        # Every event of each session (two tracks: audio and video), none lost, none twice.
        assert set(names) == set(DIRECT) and len(names) == len(DIRECT) + 2, names
        assert names.index("Join") < names.index("Leave") < names.index("Disconnected"), names
    twice = [k for k, n in Counter((e["session"], e["event"], e["meta"]) for e in events).items() if n > 1]
    assert not twice, twice
    rooms = {r["room"] for r in api(conn2, "/api/connector/log/rooms")}
    assert rooms == {"queued-1", "queued-2", "queued-3"}, rooms
    assert {session_worker(SessionId(int(sid))) for sid in sessions} == {0, 1}, sessions
    assert spill.read_bytes() == b""
    # Bad input on the connector's key: dropped and counted, never a crash.
    member = open_node(ClusterConfig(SECRET, listen=[], seeds=[conn2.seed]))
    try:
        wait_until(lambda: member.links() > 0, 10, "a link to the connector", conn2)
        member.session.put("tm/conn/1/in/7", b"not a batch")
        member.session.put("tm/conn/1/in/7", b'{"node": 7, "boot": 1, "seq": 1}\n{"id": 5}\n\xff')
        wait_until(lambda: connector_metric(conn2, "link_bad_items") == 2, 10, "the bad input counted", conn2)
        assert connector_metric(conn2, "link_malformed") == 1
    finally:
        member.close()
    assert conn2.proc.poll() is None, conn2.log()
    print(f"\n{pending:.0f} events waited at the media node (memory, then its spill file across a restart) "
          f"during the connector's kill -9; log: {len(events)} events, {len(sessions)} sessions, no duplicate")


def test_media_node_failure_closes_its_sessions_and_a_restart_closes_what_its_previous_run_left(
    cluster: Cluster, tmp_path: Path
) -> None:
    rx = HookReceiver("whsec_" + "A" * 44).start()
    db, data = tmp_path / "connector.db", tmp_path / "media"
    conn = connector(cluster, db, "--hook-url", rx.url, "--destroy-room-after", "1", seeds=[])
    _, _, raw = http("GET", conn.base + "/api/connector/hook-secret", headers={"Authorization": f"Bearer {SECRET}"})
    rx.secret = json.loads(raw)["data"]["secret"]
    m = media(cluster, data, [conn.seed])

    def live(room: str) -> bool:
        names = [n for v in by_session(log_events(conn)).values() for n in v]
        return "RemoteTrackStarted" in names and room in {r["room"] for r in api(conn, "/api/connector/log/rooms")}

    # 1. kill -9 of the media node: its liveliness goes, the connector closes the session.
    pub = publish(m, "failing", "alice", 30)
    wait_until(lambda: live("failing"), 20, "the live session in the log", conn, m)
    m.kill()
    m.lines.append("(killed)")
    pub.kill()
    pub.communicate()
    wait_until(lambda: any(v[-1:] == ["Disconnected"] for v in by_session(log_events(conn)).values()), 10,
               "the failed node's session closed", conn)  # fmt: skip
    (first,) = by_session(log_events(conn)).values()
    assert first[-3:] == ["RemoteTrackEnded", "Leave", "Disconnected"], first
    gone = [e for e in log_events(conn) if e["event"] == "Disconnected"]
    assert json.loads(gone[0]["meta"])["reason"] == NODE_FAILURE, gone
    assert any("closed the sessions of a node: its liveliness is gone" in line for line in conn.lines), conn.log()

    def hook_names() -> list[str]:
        return [next(iter(next(iter(b["event"].values()))["event"])) for _, b in rx.accepted_bodies()]

    wait_until(lambda: "Stopped" in hook_names(), 15, "the room events of the closed session", conn)
    names = hook_names()
    for name in ("PeerLeaved", "AllPeersLeaved", "Stopped"):
        assert name in names, names
    assert names.index("Leave") < names.index("PeerLeaved") < names.index("Stopped"), names
    assert rx.unverified == 0

    # 2. The media node restarts on the same data dir; its new session is live; then the connector
    # and the media node are both killed, the media node restarts first (no connector to see it go).
    m2 = media(cluster, data, [conn.seed])
    pub = publish(m2, "restarting", "bob", 30)
    wait_until(lambda: live("restarting"), 20, "the second run's session in the log", conn, m2)
    conn.kill()
    conn.lines.append("(killed)")
    m2.kill()
    m2.lines.append("(killed)")
    pub.kill()
    pub.communicate()
    m3 = media(cluster, data, [])
    conn2 = connector(cluster, db, "--hook-url", rx.url, "--destroy-room-after", "1", seeds=[m3.seed])
    wait_until(lambda: all(v[-1:] == ["Disconnected"] for v in by_session(log_events(conn2)).values()), 15,
               "the second run's session closed by the restart marker", conn2, m3)  # fmt: skip
    assert any("closed the sessions of a node: it restarted" in line for line in conn2.lines), conn2.log()
    sessions = by_session(log_events(conn2))
    assert len(sessions) == 2, sessions
    for names in sessions.values():
        assert Counter(names)["Disconnected"] == 1 and names[-1] == "Disconnected", names
    reasons = [json.loads(e["meta"])["reason"] for e in log_events(conn2) if e["event"] == "Disconnected"]
    assert reasons == [NODE_FAILURE, NODE_FAILURE], reasons
    rx.stop()


def test_a_second_connector_in_a_zone_and_an_unreachable_database_are_refused_in_one_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    conn = connector(cluster, tmp_path / "c.db", seeds=[])
    dup = cluster.start("connector", 1, 2, "--connector-db", f"sqlite:///{tmp_path / 'd.db'}", wait=False)
    assert dup.proc.wait(30) == 2, dup.log()
    dup._drain.join(2)
    assert any("--zone: zone 1 already has a connector" in line for line in dup.lines), dup.log()
    # Another zone may have its own; a database that cannot be reached stops the start with one line.
    bad = cluster.start("connector", 2, 1, "--connector-db", "postgresql://nobody@127.0.0.1:1/none", wait=False,
                        seeds=[conn.seed])  # fmt: skip
    assert bad.proc.wait(60) == 2, bad.log()
    bad._drain.join(2)
    assert any(line.startswith("trackmesh: --connector-db: the connector cannot start") for line in bad.lines), \
        bad.log()
    assert not any("Traceback" in line for line in dup.lines + bad.lines)


def test_the_zone_gateways_route_events_reach_the_zones_connector(cluster: Cluster, tmp_path: Path) -> None:
    """A zone gateway's RouteBegin/RouteSuccess/RouteError travel by the media nodes' path
    (runtime/connector_link.py): a request no node takes, then a WHIP publisher placed through the
    gateway, whose route events share the session id of the media node's own events."""
    from trackmesh.config import resolve
    from trackmesh.security.tokens import SessionToken, issue

    conn = connector(cluster, tmp_path / "connector.db", seeds=[])
    gw = cluster.start("gateway", 1, 2, "--data-dir", str(tmp_path / "gw"), seeds=[conn.seed])
    # 1. No media node yet: 503 (PoolEmpty), RouteBegin + RouteError under an id of the gateway's.
    key = resolve("media", {"secret": SECRET}, {}).token_key
    token = issue(key, SessionToken("whip", "routed", "alice"), 600, int(time.time()))
    offer = (Path(__file__).parents[1] / "sdp" / "fixtures" / "chrome_whip_simulcast.sdp").read_bytes()
    status, _, _ = http("POST", gw.base + "/whip/endpoint", offer,
                        {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 503
    wait_until(lambda: "RouteError" in [e["event"] for e in log_events(conn)], 15, "the refused route", conn, gw)
    # 2. A media node joins; a WHIP publisher through the gateway (the node reports no route event).
    m = media(cluster, tmp_path / "media", [conn.seed, gw.seed])
    cluster.wait_nodes(gw, 1)
    finished(publish(gw, "routed", "bob", 1))

    def placed() -> list[list[str]]:
        return [v for v in by_session(log_events(conn)).values() if "RouteSuccess" in v and "Disconnected" in v]

    wait_until(lambda: bool(placed()), 20, "the placed session's events", conn, gw, m)
    events = log_events(conn)
    sessions = by_session(events)
    assert len(sessions) == 2, sessions
    (refused,) = [v for v in sessions.values() if "RouteError" in v]
    assert refused == ["RouteBegin", "RouteError"], sessions
    (names,) = placed()
    assert sorted(names) == sorted([*DIRECT, "RemoteTrackStarted", "RemoteTrackEnded"]), names  # each once
    meta = {e["event"]: json.loads(e["meta"]) for e in events}
    assert meta["RouteError"]["error"] == 0 and meta["RouteError"]["dest_node"] is None, meta  # PoolEmpty
    assert meta["RouteSuccess"]["dest_node"] == (1 << 8) | 10, meta  # the media node that took it
    ts = {e["event"]: e["node_ts"] for e in events if "RouteError" not in sessions[str(e["session"])]}
    assert ts["RouteBegin"] <= ts["Connecting"] <= ts["RouteSuccess"], ts  # request, node, the node's answer
    # A RouteError ends its session in the log: nothing is left open.
    still_open = [s for s in api(conn, "/api/connector/log/sessions?limit=100") if s["leaved_at"] is None]
    assert not still_open, still_open
    assert link_metric(gw, "source_emitted") == 4 and link_metric(gw, "link_pending") == 0
    assert link_metric(m, "source_emitted") == len(CLOSED) + 2  # the media node: no route event of its own


def test_a_global_gateways_own_refusals_reach_a_zones_connector(cluster: Cluster, tmp_path: Path) -> None:
    """Zone 0 has no connector: a global gateway sends the requests no zone took (RouteBegin,
    RouteError PoolEmpty) to the first zone connector it sees, over a link of its own."""
    from trackmesh.config import resolve
    from trackmesh.security.tokens import SessionToken, issue

    conn = connector(cluster, tmp_path / "connector.db", seeds=[])
    glob = cluster.start("gateway", 0, 1, "--global", "--data-dir", str(tmp_path / "glob"), seeds=[conn.seed])
    wait_until(lambda: link_metric(glob, "link_pending") == 0, 15, "the global gateway's link to zone 1", glob)
    key = resolve("media", {"secret": SECRET}, {}).token_key
    token = issue(key, SessionToken("whip", "nowhere", "alice"), 600, int(time.time()))
    offer = (Path(__file__).parents[1] / "sdp" / "fixtures" / "chrome_whip_simulcast.sdp").read_bytes()
    status, _, _ = http("POST", glob.base + "/whip/endpoint", offer,
                        {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 503  # no zone
    wait_until(lambda: "RouteError" in [e["event"] for e in log_events(conn)], 15, "the refused route", conn, glob)
    events = log_events(conn)
    assert [e["event"] for e in events] == ["RouteBegin", "RouteError"], events
    assert json.loads(events[1]["meta"])["error"] == 0  # PoolEmpty
    wait_until(lambda: link_metric(glob, "link_pending") == 0, 10, "the ack", glob)
    assert link_metric(glob, "source_emitted") == 2
