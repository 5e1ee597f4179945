"""Zone routers end to end: three zones with two routers each, media nodes in every zone, aiortc clients.

Real processes in the private loopback-only network namespace; scouting off. The media nodes are
zenoh clients of their zone's routers (``--cluster-mode routers``), so a track published in zone 1
reaches zones 2 and 3 through the routers only (docs/cluster.md, "Zone routers").
"""

from __future__ import annotations

import time

from tests.cluster.test_roles import Cluster
from tests.cluster.test_routers import routed, router_of, start_routers

from .test_cluster import client, cluster_stats, result


def test_a_track_reaches_each_zone_once_and_survives_kill_9_of_a_zone_router(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=3)
    a = routed(cluster, routers, "media", 1, 10)
    b = routed(cluster, routers, "media", 2, 10)
    c = routed(cluster, routers, "media", 3, 10)
    room = "routed"
    pub = client("whip", a.base + "/whip/endpoint", cluster.token(a.base, "whip", room, "alice"),
                 "--duration", "22", "--timeout", "15")  # fmt: skip
    time.sleep(1.0)
    watch = ("--duration", "16", "--min-frames", "100")
    viewers = [
        client("whep", m.base + "/whep/endpoint", cluster.token(m.base, "whep", room), *watch) for m in (b, b, c, c)
    ]
    deadline = time.monotonic() + 15
    while min(cluster_stats(b)["packets_in"], cluster_stats(c)["packets_in"]) < 100:
        assert time.monotonic() < deadline, (cluster_stats(b), cluster_stats(c))
        time.sleep(0.1)
    sa1, sb1, sc1 = cluster_stats(a), cluster_stats(b), cluster_stats(c)
    time.sleep(2.0)
    sa2, sb2, sc2 = cluster_stats(a), cluster_stats(b), cluster_stats(c)
    out = sa2["packets_out"] - sa1["packets_out"]
    got = {"zone 2": sb2["packets_in"] - sb1["packets_in"], "zone 3": sc2["packets_in"] - sc1["packets_in"]}
    # Each zone's node imports the track's two channels once and receives each packet once, not once
    # per viewer nor once per router of the zone (a peer linked to both routers got 2-4 copies:
    # cluster/topology.py). The three nodes are sampled one after the other through HTTP, so the
    # windows differ by up to a few hundred ms on a loaded box: 1/8 slack, far from a second copy.
    assert sb2["channels_imported"] == 2 and sc2["channels_imported"] == 2, (sb2, sc2)
    assert out > 100 and all(abs(n - out) <= max(10, out // 8) for n in got.values()), (out, got)
    # All three are clients with one link each, to a router; none is a peer of another.
    assert all((s["routers"], s["peers"]) == (1, 0) for s in (sa2, sb2, sc2)), (sa2, sb2, sc2)

    # kill -9 of the zone 2 router its media node is linked to (its preferred one: cluster/topology.py).
    used = router_of(b, routers[2])
    used.kill()
    used.lines.append("(killed)")
    killed = time.monotonic()
    last, stalled_since, longest = cluster_stats(b)["packets_in"], killed, 0.0
    while time.monotonic() - killed < 4.0:
        time.sleep(0.05)
        now_in = cluster_stats(b)["packets_in"]
        now = time.monotonic()
        if now_in > last:
            longest = max(longest, now - stalled_since)
            last, stalled_since = now_in, now
    longest = max(longest, time.monotonic() - stalled_since)
    assert longest < 2.0, f"zone 2 received nothing for {longest:.2f} s after the router was killed"
    sb3 = cluster_stats(b)
    assert (sb3["routers"], sb3["channels_imported"]) == (1, 2), sb3
    assert b.health()[0] == 200
    results = [result(v) for v in viewers]
    # Every viewer kept playing: 16 s at ~30 fps, a stall of at most 2 s costs at most ~60 frames.
    assert all(r["rc"] == 0 and r["frames"] >= 100 for r in results), results
    print(f"\nrouted: zone 1 exported {out} packets in 2 s, imported {got}; "
          f"longest gap in zone 2 after kill -9 of its router: {longest:.2f} s; "
          f"viewer frames {[r['frames'] for r in results]}")  # fmt: skip
    r = result(pub)
    assert r["rc"] == 0, r
