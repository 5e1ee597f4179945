"""Cluster topologies: the full mesh of peers, or zone routers with their clients.

**Full mesh** (``--cluster-mode mesh``, the default, for tiny clusters): every member (each media
*worker*, each gateway) is a zenoh peer that dials every earlier member; n(n-1)/2 links. It is the
default because it measurably helps a handful of members (bench/cluster_small.py: one hop, 48-66 us
faster at p50 than through a router up to 4 members; no router process to run) and stops paying
from ~8 members (no faster, joins take ~0.5 s against 10-30 ms); config.py warns from 8 seeds.

**Zone routers** (``--cluster-mode routers``): each zone runs zenoh routers (``trackmesh router``,
a process of its own). A router listens on its cluster port and dials the other routers, of its
zone and of the other zones; routers route among themselves by link state, so any router graph
that is connected works (dev-cluster gives each router every earlier router). Media workers and
gateways are zenoh *clients* of their zone's routers: their ``--seeds`` name those routers only,
and each holds exactly one link, to its *preferred* router when it answers, else the next one.

**Spreading members over the routers**: a member's preferred router is picked by a stable hash of
its member key (``<role>/<zone>/<node>/<worker>``, BLAKE2b, the same on every host and Python
version): the member tries the zone's routers starting at ``hash(key) % len(routers)`` and
wrapping around. So the members of a zone split about evenly over its routers (each router carries
about half the zone's links and cross-zone bytes), and losing one router moves only the members
that preferred it; no restart, no coordination. A router reports its clients
(``/api/node/info`` -> ``clients``), a member the router it holds (``router``, ``router_preferred``).
The cost: a track from another zone with interested members on both routers enters the zone once
per router (twice with two routers), instead of once.

Why clients and not peers of the routers (measured with zenoh 1.10, 3 zones x 2 routers, scouting
and gossip off): a peer that dials both routers of its zone receives each publication 2-4 times
(both routers forward to it); a client holds one link, so every publication reaches it once, and a
track enters a zone once per router that has interested clients (with the same router order on
every member of a zone, once). When that router dies, the client's session reconnects to the next
router in its list on its own, in ~3 ms on loopback; its declarations (subscribers, queryables,
liveliness tokens) are re-declared by zenoh. Other members see its liveliness tokens go and come
back within those milliseconds, which the registry treats as a member leaving and re-joining
(entries removed, then replayed): viewers recover; see docs/cluster.md, "Zone routers".

Why a router role of its own and not router mode in the gateway processes: a router carries every
cross-zone byte of its zone, including media, while a gateway's job is HTTP routing; keeping them
apart lets either restart (upgrades, crashes, GC pauses of the Python HTTP stack) without touching
the other, and lets a zone size them separately (two routers, any number of gateways). The router
process is small: a zenoh session in router mode (its routing runs on zenoh's Rust threads) plus a
health/metrics HTTP API.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import zenoh

from .zenoh_session import ClusterConfig, ClusterConfigError, ZenohNode, open_node

log = logging.getLogger("trackmesh.cluster")

# How long a client of the routers retries at start before giving up (exit code 2). zenoh clients
# cannot start unlinked (peers and routers can: they retry in the background), so a member of a
# routed zone waits here, logging, until one of its routers answers.
ROUTER_WAIT = 30.0
ROUTER_RETRY = 0.5


def preferred_order(member_key: str, routers: Sequence[str]) -> tuple[str, ...]:
    """``routers`` (duplicates dropped) rotated so that the member's preferred router comes first.

    The preferred router is ``blake2b(member_key) % len(routers)``: stable across processes, hosts
    and Python versions (``hash()`` is salted per process; CRC-32 is linear, so keys that differ in
    their last character, as workers' do, fall on the same router far too often), so a member returns to the same router
    after a restart, and the members of a zone spread over its routers.
    """
    unique = tuple(dict.fromkeys(routers))
    if len(unique) < 2:
        return unique
    digest = hashlib.blake2b(member_key.encode(), digest_size=8).digest()
    first = int.from_bytes(digest, "big") % len(unique)
    return unique[first:] + unique[:first]


def router_client_config(secret: str | bytes, routers: Sequence[str], member_key: str = "") -> ClusterConfig:
    """A member (media worker, gateway) of a routed zone: a client of the zone's routers.

    It listens on nothing (nobody dials a client) and links to its preferred router (picked by
    ``member_key``, :func:`preferred_order`; without a key, the first of ``routers``) when it
    answers, else to the next one; zenoh tries the seeds in order, the others are its failover.
    """
    seeds = preferred_order(member_key, routers) if member_key else tuple(dict.fromkeys(routers))
    return ClusterConfig(secret, listen=(), seeds=seeds, mode="client")


def router_config(secret: str | bytes, listen: str, routers: Sequence[str]) -> ClusterConfig:
    """A zone router: listens on ``listen`` for the zone's clients and the other routers, dials ``routers``."""
    seeds = tuple(s for s in dict.fromkeys(routers) if s != listen)
    return ClusterConfig(secret, listen=(listen,), seeds=seeds, mode="router")


def open_member(cfg: ClusterConfig, wait: float = ROUTER_WAIT) -> ZenohNode:
    """Open a member's session: at once for a peer or router; a client retries until a router answers.

    Blocking: call it from an executor thread. Raises ClusterConfigError after ``wait`` seconds.
    """
    if cfg.mode != "client":
        return open_node(cfg)
    deadline = time.monotonic() + wait
    attempts = 0
    while True:
        try:
            return open_node(cfg)
        except zenoh.ZError as exc:
            attempts += 1
            seeds = ",".join(cfg.seeds)
            if time.monotonic() >= deadline:
                raise ClusterConfigError(
                    f"no zone router answers after {wait:.0f} s ({seeds}): are they running, with the same secret?"
                ) from exc
            if attempts == 1 or attempts % 10 == 0:
                log.warning("no zone router answers; retrying", extra={"fields": {"seeds": seeds}})
            time.sleep(ROUTER_RETRY)


def links_wanted(cfg: ClusterConfig) -> int:
    """How many links a member waits for at start before it checks for a duplicated node id.

    A peer of the mesh links to every seed; a client to one router; a router to every other router.
    """
    if cfg.mode == "client":
        return 1 if cfg.seeds else 0
    return len(cfg.seeds)
