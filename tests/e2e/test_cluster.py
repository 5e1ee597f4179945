"""The cluster end to end: gateways and media nodes as real processes, aiortc clients, loopback netns.

Publishers and viewers go through a gateway and are pinned to nodes with ``?node=N`` (see
docs/cluster.md), so media has to cross between nodes over zenoh.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, Member, http

from .conftest import CLIENTS_DIR

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")


@pytest.fixture
def cluster(netns_guard: None) -> Iterator[Cluster]:
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    c = Cluster()
    try:
        yield c
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


def client(mode: str, url: str, token: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, CLIENT, mode, url, "--token", token, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def result(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, err[-2000:]
    summary = dict(json.loads(lines[-1]))
    summary["rc"] = proc.returncode
    summary["stderr"] = err[-1500:]
    return summary


def cluster_stats(m: Member) -> dict[str, Any]:
    w = m.info()["workers"][0]
    return {**w["cluster"], **w["counters"]}


def test_publisher_on_a_viewers_on_b_one_copy_crosses(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    a = cluster.media(1, 10)
    b = cluster.media(1, 11)
    cluster.wait_nodes(gw, 2)
    room = "span"
    pub = client("whip", gw.base + "/whip/endpoint?node=10", cluster.token(gw.base, "whip", room, "alice"),
                 "--duration", "10")  # fmt: skip
    time.sleep(1.0)
    viewers = [
        client(
            "whep",
            gw.base + "/whep/endpoint?node=11",
            cluster.token(gw.base, "whep", room),
            "--duration",
            "6",
            "--min-frames",
            "30",
        )
        for _ in range(5)
    ]
    time.sleep(3.0)
    sa1, sb1 = cluster_stats(a), cluster_stats(b)
    time.sleep(2.0)
    sa2, sb2 = cluster_stats(a), cluster_stats(b)
    results = [result(v) for v in viewers]
    assert all(r["rc"] == 0 and r["frames"] >= 30 for r in results), results
    assert all(r["location"].startswith(gw.base + "/whep/conn/") for r in results), results
    assert all(r.get("delete_status") == 200 for r in results), results
    out = sa2["packets_out"] - sa1["packets_out"]
    got = sb2["packets_in"] - sb1["packets_in"]
    sent_b = sb2["udp_tx"] - sb1["udp_tx"]
    # The track's channels (video + audio) are imported once on B and exported once on A ...
    assert sa2["channels_exported"] == 2 and sb2["channels_imported"] == 2, (sa2, sb2)
    # ... and each packet crosses once (a few in flight at the sampling instants), not once per viewer,
    assert out > 100 and abs(got - out) <= max(10, out // 20), (out, got)
    # ... while B sends it on to its five viewers.
    assert sent_b > 4 * got, (sent_b, got)
    assert sa2["packets_in"] == 0 and sb2["packets_out"] == 0
    print(f"\ncross-node: A exported {out} packets in 2 s, B imported {got}, B sent {sent_b} datagrams to 5 viewers")
    r = result(pub)
    assert r["rc"] == 0 and r["delete_status"] == 200, r


def test_viewer_in_zone_2_watches_publisher_in_zone_1(cluster: Cluster) -> None:
    gw1 = cluster.gateway(zone=1)
    cluster.media(1, 10)
    gw2 = cluster.gateway(zone=2)
    cluster.media(2, 10)
    cluster.wait_nodes(gw1, 1)
    cluster.wait_nodes(gw2, 1)
    room = "zones"
    pub = client("whip", gw1.base + "/whip/endpoint", cluster.token(gw1.base, "whip", room, "alice"),
                 "--duration", "9")  # fmt: skip
    time.sleep(1.0)
    view = client("whep", gw2.base + "/whep/endpoint", cluster.token(gw2.base, "whep", room),
                  "--duration", "6", "--frames", "30", "--min-frames", "20")  # fmt: skip
    r = result(view)
    assert r["rc"] == 0 and r["frames"] >= 20, r
    # The viewer's session lives in zone 2 (its conn id names node 2/10).
    from trackmesh.core.ids import ConnIdCodec

    conn = r["location"].rsplit("/", 1)[1]
    assert ConnIdCodec(SECRET).decode(conn).node_id == 2 << 8 | 10
    # A client may ask for another zone: gateway 2 forwards to gateway 1, which serves it on 1/10.
    deadline = time.monotonic() + 5
    while not gw2.info()["zones"] and time.monotonic() < deadline:
        time.sleep(0.1)
    body = json.dumps({"room": room, "ttl": 60}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    status, h, _ = http("POST", gw2.base + "/token/whep?zone=1", body, headers)
    assert status == 200 and h["x-trackmesh-served-by"] == "1/10", (status, h)
    status, h, _ = http("POST", gw2.base + "/token/whep", body, {**headers, "X-Trackmesh-Zone": "1"})
    assert status == 200 and h["x-trackmesh-served-by"] == "1/10", (status, h)
    assert result(pub)["rc"] == 0


def test_kill_9_of_the_publishers_node_stops_the_track_on_b_within_3_s(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    a = cluster.media(1, 10)
    b = cluster.media(1, 11)
    cluster.wait_nodes(gw, 2)
    room = "failover"
    pub = client("whip", gw.base + "/whip/endpoint?node=10", cluster.token(gw.base, "whip", room, "alice"),
                 "--duration", "20", "--timeout", "10")  # fmt: skip
    view = client("whep", gw.base + "/whep/endpoint?node=11", cluster.token(gw.base, "whep", room),
                  "--duration", "6", "--min-frames", "20")  # fmt: skip
    deadline = time.monotonic() + 10
    while cluster_stats(b)["packets_in"] < 100:
        assert time.monotonic() < deadline, cluster_stats(b)
        time.sleep(0.1)
    assert cluster_stats(b)["registry_remote_members"] >= 1
    killed = time.monotonic()
    a.kill()
    # B's registry drops A's entries (its peer and track: TrackStopped, PeerLeft to B's endpoints).
    while cluster_stats(b)["registry_remote_members"] != 0:
        assert time.monotonic() - killed < 3.0, cluster_stats(b)
        time.sleep(0.05)
    gone_after = time.monotonic() - killed
    before = cluster_stats(b)["packets_in"]
    time.sleep(0.5)
    assert cluster_stats(b)["packets_in"] == before
    # The gateway dropped A at once (its liveliness token went with the process) and routes to B only.
    nodes = [n["node"] for n in gw.info()["nodes"]]
    assert nodes == [11], nodes
    print(f"\ntrack gone on B {gone_after:.2f} s after kill -9 of A")
    r = result(view)
    assert r["frames"] >= 20, r
    pub.kill()
    pub.communicate()
    a.lines.append("(killed)")


def test_two_gateways_either_one_serves_and_routes_the_others_sessions(cluster: Cluster) -> None:
    gw1 = cluster.gateway(zone=1, node=1)
    gw2 = cluster.gateway(zone=1, node=2)
    cluster.media(1, 10)
    cluster.wait_nodes(gw1, 1)
    cluster.wait_nodes(gw2, 1)
    room = "gws"
    wtoken = cluster.token(gw1.base, "whip", room, "alice")
    pub = client("whip", gw1.base + "/whip/endpoint", wtoken, "--duration", "8")
    time.sleep(1.5)
    gw1.kill()
    # The other gateway keeps serving: new tokens and sessions, and calls on sessions made via gateway 1.
    view = client("whep", gw2.base + "/whep/endpoint", cluster.token(gw2.base, "whep", room),
                  "--duration", "5", "--frames", "30", "--min-frames", "20")  # fmt: skip
    r = result(view)
    assert r["rc"] == 0 and r["frames"] >= 20, r
    rp = result(pub)
    # The publisher's DELETE went to gateway 1, which is dead; gateway 2 routes its conn id too.
    assert "DELETE" in rp.get("error", ""), rp
    conn = rp["location"].rsplit("/", 1)[1]
    status, _, body = http("DELETE", f"{gw2.base}/whip/conn/{conn}", headers={"Authorization": f"Bearer {wtoken}"})
    assert status in (200, 404), body  # 404 once the node closed the session on its own
