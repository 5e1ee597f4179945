"""Zone routers (``trackmesh router``, ``--cluster-mode routers``) as real processes, loopback only.

Routers dial every earlier router (of any zone); gateways and media nodes are zenoh clients of
their own zone's routers (cluster/topology.py, docs/cluster.md "Zone routers"). Runs inside the
private network namespace (conftest's guard); scouting is off, every endpoint is tcp/127.0.0.1.
The ``routed`` helper is shared with tests/e2e/test_routers.py.
"""

from __future__ import annotations

import json
import signal
import time
from argparse import Namespace
from pathlib import Path

import pytest

from trackmesh.cli.dev_cluster import command, plan, routers_per_zone, seeds_of
from trackmesh.cluster.topology import preferred_order, router_client_config
from trackmesh.config import ConfigError, resolve

from .test_roles import SECRET, Cluster, Member, _dev_cluster, _free_range, http

ROUTED = ("--cluster-mode", "routers")


def start_routers(cluster: Cluster, zones: int, per_zone: int = 2) -> dict[int, list[Member]]:
    """``per_zone`` routers in each zone; each dials every router started before it."""
    routers: dict[int, list[Member]] = {}
    started: list[Member] = []
    for zone in range(1, zones + 1):
        for i in range(1, per_zone + 1):
            r = cluster.start("router", zone, i, seeds=[m.seed for m in started], wait=False)
            started.append(r)
            routers.setdefault(zone, []).append(r)
    for r in started:
        r.wait_ready()
    return routers


def routed(cluster: Cluster, routers: dict[int, list[Member]], role: str, zone: int, node: int, *extra: str,
           **kw: object) -> Member:  # fmt: skip
    """A gateway or media node of ``zone``, a client of that zone's routers only."""
    return cluster.start(role, zone, node, *ROUTED, *extra, seeds=[r.seed for r in routers[zone]], **kw)  # type: ignore[arg-type]


def router_of(member: Member, routers: list[Member], worker: int = 0) -> Member:
    """The router ``member``'s worker is linked to (by zid: cluster/topology.py spreads members)."""
    zid = member.info()["workers"][worker]["cluster"]["router"]
    return next(r for r in routers if r.info()["zid"] == zid)


def wait_zones(gw: Member, zones: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = {int(z["zone"]) for z in gw.info()["zones"]}
        if zones <= seen:
            return
        time.sleep(0.1)
    raise AssertionError(f"gateway {gw.zone}/{gw.node} sees zones {seen}, wanted {zones}")


def test_zones_see_each_other_through_their_routers_and_survive_losing_one(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=2)
    gw1 = routed(cluster, routers, "gateway", 1, 1)
    gw2 = routed(cluster, routers, "gateway", 2, 1)
    m1 = routed(cluster, routers, "media", 1, 10)
    routed(cluster, routers, "media", 2, 10)
    assert [n["node"] for n in cluster.wait_nodes(gw1, 1)] == [10]
    cluster.wait_nodes(gw2, 1)
    wait_zones(gw1, {2})
    wait_zones(gw2, {1})
    # A client holds one link, to a router; a router links to the other three routers.
    cl = m1.info()["workers"][0]["cluster"]
    assert (cl["routers"], cl["peers"]) == (1, 0), cl
    assert cl["listen"] == [], cl
    info = routers[1][0].info()
    assert info["routers"] == 3 and info["role"] == "router", info
    text = http("GET", routers[1][0].base + "/metrics")[2].decode()
    assert 'trackmesh_router_links{kind="router",router="1",zone="1"} 3.0' in text, text
    # kill -9 of the router m1 is linked to: it moves to the other one (so does gw1 if it was there).
    used = router_of(m1, routers[1])
    used.kill()
    used.lines.append("(killed)")
    killed = time.monotonic()
    deadline = killed + 5
    while not (m1.health()[0] == 200 and m1.info()["workers"][0]["cluster"]["routers"] == 1):
        assert time.monotonic() < deadline, m1.log()
        time.sleep(0.05)
    # Load reports and zone summaries flow again through the second router.
    cluster.wait_nodes(gw1, 1, timeout=5)
    wait_zones(gw2, {1}, timeout=5)
    wait_zones(gw1, {2}, timeout=5)
    status, data = gw1.health()
    assert status == 200, data
    print(f"\nzone 1 members back on the other router {time.monotonic() - killed:.2f} s after kill -9 of router "
          f"1/{used.node}")


def test_members_spread_over_the_zones_routers_and_fail_over_to_the_other(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=1)
    gw = routed(cluster, routers, "gateway", 1, 1)
    media = routed(cluster, routers, "media", 1, 10, "--workers", "4")
    cluster.wait_nodes(gw, 1)
    seeds = [r.seed for r in routers[1]]
    # Each member prefers the router its member key hashes to (the same on every host), and holds it.
    keys = ["gateway/1/1/0", *(f"media/1/10/{w}" for w in range(4))]
    want = [preferred_order(k, seeds)[0] for k in keys]
    assert sorted(set(want)) == sorted(seeds), f"these 5 keys happen to all prefer one router: {want}"
    workers = media.info()["workers"]
    assert [w["cluster"]["router_preferred"] for w in workers] == want[1:], workers
    by_seed = {r.seed: r for r in routers[1]}
    zid_of = {seed: r.info()["zid"] for seed, r in by_seed.items()}
    assert [w["cluster"]["router"] for w in workers] == [zid_of[s] for s in want[1:]], workers
    split = {seed: by_seed[seed].info()["clients"] for seed in seeds}
    assert split == {seed: want.count(seed) for seed in seeds}, (split, want)
    text = http("GET", routers[1][0].base + "/metrics")[2].decode()
    assert f'trackmesh_router_links{{kind="client",router="1",zone="1"}} {float(split[seeds[0]])}' in text, text
    # kill -9 of the busier router: its members fail over to the other, which then holds all five.
    busy = max(routers[1], key=lambda r: split[r.seed])
    other = next(r for r in routers[1] if r is not busy)
    busy.kill()
    busy.lines.append("(killed)")
    deadline = time.monotonic() + 10
    while other.info()["clients"] != 5 or media.health()[0] != 200:
        assert time.monotonic() < deadline, (other.info(), media.log())
        time.sleep(0.1)
    workers = media.info()["workers"]
    assert {w["cluster"]["router"] for w in workers} == {zid_of[other.seed]}, workers
    cluster.wait_nodes(gw, 1, timeout=5)  # load reports flow through the survivor
    print(f"\nsplit over routers 1/1, 1/2: {list(split.values())}; after kill -9 of 1/{busy.node}: 0, 5")


def test_preferred_router_is_a_stable_hash_that_spreads_members() -> None:
    seeds = ["tcp/127.0.0.1:7400", "tcp/127.0.0.1:7401"]
    # Stable: BLAKE2b of the key, not Python's salted hash(); a rotation, so every router stays a failover.
    assert preferred_order("media/1/10/0", seeds) == preferred_order("media/1/10/0", list(seeds))
    for key in ("media/1/10/0", "gateway/2/1/0"):
        order = preferred_order(key, seeds)
        assert sorted(order) == sorted(seeds)
    assert preferred_order("k", [seeds[0], seeds[0]]) == (seeds[0],)
    assert preferred_order("k", []) == ()
    # 200 media workers of a zone split about evenly over 2 and over 3 routers.
    for routers in (seeds, [*seeds, "tcp/127.0.0.1:7402"]):
        firsts = [preferred_order(f"media/1/{n}/{w}", routers)[0] for n in range(10, 60) for w in range(4)]
        counts = [firsts.count(r) for r in routers]
        assert min(counts) >= 0.7 * len(firsts) / len(routers), counts
    # Without a key (older callers): the given order.
    assert tuple(router_client_config("s" * 20, seeds[::-1]).seeds) == tuple(seeds[::-1])


def test_wrong_secret_gets_no_link_to_the_routers(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=1)
    gw = routed(cluster, routers, "gateway", 1, 1)
    routed(cluster, routers, "media", 1, 10)
    cluster.wait_nodes(gw, 1)
    bad = routed(cluster, routers, "media", 1, 11, secret="wrong-secret-xyz", wait=False)
    evil = cluster.start("router", 1, 3, seeds=[r.seed for r in routers[1]], secret="wrong-secret-xyz", wait=False)
    deadline = time.monotonic() + 20
    while evil.health()[0] == 0:
        assert time.monotonic() < deadline and evil.proc.poll() is None, evil.log()
        time.sleep(0.1)
    # The router starts (routers retry in the background) but stays unlinked and not ready.
    status, data = evil.health()
    assert status == 503 and "not connected to any other router" in data["reason"], data
    # A client cannot start unlinked: the media node keeps retrying its routers (then exits 2).
    while not any("no zone router answers; retrying" in line for line in bad.lines):
        assert time.monotonic() < deadline and bad.proc.poll() is None, bad.log()
        time.sleep(0.1)
    assert bad.health()[0] == 0
    assert evil.info()["routers"] == 0
    assert [n["node"] for n in gw.info()["nodes"]] == [10]
    assert routers[1][0].info()["routers"] == 1  # only its sibling, not the forged router
    bad.kill()
    evil.kill()


def test_duplicated_router_id_is_refused(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=1, per_zone=1)
    dup = cluster.start("router", 1, 1, seeds=[routers[1][0].seed], wait=False)
    assert dup.proc.wait(30) == 2, dup.log()
    dup._drain.join(2)
    assert any("--node-id: router 1 of zone 1 is already running" in line for line in dup.lines), dup.log()


# ---- pure: flags and the dev-cluster plan ------------------------------------------------------------


def test_router_flags_are_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="--cluster-port: a router needs a fixed cluster port"):
        resolve("router", {"secret": "s" * 20}, {})
    with pytest.raises(ConfigError, match="--secret: a router needs the cluster secret"):
        resolve("router", {"cluster_port": "7447"}, {})
    with pytest.raises(ConfigError, match="--seeds: --cluster-mode routers needs the zone's routers"):
        resolve("media", {"cluster_mode": "routers"}, {})
    with pytest.raises(ConfigError, match="--cluster-mode: 'star' is not accepted"):
        resolve("gateway", {"cluster_mode": "star"}, {})
    # A routed media node with several workers needs no cluster port: its workers listen on nothing.
    cfg = resolve("media", {"cluster_mode": "routers", "seeds": "tcp/127.0.0.1:7447", "workers": "2"}, {})
    from trackmesh.cluster.membership import member_config

    for worker in (0, 1):
        mc = member_config(cfg, worker)
        assert (mc.mode, tuple(mc.listen), tuple(mc.seeds)) == ("client", (), ("tcp/127.0.0.1:7447",))
    # With two routers each worker puts its preferred one first (cluster/topology.py preferred_order).
    cfg = resolve("media", {"cluster_mode": "routers", "seeds": "tcp/127.0.0.1:7447,tcp/127.0.0.1:7448"}, {})
    assert tuple(member_config(cfg, 0).seeds) == preferred_order("media/0/1/0", cfg.seeds)


def test_dev_cluster_plan_seeds_routers_across_zones_and_members_from_their_zone() -> None:
    args = Namespace(zones=3, routers_per_zone=2, gateways_per_zone=1, media_per_zone=1, workers=2, http_port=3000,
                     cluster_port=7450, global_gateways=None, log_level="warning", webrtc_port=0,
                     connector=True)  # fmt: skip
    members = plan(args)
    roles = [(m.role, m.zone, m.node) for m in members]
    assert roles[:6] == [("router", z, i) for z in (1, 2, 3) for i in (1, 2)]
    # Each zone: its connector first (node id G+M+1), then its gateways and media nodes.
    assert roles[6:9] == [("connector", 1, 3), ("gateway", 1, 1), ("media", 1, 2)]
    assert [r for r in roles if r[0] == "connector"] == [("connector", z, 3) for z in (1, 2, 3)]
    assert len({m.http_port for m in members}) == len(members)
    router_seeds = [m.seed for m in members[:6]]
    for i in range(6):
        assert seeds_of(members, i) == router_seeds[:i]
    for i, m in enumerate(members[6:-1], start=6):
        assert seeds_of(members, i) == [r.seed for r in members[:6] if r.zone == m.zone], m
    # Last, the global gateway (zone 0, no routers of its own): a client of zone 1's routers.
    glob = members[-1]
    assert (glob.role, glob.zone, glob.is_global, glob.label) == ("gateway", 0, True, "global gateway")
    assert seeds_of(members, len(members) - 1) == router_seeds[:2]
    assert "--global" in command(glob, seeds_of(members, len(members) - 1), args, "s" * 20)
    # One zone: no global gateway unless asked for; --global-gateways 0 turns it off.
    assert not [m for m in plan(Namespace(**{**vars(args), "zones": 1})) if m.is_global]
    assert not [m for m in plan(Namespace(**{**vars(args), "global_gateways": 0})) if m.is_global]
    assert len([m for m in plan(Namespace(**{**vars(args), "global_gateways": 2})) if m.is_global]) == 2
    # --routers-per-zone by default: a mesh for fewer than 8 members (workers counted), else 2 routers per zone.
    auto = Namespace(**{**vars(args), "routers_per_zone": None, "workers": 1})
    assert routers_per_zone(Namespace(**{**vars(auto), "zones": 2, "media_per_zone": 2})) == 0  # 6 + 1 global
    assert routers_per_zone(auto) == 0  # 3 zones x (1 gateway + 1 media) + 1 global = 7
    assert routers_per_zone(Namespace(**{**vars(auto), "media_per_zone": 2})) == 2  # 3 x 3 + 1 = 10
    assert routers_per_zone(Namespace(**{**vars(auto), "zones": 1, "media_per_zone": 2, "workers": 4})) == 2
    assert routers_per_zone(Namespace(**{**vars(auto), "zones": 1, "media_per_zone": 2, "workers": 3})) == 0
    assert routers_per_zone(Namespace(**{**vars(auto), "routers_per_zone": 0, "zones": 8})) == 0


def test_dev_cluster_starts_zones_with_two_routers_each_and_a_global_gateway(tmp_path: Path) -> None:
    """The issue's "Done when": ``dev-cluster --zones 3 --routers-per-zone 2`` (one media node per zone: quicker)."""
    base = _free_range(16)
    proc, lines = _dev_cluster(3, 1, base, "--no-console", routers_per_zone=2, cwd=tmp_path)
    try:
        text = "".join(lines).split("trackmesh dev-cluster:", 1)[1]
        assert "16 processes up" in text and text.count(" router ") == 6, text  # + a connector per zone
        glob = f"http://127.0.0.1:{base + 15}"
        assert f"global gateway (sends each client to the best zone): {glob}" in text, text
        deadline = time.monotonic() + 15
        while True:
            zones = json.loads(http("GET", glob + "/api/global/zones")[2])["data"]["zones"]
            if [(z["zone"], z["nodes"]) for z in zones] == [(1, 1), (2, 1), (3, 1)]:
                break
            assert time.monotonic() < deadline, zones
            time.sleep(0.2)
        body = json.dumps({"room": "r", "ttl": 60}).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
        status, h, raw = http("POST", glob + "/token/whep?zone_rtt=1:40,2:30,3:9", body, headers)
        assert (status, h["x-trackmesh-zone"], h["x-trackmesh-route"]) == (200, "3", "rtt"), (status, h, raw)
        # Each zone's gateway and media node are clients of that zone's routers, spread over both.
        clients = [json.loads(http("GET", f"http://127.0.0.1:{base + k}/api/node/info")[2])["data"]["clients"]
                   for k in range(6)]  # fmt: skip
        assert sum(clients) == 3 * 3 + 1, clients  # gateway, media and connector per zone, and the global gateway
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)
