"""One room on every core (``--room-spread``, docs/cluster.md): a media node with two workers, one WHIP
publisher, WHEP viewers placed on both workers. aiortc clients, a real media node, loopback netns.
"""

from __future__ import annotations

import time
from typing import Any

from tests.cluster.test_roles import SECRET, Cluster, Member, http
from tests.promtool import sample

from .test_cluster import client, result


def _workers(m: Member) -> list[dict[str, Any]]:
    return [{**w["cluster"], **w["counters"], "endpoints": w["endpoints"]} for w in m.info()["workers"]]


def test_a_rooms_viewers_spread_over_both_workers_and_all_get_frames(cluster: Cluster) -> None:
    from trackmesh.core.ids import ConnIdCodec

    m = cluster.media(1, 10, "--room-spread", "1", workers=2)
    room = "spread"
    pub = client("whip", m.base + "/whip/endpoint", cluster.token(m.base, "whip", room, "alice"), "--duration", "10")
    # The publisher's session is routed (the room has 1 session on the node): from now on viewers spread.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(w["endpoints"] for w in _workers(m)) < 1:
        time.sleep(0.1)
    home = next(i for i, w in enumerate(_workers(m)) if w["endpoints"] == 1)
    viewer_args = ("--duration", "6", "--min-frames", "30")
    viewers = [
        client("whep", m.base + "/whep/endpoint", cluster.token(m.base, "whep", room), *viewer_args) for _ in range(4)
    ]
    # The window starts once the four viewers are connected (ICE and DTLS up) and had a second for
    # their first key frame (asked for across workers, from the other worker's viewers).
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        text = http("GET", m.base + "/metrics")[2].decode()
        if sample(text, "trackmesh_join_connected_total", transport="whep") >= 4:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    before = _workers(m)
    time.sleep(2.0)
    after = _workers(m)
    results = [result(v) for v in viewers]
    r_pub = result(pub)
    assert all(r["rc"] == 0 and r["frames"] >= 30 for r in results), results
    assert r_pub["rc"] == 0 and r_pub["delete_status"] == 200, r_pub
    codec = ConnIdCodec(SECRET)
    placed = [codec.decode(r["location"].rsplit("/", 1)[1]).worker for r in results]
    assert codec.decode(r_pub["location"].rsplit("/", 1)[1]).worker == home
    # Viewers on both workers: the first goes to the idle one (the publisher's session counts on its
    # worker), the next ones to the worker with fewer sessions, ties home. (Usually two each; a load
    # report landing between a viewer's routing and its join may undercount one worker for a second.)
    other = 1 - home
    assert set(placed) == {0, 1}, placed
    n_other = placed.count(other)
    a0, a1, b0, b1 = before[home], after[home], before[other], after[other]
    # The home worker exports the track's channels (video + audio) once; the other imports them once
    # for its two viewers, and every packet crosses once, not once per viewer ...
    assert a1["channels_exported"] == 2 and b1["channels_imported"] == 2, (a1, b1)
    out = a1["packets_out"] - a0["packets_out"]
    got = b1["packets_in"] - b0["packets_in"]
    assert out > 100 and abs(got - out) <= max(10, out // 20), (out, got)
    # ... and the other worker sends each on to each of its viewers.
    sent = b1["udp_tx"] - b0["udp_tx"]
    assert sent > (n_other - 0.5) * got, (sent, got, placed)
    # Key-frame requests of the other worker's viewers reached the publisher's worker.
    assert a1["feedback_in"] >= 1 and b1["feedback_out"] >= 1, (a1, b1)
    assert a1["packets_in"] == 0 and b1["packets_out"] == 0, (a1, b1)
    text = http("GET", m.base + "/metrics")[2].decode()
    assert sample(text, "trackmesh_spread_viewers_total") == n_other
    print(f"\nspread: home worker {home} exported {out} packets in 2 s, worker {other} imported {got} "
          f"and sent {sent} datagrams to its {n_other} viewers; key-frame requests across: {a1['feedback_in']}")
