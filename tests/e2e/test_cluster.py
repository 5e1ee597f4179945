"""The cluster end to end: gateways and media nodes as real processes, aiortc clients, loopback netns.

Publishers and viewers go through a gateway and are pinned to nodes with ``?node=N`` (see
docs/cluster.md), so media has to cross between nodes over zenoh.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tests.cluster.test_roles import SECRET, Cluster, Member, http
from tests.promtool import sample

from .conftest import CLIENTS_DIR

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")



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
    # The window starts once all five viewers are connected on B (ICE and DTLS up) and have had a
    # second to get their first key frame: on a busy box one may still be connecting at 3 s.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = http("GET", b.base + "/metrics")[2].decode()
        if sample(text, "trackmesh_join_connected_total", transport="whep") >= 5:
            break
        time.sleep(0.2)
    time.sleep(1.0)
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
    # (A also exports the mixer's levels summary of the room, counted apart; B has no mixer
    # listener, so it does not import it.)
    assert sa2["levels_channels_exported"] == 1 and sb2["levels_channels_imported"] == 0, (sa2, sb2)
    assert sb2["mixer_imports"] == {} and sb2["mixer_imports_total"] == 0, sb2
    # ... and each packet crosses once (a few in flight at the sampling instants), not once per viewer,
    assert out > 100 and abs(got - out) <= max(10, out // 20), (out, got)
    # ... while B sends it on to its five viewers.
    assert sent_b > 4 * got, (sent_b, got)
    assert sa2["packets_in"] == 0 and sb2["packets_out"] == 0
    print(f"\ncross-node: A exported {out} packets in 2 s, B imported {got}, B sent {sent_b} datagrams to 5 viewers")
    # B observed the hop of every packet it imported (wire version 2's send stamp), A none.
    text_b = http("GET", b.base + "/metrics")[2].decode()
    text_a = http("GET", a.base + "/metrics")[2].decode()
    hops = sample(text_b, "trackmesh_cluster_hop_seconds_count", worker="0")
    imported = sample(text_b, "trackmesh_cluster_packets_received_total", worker="0")
    assert hops >= imported >= got > 0, (hops, imported, got)  # (hops also counts packets with no proxy yet)
    assert sample(text_b, "trackmesh_cluster_hop_seconds_bucket", worker="0", le="+Inf") == hops
    assert sample(text_b, "trackmesh_cluster_hop_seconds_sum", worker="0") > 0
    assert sample(text_b, "trackmesh_cluster_hop_clock_behind_total", worker="0") == 0  # one host, one clock
    assert sample(text_a, "trackmesh_cluster_hop_seconds_count", worker="0") == 0
    below_25ms = sample(text_b, "trackmesh_cluster_hop_seconds_bucket", worker="0", le="0.025")
    print(f"hop histogram on B: {hops:.0f} packets, {below_25ms:.0f} within 25 ms, "
          f"mean {sample(text_b, 'trackmesh_cluster_hop_seconds_sum', worker='0') / hops * 1e3:.2f} ms")
    r = result(pub)
    assert r["rc"] == 0 and r["delete_status"] == 200, r


def test_sessions_of_one_room_on_a_two_worker_node_share_one_worker(cluster: Cluster) -> None:
    """Room affinity (runtime/cluster_node.py RoomAffinity): a room's sessions on a node all go to
    the worker already hosting it, even when the other worker has fewer sessions; a new room goes
    to the least-busy worker. So per-worker bounds (the mixer's N+1 imports) are per-node ones."""
    from trackmesh.core.ids import ConnIdCodec

    gw = cluster.gateway(zone=1)
    m = cluster.media(1, 10, workers=2)
    cluster.wait_nodes(gw, 1)
    room = "affinity"
    pub = client("whip", gw.base + "/whip/endpoint", cluster.token(gw.base, "whip", room, "alice"),
                 "--duration", "12")  # fmt: skip
    viewers = []
    for _ in range(2):
        # Past a load report (every second): the publisher's worker now counts more sessions.
        time.sleep(1.5)
        viewers.append(client("whep", gw.base + "/whep/endpoint", cluster.token(gw.base, "whep", room),
                              "--duration", "8", "--min-frames", "10"))  # fmt: skip
    time.sleep(1.5)
    other = client("whip", gw.base + "/whip/endpoint", cluster.token(gw.base, "whip", "elsewhere", "carol"),
                   "--duration", "6")  # fmt: skip
    # All four sessions up (polled: on a loaded box the last publisher can take seconds to connect).
    deadline = time.monotonic() + 10
    while True:
        endpoints = [w["endpoints"] for w in m.info()["workers"]]
        if sorted(endpoints) == [1, 3] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    results = [result(v) for v in viewers]
    r_other = result(other)
    r_pub = result(pub)
    assert all(r["rc"] == 0 and r["frames"] >= 10 for r in results), results
    assert r_pub["rc"] == 0 and r_other["rc"] == 0, (r_pub, r_other)
    codec = ConnIdCodec(SECRET)

    def worker(r: dict[str, Any]) -> int:
        return codec.decode(r["location"].rsplit("/", 1)[1]).worker

    in_room = {worker(r) for r in [r_pub, *results]}
    assert len(in_room) == 1, [r["location"] for r in [r_pub, *results]]
    # The other room went to the other, idle worker: load still spreads, by room.
    assert worker(r_other) not in in_room
    assert sorted(endpoints) == [1, 3], endpoints


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


# ---- SDK failover: restart-ice through the gateway rebuilds the session on a live node --------------


def _sdk_request(room: str, peer: str, sdp: str) -> bytes:
    from trackmesh.transports.sdk.protocol import gateway_pb2, session_pb2, shared_pb2

    tracks = shared_pb2.Tracks()
    sender = tracks.senders.add(name="video_main", kind=shared_pb2.VIDEO)
    sender.state.source.id = "camera"
    join = session_pb2.RoomJoin(
        room=room,
        peer=peer,
        publish=shared_pb2.RoomInfoPublish(peer=True, tracks=True),
        subscribe=shared_pb2.RoomInfoSubscribe(peers=True, tracks=True),
    )
    return gateway_pb2.ConnectRequest(version="aiortc-test", join=join, tracks=tracks, sdp=sdp).SerializeToString()


async def _sdk_publish(
    url: str, token: str, room: str, peer: str, events: list[Any] | None = None
) -> tuple[Any, str, float]:
    """A fresh aiortc peer connection publishing one video track through the SDK HTTP calls;
    the server events of its data channel are appended to ``events``."""
    import asyncio

    from aiortc import RTCSessionDescription

    from tests.e2e.clients import aiortc_client as ac
    from trackmesh.transports.sdk.protocol import gateway_pb2

    pc = ac.new_pc()
    dc = pc.createDataChannel("data", negotiated=True, id=0)
    if events is not None:
        from trackmesh.transports.sdk.protocol import session_pb2

        @dc.on("message")
        def on_message(data: bytes | str) -> None:
            if isinstance(data, bytes):
                events.append(session_pb2.ServerEvent.FromString(data))

    pc.addTransceiver(ac.TestVideoTrack(), direction="sendonly")
    ac.prefer_codec(pc, "video", ["vp8"])
    await pc.setLocalDescription(await pc.createOffer())
    body = _sdk_request(room, peer, ac.filter_candidates(pc.localDescription.sdp))
    headers = {"Content-Type": "application/grpc", "Authorization": f"Bearer {token}"}
    started = time.monotonic()
    status, _, raw = await asyncio.to_thread(http, "POST", url, body, headers)
    assert status == 200, (status, raw[:300])
    resp = gateway_pb2.ConnectResponse.FromString(raw)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=resp.sdp, type="answer"))
    await ac._wait_connected(pc, 10)
    return pc, resp.conn_id, started


def test_sdk_publisher_restarts_ice_through_the_gateway_after_kill_9_and_media_resumes(cluster: Cluster) -> None:
    import asyncio

    from tests.e2e.clients import aiortc_client as ac
    from trackmesh.core.ids import ConnIdCodec

    gw = cluster.gateway(zone=1)
    a = cluster.media(1, 10)
    b = cluster.media(1, 11)
    cluster.wait_nodes(gw, 2)
    room, codec = "sdk-failover", ConnIdCodec(SECRET)
    stoken = cluster.token(gw.base, "webrtc", room, "alice")
    vtoken = cluster.token(gw.base, "whep", room)
    report: dict[str, Any] = {}

    async def scenario() -> None:
        viewer = ac.new_pc()
        counters = ac.Counters()
        counters.attach(viewer)
        viewer.addTransceiver("video", direction="recvonly")
        viewer.addTransceiver("audio", direction="recvonly")
        await ac._negotiate(viewer, gw.base + "/whep/endpoint?node=11", vtoken, {})
        await ac._wait_connected(viewer, 10)
        pub, conn, _ = await _sdk_publish(gw.base + "/webrtc/connect?node=10", stoken, room, "alice")
        assert codec.decode(conn).node_id == 1 << 8 | 10
        deadline = time.monotonic() + 10
        while counters.frames < 30:
            assert time.monotonic() < deadline, counters.summary()
            await asyncio.sleep(0.05)
        report["before"] = counters.frames
        a.kill()
        a.lines.append("(killed)")
        killed = time.monotonic()
        while cluster_stats(b)["registry_remote_members"] != 0:
            assert time.monotonic() - killed < 3.0
            await asyncio.sleep(0.05)
        report["track_gone_s"] = round(time.monotonic() - killed, 2)
        await pub.close()
        # The client restarts ICE on its old conn id through the gateway: the owner is gone, so a
        # live node (B) rebuilds the session from the request (room, peer, tracks) and answers.
        frames_at_restart = counters.frames
        pub2, conn2, restarted = await _sdk_publish(f"{gw.base}/webrtc/{conn}/restart-ice", stoken, room, "alice")
        assert codec.decode(conn2).node_id == 1 << 8 | 11
        while counters.frames < frames_at_restart + 15:
            assert time.monotonic() - restarted < 5.0, counters.summary()
            await asyncio.sleep(0.02)
        report["resumed_s"] = round(time.monotonic() - restarted, 2)
        await pub2.close()
        await counters.close()
        await viewer.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    print(f"\nSDK failover: {report}")
    assert report["resumed_s"] < 5.0


def test_sigterm_drains_a_media_node(cluster: Cluster) -> None:
    """SIGTERM: SDK clients get goaway, the gateway stops routing new sessions there (follow-ups
    still reach it), and the node exits once its sessions are gone."""
    import asyncio
    import signal

    gw = cluster.gateway(zone=1)
    a = cluster.media(1, 10, "--shutdown-timeout", "8")
    cluster.media(1, 11)
    cluster.wait_nodes(gw, 2)
    room = "drain"
    stoken = cluster.token(gw.base, "webrtc", room, "alice")
    report: dict[str, Any] = {}

    async def scenario() -> None:
        events: list[Any] = []
        pub, _, _ = await _sdk_publish(gw.base + "/webrtc/connect?node=10", stoken, room, "alice", events)
        deadline = time.monotonic() + 5
        while not events:
            assert time.monotonic() < deadline, "no server event on the data channel"
            await asyncio.sleep(0.05)
        termed = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        while not any(e.HasField("session") and e.session.HasField("goway") for e in events):
            assert time.monotonic() - termed < 3, events
            await asyncio.sleep(0.05)
        report["goaway_s"] = round(time.monotonic() - termed, 2)
        # The gateway learns at once: node 10 is draining, new sessions go to 11.
        deadline = time.monotonic() + 3
        while any(n["node"] == 10 and n["healthy"] for n in gw.info()["nodes"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        status, _, body = await asyncio.to_thread(
            http, "POST", gw.base + "/token/whep?node=10", b"{}", {"Authorization": f"Bearer {SECRET}"}
        )  # the app secret first: an unauthenticated caller gets 401 and learns nothing of the node
        assert status == 503 and b"draining" in body, (status, body)
        status, data = a.health()
        assert status == 503 and data["draining"], data
        status, h, _ = await asyncio.to_thread(
            http, "POST", gw.base + "/token/whep", json.dumps({"room": room, "ttl": 60}).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
        )  # fmt: skip
        assert status == 200 and h["x-trackmesh-served-by"] == "1/11"
        assert a.proc.poll() is None  # still serving its session
        closed = time.monotonic()
        await pub.close()  # the client leaves (DTLS close_notify): the node is empty and exits
        rc = await asyncio.to_thread(a.proc.wait, 10)
        report["exit_after_close_s"] = round(time.monotonic() - closed, 2)
        assert rc == 0

    asyncio.run(asyncio.wait_for(scenario(), 60))
    print(f"\ndrain: {report}")
    assert report["exit_after_close_s"] < 5.0
    assert any("drained: no session left" in line for line in a.lines), a.log()
