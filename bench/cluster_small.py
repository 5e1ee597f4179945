"""Tiny clusters: does the full mesh beat zone routers at 2, 3 and 4 nodes? (issue 16)

Runs ONLY inside a private network namespace (it opens zenoh sessions on 127.0.0.1)::

    scripts/in-netns.sh .venv/bin/python bench/cluster_small.py [--nodes 2,3,4] [--rounds 3]

One zone. Every node is a process of its own with one cluster member, wired as a media worker
is (runtime/worker_cluster.py): a zenoh session, a ZenohRegistry and a ZenohChannelHub driven by
the node's event loop (``post = loop.call_soon_threadsafe``). Topologies:

- ``mesh``: every node a peer dialling every earlier node (``--cluster-mode mesh``);
- ``routers1``: one router process, every node its client;
- ``routers2``: two router processes dialling each other, every node a client of both, its
  preferred one first (cluster/topology.py ``preferred_order``: members spread over the routers,
  so a packet between nodes on different routers crosses both: three hops).

Measured per run, with CLOCK_MONOTONIC stamps (system-wide, so they compare across processes):

- **hop**: node 0 publishes a media channel (1,200-byte MediaPackets, stamp in the payload, paced
  at ``--pps``), every other node subscribes; delay from ``handle.send`` to the receiving node's
  ``on_channel_packet`` (serialization, zenoh, TCP hop(s), the hand-over to the receiving loop).
  Also a room message (``send_message`` -> ``on_channel_message``, 100 bytes, 50 per second).
- **join**: the last node starts after the others hold each other's entries; from the start of
  its session open to (a) its links being up, (b) holding every node's registry entries, and
  (c) every other node holding its entries (what "a new node is visible" means to the cluster).

Rounds alternate the topologies so that the box's background load hits them alike; the summary
is the median over rounds of each run's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.child_process import HOST, ChildProcess, free_ports, only_loopback

SECRET = "bench-small-secret"
CHANNEL = 42
MSG_CHANNEL = 43
PAYLOAD = 1200
ENTRIES = 4



def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- one node (its own process) ---------------------------------------------------------------


class Node:
    """Registry watcher, media subscriber, message subscriber and publisher of one bench node."""

    def __init__(self, name: str, expect: int) -> None:
        self.name = name
        self.expect = expect
        self.keys: set[str] = set()
        self.owner_seen: dict[str, float] = {}  # owner -> when all its ENTRIES were held
        self.complete_at: float | None = None
        self.delays_us: list[float] = []
        self.msg_delays_us: list[float] = []

    # RegistryWatcher
    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.keys.add(key)
        owner = key.split("/")[1]
        if owner not in self.owner_seen and sum(1 for k in self.keys if k.split("/")[1] == owner) >= ENTRIES:
            self.owner_seen[owner] = time.monotonic()
        if self.complete_at is None and len(self.keys) >= self.expect:
            self.complete_at = time.monotonic()

    def on_registry_delete(self, now: float, key: str) -> None:
        self.keys.discard(key)

    # ChannelSubscriber
    def on_channel_packet(self, channel: int, pkt: Any) -> None:
        self.delays_us.append((time.monotonic_ns() - int.from_bytes(pkt.payload[:8], "big")) / 1000)

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass

    # MessageSubscriber
    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        if sender != self.name:
            self.msg_delays_us.append((time.monotonic_ns() - int.from_bytes(data[:8], "big")) / 1000)

    # ChannelPublisher
    def on_channel_feedback(self, now: float, channel: int, fb: Any) -> None:
        pass


async def node_main(spec: dict[str, Any]) -> None:
    from trackmesh.cluster.topology import links_wanted, open_member
    from trackmesh.cluster.zenoh_channels import ZenohChannelHub
    from trackmesh.cluster.zenoh_registry import ZenohRegistry
    from trackmesh.cluster.zenoh_session import ClusterConfig
    from trackmesh.core.model import MediaCodec, MediaPacket

    loop = asyncio.get_running_loop()
    cfg = ClusterConfig(SECRET, listen=spec["listen"], seeds=spec["seeds"], mode=spec["mode"])
    opened_at = time.monotonic()
    zn = await loop.run_in_executor(None, open_member, cfg)
    wanted = links_wanted(cfg)
    # As a media worker's start does (runtime/cluster_node.py): wait for the links, then announce.
    while zn.links() < wanted and time.monotonic() - opened_at < 30:
        await asyncio.sleep(0.002)
    linked_at = time.monotonic()
    node = Node(spec["name"], spec["expect"])
    def post(fn: Any) -> None:
        loop.call_soon_threadsafe(fn)

    registry = ZenohRegistry(zn.session, post, time.monotonic)
    hub = ZenohChannelHub(zn.session, post, time.monotonic)
    for k in range(ENTRIES):
        registry.put(time.monotonic(), f"bench/{spec['name']}/{k}", b"x" * 64)
    registry.watch(time.monotonic(), "bench/", node)
    hub.subscribe_messages(time.monotonic(), MSG_CHANNEL, node)
    print(json.dumps({"event": "opened", "opened_at": opened_at, "linked_at": linked_at}), flush=True)

    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "quit")

    threading.Thread(target=read_stdin, daemon=True).start()
    while True:
        words = (await lines.get()).split()
        if not words or words[0] == "quit":
            break
        if words[0] == "sub":
            hub.subscribe(time.monotonic(), CHANNEL, node)
            print(json.dumps({"event": "subscribed"}), flush=True)
        elif words[0] == "pub":  # pub <subscribers> <packets> <pps>
            subscribers, packets, pps = int(words[1]), int(words[2]), float(words[3])
            handle = hub.start_publish(time.monotonic(), CHANNEL, node)
            export = hub._exports[CHANNEL]
            for _ in range(1000):
                if export.interest:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # every subscriber's interest and the source token propagate
            body = bytes(PAYLOAD - 8)
            start = time.monotonic()
            for seq in range(packets):
                delay = start + seq / pps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                stamp = time.monotonic_ns().to_bytes(8, "big")
                handle.send(MediaPacket(MediaCodec.VP8, 96, seq, seq * 90, False, False, stamp + body))
                if seq % 20 == 0:  # a room message every 20 packets
                    msg = time.monotonic_ns().to_bytes(8, "big") + bytes(92)
                    hub.send_message(time.monotonic(), MSG_CHANNEL, node.name, msg)
            await asyncio.sleep(0.5)
            handle.stop(time.monotonic())
            print(json.dumps({"event": "published", "subscribers": subscribers}), flush=True)
        elif words[0] == "stats":
            out = {
                "event": "stats",
                "keys": len(node.keys),
                "complete_at": node.complete_at,
                "owner_seen": node.owner_seen,
                "delays_us": node.delays_us,
                "msg_delays_us": node.msg_delays_us,
                "links": zn.links(),
                "routers": len(zn.routers()),
            }
            print(json.dumps(out), flush=True)
    hub.close()
    registry.close()
    zn.close()


def router_main(spec: dict[str, Any]) -> None:
    from trackmesh.cluster.topology import router_config
    from trackmesh.cluster.zenoh_session import open_node

    zn = open_node(router_config(SECRET, spec["listen"][0], spec["seeds"]))
    while zn.links() < len(spec["seeds"]):
        time.sleep(0.01)
    print(json.dumps({"event": "opened"}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    zn.close()


def child(spec: dict[str, Any]) -> None:
    if spec["mode"] == "router":
        router_main(spec)
        return
    from trackmesh.runtime.loop import new_event_loop

    loop = new_event_loop()
    try:
        loop.run_until_complete(node_main(spec))
    finally:
        loop.close()


# ---- orchestrator ------------------------------------------------------------------------------


class Proc(ChildProcess):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(__file__, "--child", spec, name=str(spec["name"]), read_timeout=60, stop_timeout=10)

    def stats(self) -> dict[str, Any]:
        self.send("stats")
        return self.read("stats")


def run(topology: str, n: int, packets: int, pps: float) -> dict[str, Any]:
    from trackmesh.cluster.topology import preferred_order

    ports = iter(free_ports(n + 2))

    def ep(port: int) -> str:
        return f"tcp/{HOST}:{port}"
    routers: list[str] = []
    router_procs: list[Proc] = []
    for i in range({"mesh": 0, "routers1": 1, "routers2": 2}[topology]):
        listen = ep(next(ports))
        router_procs.append(Proc({"name": f"r{i}", "mode": "router", "listen": [listen], "seeds": list(routers)}))
        routers.append(listen)
    for rp in router_procs:
        rp.read("opened")
    specs: list[dict[str, Any]] = []
    listens: list[str] = []
    for i in range(n):
        name = f"n{i}"
        spec: dict[str, Any]
        if topology == "mesh":
            listen = ep(next(ports))
            spec = {"name": name, "mode": "peer", "listen": [listen], "seeds": list(listens)}
            listens.append(listen)
        else:  # the member key a media node's worker would have (cluster/membership.py member_key)
            spec = {"name": name, "mode": "client", "listen": [],
                    "seeds": list(preferred_order(f"media/1/{10 + i}/0", routers))}  # fmt: skip
        spec["expect"] = n * ENTRIES if i == n - 1 else (n - 1) * ENTRIES
        specs.append(spec)
    procs = [Proc(s) for s in specs[:-1]]
    for p in procs:
        p.read("opened")
    deadline = time.monotonic() + 30
    while not all(p.stats()["keys"] >= (n - 1) * ENTRIES for p in procs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topology} {n}: the first nodes never saw each other")
        time.sleep(0.05)
    time.sleep(0.5)
    # The newcomer: open -> linked -> holds the whole registry; every other node holds its entries.
    newcomer = Proc(specs[-1])
    opened = newcomer.read("opened")
    procs.append(newcomer)
    deadline = time.monotonic() + 30
    join: dict[str, float] = {}
    while time.monotonic() < deadline:
        st = [p.stats() for p in procs]
        seen = [s["owner_seen"].get(specs[-1]["name"]) for s in st[:-1]]
        if st[-1]["complete_at"] is not None and all(t is not None for t in seen):
            join = {
                "join_linked_ms": (opened["linked_at"] - opened["opened_at"]) * 1000,
                "join_holds_registry_ms": (st[-1]["complete_at"] - opened["opened_at"]) * 1000,
                "join_visible_everywhere_ms": (max(t for t in seen if t is not None) - opened["opened_at"]) * 1000,
            }
            break
        time.sleep(0.02)
    # The hop: node 0 publishes, every other node subscribes.
    for p in procs[1:]:
        p.send("sub")
        p.read("subscribed")
    procs[0].send(f"pub {n - 1} {packets} {pps}")
    procs[0].read("published", timeout=packets / pps + 60)
    time.sleep(0.3)
    delays: list[float] = []
    msg_delays: list[float] = []
    routers_of: list[int] = []
    for p in procs[1:]:
        s = p.stats()
        delays += s["delays_us"]
        msg_delays += s["msg_delays_us"]
        routers_of.append(s["routers"])
    links = [p.stats()["links"] for p in procs]
    for p in [*procs, *router_procs]:
        p.stop()
    expected = packets * (n - 1)
    return {
        "topology": topology,
        "nodes": n,
        "links_per_node": round(sum(links) / len(links), 2),
        "received": round(len(delays) / expected, 3),
        "hop_p50_us": round(percentile(delays, 0.5)) if delays else None,
        "hop_p99_us": round(percentile(delays, 0.99)) if delays else None,
        "msg_p50_us": round(percentile(msg_delays, 0.5)) if msg_delays else None,
        "msg_p99_us": round(percentile(msg_delays, 0.99)) if msg_delays else None,
        **{k: round(v, 1) for k, v in join.items()},
    }


FIGURES = ("hop_p50_us", "hop_p99_us", "msg_p50_us", "msg_p99_us", "join_linked_ms", "join_holds_registry_ms",
           "join_visible_everywhere_ms", "links_per_node", "received")  # fmt: skip


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["nodes"], r["topology"]) for r in results})
    for n, topology in keys:
        runs = [r for r in results if (r["nodes"], r["topology"]) == (n, topology)]
        row: dict[str, Any] = {"nodes": n, "topology": topology, "runs": len(runs)}
        for f in FIGURES:
            values = [r[f] for r in runs if r.get(f) is not None]
            row[f] = round(statistics.median(values), 2) if values else None
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", default="2,3,4", help="comma-separated node counts (default 2,3,4)")
    ap.add_argument("--topologies", default="mesh,routers1,routers2")
    ap.add_argument("--rounds", type=int, default=3, help="runs per (nodes, topology), interleaved (default 3)")
    ap.add_argument("--packets", type=int, default=1500, help="media packets per run (default 1500)")
    ap.add_argument("--pps", type=float, default=500.0, help="media packets per second (default 500)")
    ap.add_argument("--out", help="append every run's JSON to this file")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0
    if not only_loopback():
        print("run me inside scripts/in-netns.sh (I open zenoh sessions)", file=sys.stderr)
        return 2
    results = []
    for rnd in range(args.rounds):
        for n in (int(x) for x in args.nodes.split(",")):
            for topology in args.topologies.split(","):
                r = run(topology, n, args.packets, args.pps)
                r["round"] = rnd
                r["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
                print(json.dumps(r), flush=True)
                results.append(r)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print("median over rounds:")
    for row in summarize(results):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
