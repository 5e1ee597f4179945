"""Zone routers (``trackmesh router``, ``--cluster-mode routers``) as real processes, loopback only.

Routers dial every earlier router (of any zone); gateways and media nodes are zenoh clients of
their own zone's routers (cluster/topology.py, docs/cluster.md "Zone routers"). Runs inside the
private network namespace (conftest's guard); scouting is off, every endpoint is tcp/127.0.0.1.
The ``routed`` helper is shared with tests/e2e/test_routers.py.
"""

from __future__ import annotations

import time
from argparse import Namespace
from collections.abc import Iterator

import pytest

from trackmesh.cli.dev_cluster import plan, seeds_of
from trackmesh.config import ConfigError, resolve

from .test_roles import Cluster, Member, http

ROUTED = ("--cluster-mode", "routers")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


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
    # kill -9 of the router zone 1's members use (the first in their list): they move to the other.
    routers[1][0].kill()
    routers[1][0].lines.append("(killed)")
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
    print(f"\nzone 1 members back on router 1/2 {time.monotonic() - killed:.2f} s after kill -9 of router 1/1")


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


def test_dev_cluster_plan_seeds_routers_across_zones_and_members_from_their_zone() -> None:
    args = Namespace(zones=3, routers_per_zone=2, gateways_per_zone=1, media_per_zone=1, workers=2,
                     http_port=3000, cluster_port=7450)  # fmt: skip
    members = plan(args)
    roles = [(m.role, m.zone, m.node) for m in members]
    assert roles[:6] == [("router", z, i) for z in (1, 2, 3) for i in (1, 2)]
    assert len({m.http_port for m in members}) == len(members)
    router_seeds = [m.seed for m in members[:6]]
    for i in range(6):
        assert seeds_of(members, i) == router_seeds[:i]
    for i, m in enumerate(members[6:], start=6):
        assert seeds_of(members, i) == [r.seed for r in members[:6] if r.zone == m.zone], m
