"""How the cluster's control plane grows: full mesh against zone routers (issue 16 item 3).

Runs ONLY inside a private network namespace (it opens zenoh sessions on 127.0.0.1)::

    scripts/in-netns.sh .venv/bin/python bench/cluster_growth.py --members 25,50 [--zones 5]

Lightweight members: zenoh sessions with a ZenohRegistry each (the room registry media workers
use), no media. Each member puts ``--entries`` registry entries (64 bytes) and watches the whole
``bench/`` prefix (the worst case: every member interested in every entry), and puts a 250-byte
load report every second on ``tm/load/<zone>/<member>``; the first member of each zone subscribes
to its zone's reports, as a zone gateway does. Members are spread over ``--hosts`` processes per
run (several zenoh sessions per process: each session has its own links, so links and traffic are
per member, but the box does not have to hold one Python per member).

- **mesh**: every member is a peer dialling every earlier member (cluster/topology.py);
- **routers**: 2 routers per zone (one process each), routers dial every earlier router, members
  are clients of their zone's routers (``--cluster-mode routers``).

Measured per run: links per member (and per router), the time a new member (its own process)
takes from opening its session to holding every entry of the registry, the time until a
``kill -9``-ed member's entries have vanished from every member, and control traffic: bytes per
second on ``lo`` (the only interface of the namespace: every byte is the cluster's) over an idle
window, divided by the members.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.child_process import HOST, ChildProcess, free_ports, only_loopback

SECRET = "bench-growth-secret"
ENTRY = b"x" * 64
REPORT = json.dumps({"pad": "y" * 200, "sessions": 0, "capacity": 1000}).encode()



def lo_bytes() -> int:
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])  # rx bytes (= tx on lo)
    raise RuntimeError("no lo in /proc/net/dev")


# ---- member host: several sessions in one process, driven by lines on stdin ----------------------


class Counter:
    """A RegistryWatcher that counts entries per member, stamping when a member's entries are gone."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.gone_at: dict[str, float] = {}
        self.complete_at: float | None = None
        self.expect = 0

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.keys.add(key)
        if self.expect and self.complete_at is None and len(self.keys) >= self.expect:
            self.complete_at = time.monotonic()

    def on_registry_delete(self, now: float, key: str) -> None:
        self.keys.discard(key)
        owner = key.split("/")[1]
        if not any(k.split("/")[1] == owner for k in self.keys):
            self.gone_at[owner] = time.monotonic()


@dataclass
class HostedMember:
    name: str
    zone: int
    node: Any
    registry: Any
    counter: Counter
    gateway: bool
    reports: list[int] = field(default_factory=lambda: [0])


def host(spec: dict[str, Any]) -> None:
    import zenoh

    from trackmesh.cluster.topology import links_wanted, open_member
    from trackmesh.cluster.zenoh_registry import ZenohRegistry
    from trackmesh.cluster.zenoh_session import ClusterConfig

    q: queue.Queue[Any] = queue.Queue()

    def drain() -> None:  # the one thread registry callbacks run on (ZenohRegistry's post contract)
        while True:
            q.get()()

    threading.Thread(target=drain, daemon=True).start()

    def post(fn: Any) -> None:
        q.put(fn)

    members: list[HostedMember] = []
    opened_at = time.monotonic()
    for m in spec["members"]:
        cfg = ClusterConfig(SECRET, listen=m["listen"], seeds=m["seeds"], mode=m["mode"])
        node = open_member(cfg, wait=60)
        # As a media node's start does (runtime/cluster_node.py _join): wait for the links before
        # putting anything; a peer's session opens before its links are up, and puts made before
        # that reach nobody (the registry replays entries to watchers, not to late links).
        wanted, until = links_wanted(cfg), time.monotonic() + 30
        while node.links() < wanted and time.monotonic() < until:
            time.sleep(0.01)
        registry = ZenohRegistry(node.session, post, time.monotonic)
        counter = Counter()
        counter.expect = spec.get("expect", 0)
        hm = HostedMember(m["name"], m["zone"], node, registry, counter, m.get("gateway", False))
        if hm.gateway:

            def count_report(_sample: zenoh.Sample, reports: list[int] = hm.reports) -> None:
                reports[0] += 1

            node.session.declare_subscriber(f"tm/load/{hm.zone}/*", count_report)
        members.append(hm)
        done = threading.Event()

        def setup(hm: HostedMember = hm, done: threading.Event = done) -> None:
            for k in range(spec["entries"]):
                hm.registry.put(time.monotonic(), f"bench/{hm.name}/{k}", ENTRY)
            hm.registry.watch(time.monotonic(), "bench/", hm.counter)
            done.set()

        post(setup)
        done.wait()
    print(json.dumps({"event": "opened", "opened_at": opened_at, "at": time.monotonic()}), flush=True)

    def reporter() -> None:
        while True:
            for hm in members:
                with contextlib.suppress(Exception):
                    hm.node.session.put(f"tm/load/{hm.zone}/{hm.name}", REPORT)
            time.sleep(1.0)

    threading.Thread(target=reporter, daemon=True).start()
    received = {"n": 0}
    subs: list[Any] = []
    by_name = {hm.name: hm for hm in members}
    for line in sys.stdin:
        cmd = line.strip()
        words = cmd.split()
        if words[:1] == ["sub"]:  # sub <member> ...: the fan-out track's subscribers
            for name in words[1:]:
                if name in by_name:
                    subs.append(by_name[name].node.session.declare_subscriber(
                        "bench/track", lambda s: received.__setitem__("n", received["n"] + 1)))  # fmt: skip
            print(json.dumps({"event": "subscribed"}), flush=True)
        elif words[:1] == ["pub"]:  # pub <member> <packets> <pps> <size>
            name, packets, pps, size = words[1], int(words[2]), float(words[3]), int(words[4])
            pub = by_name[name].node.session.declare_publisher("bench/track")
            payload, start = b"p" * size, time.monotonic()
            for i in range(packets):
                delay = start + i / pps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.put(payload)
            pub.undeclare()
            print(json.dumps({"event": "published", "s": time.monotonic() - start}), flush=True)
        elif cmd == "received":
            print(json.dumps({"event": "received", "n": received["n"]}), flush=True)
        elif cmd == "stats":
            out = []
            for hm in members:
                box: list[Any] = []
                ev = threading.Event()
                def sample(hm: HostedMember = hm, box: list[Any] = box, ev: threading.Event = ev) -> None:
                    box.append((len(hm.counter.keys), dict(hm.counter.gone_at)))
                    ev.set()

                post(sample)
                ev.wait(5)
                keys, gone = box[0] if box else (-1, {})
                out.append({"name": hm.name, "links": hm.node.links(), "routers": len(hm.node.routers()),
                            "keys": keys, "gone": gone, "complete_at": hm.counter.complete_at,
                            "reports": hm.reports[0]})  # fmt: skip
            print(json.dumps({"event": "stats", "members": out}), flush=True)
        elif cmd == "quit":
            break
    for hm in members:
        hm.registry.close()
        hm.node.close()


# ---- orchestrator ------------------------------------------------------------------------------


class Proc(ChildProcess):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(__file__, "--host", spec, name="host", read_timeout=600, stop_timeout=20)

    def stats(self) -> list[dict[str, Any]]:
        self.send("stats")
        return list(self.read("stats")["members"])


FAN_PACKETS, FAN_PPS, FAN_SIZE = 300, 100.0, 1000


def fan_out(procs: list[Proc], plan: list[dict[str, Any]], zones: int, n_subscribers: int) -> dict[str, Any]:
    """One track (``FAN_PPS`` x ``FAN_SIZE`` bytes) from the first member to ``n_subscribers``
    members spread over the zones: bytes on ``lo`` above the idle rate, in copies of the track."""
    publisher = plan[0]["name"]  # zone 1
    chosen = [m["name"] for m in plan[1 : 1 + n_subscribers]]  # plan assigns zones round-robin
    for p in procs:
        p.send("sub " + " ".join(chosen))
        p.read("subscribed")
    time.sleep(1.0)  # the subscriptions propagate
    b0, t0 = lo_bytes(), time.monotonic()
    time.sleep(3.0)
    idle_bps = (lo_bytes() - b0) / (time.monotonic() - t0)
    host_of = next(p for p in procs if any(m["name"] == publisher for m in p.spec["members"]))
    b0, t0 = lo_bytes(), time.monotonic()
    host_of.send(f"pub {publisher} {FAN_PACKETS} {FAN_PPS} {FAN_SIZE}")
    host_of.read("published")
    time.sleep(0.5)
    extra = (lo_bytes() - b0) - idle_bps * (time.monotonic() - t0)
    got = 0
    for p in procs:
        p.send("received")
        got += int(p.read("received")["n"])
    zones_reached = len({m["zone"] for m in plan if m["name"] in chosen})
    return {
        "fanout_subscribers": len(chosen),
        "fanout_zones": zones_reached,
        "fanout_delivered": round(got / FAN_PACKETS, 2),  # copies delivered per packet (= subscribers)
        "fanout_copies_on_links": round(extra / (FAN_PACKETS * FAN_SIZE), 1),  # payload copies crossing TCP
    }


def run(topology: str, n: int, zones: int, hosts: int, entries: int, idle: float) -> dict[str, Any]:
    ports = iter(free_ports(n + 2 * zones + 2))

    def ep(port: int) -> str:
        return f"tcp/{HOST}:{port}"

    routers: dict[int, list[str]] = {}
    router_procs: list[Proc] = []
    if topology == "routers":
        started: list[str] = []
        for z in range(1, zones + 1):
            for _ in range(2):
                listen = ep(next(ports))
                spec = {"members": [{"name": f"r{z}-{len(routers.get(z, []))}", "zone": z, "listen": [listen],
                                     "seeds": list(started), "mode": "router"}], "entries": 0}  # fmt: skip
                router_procs.append(Proc(spec))
                started.append(listen)
                routers.setdefault(z, []).append(listen)
        for rp in router_procs:
            rp.read("opened")
    # n-1 members in the hosts, one victim alone in its own process (kill -9), then a newcomer.
    specs: list[dict[str, Any]] = []
    listens: list[str] = []
    plan: list[dict[str, Any]] = []
    for i in range(n - 1):
        z = 1 + i % zones
        if topology == "mesh":
            listen = ep(next(ports))
            m = {"name": f"m{i}", "zone": z, "listen": [listen], "seeds": list(listens), "mode": "peer"}
            listens.append(listen)
        else:
            m = {"name": f"m{i}", "zone": z, "listen": [], "seeds": routers[z], "mode": "client"}
        m["gateway"] = i < zones
        plan.append(m)
    for h in range(hosts):
        specs.append({"members": plan[h::hosts], "entries": entries})
    t0 = time.monotonic()
    procs = [Proc(s) for s in specs if s["members"]]
    for p in procs:
        p.read("opened")
    print(f"{topology} {n}: {len(procs)} hosts opened after {time.monotonic() - t0:.1f} s", file=sys.stderr)
    victim_m: dict[str, Any] = {"name": "victim", "zone": 2, "gateway": False}
    if topology == "mesh":
        victim_m.update(listen=[ep(next(ports))], seeds=list(listens), mode="peer")
        listens.extend(victim_m["listen"])
    else:
        victim_m.update(listen=[], seeds=routers[2], mode="client")
    victim = Proc({"members": [victim_m], "entries": entries})
    victim.read("opened")
    total = n * entries
    # Wait until every member holds the whole registry.
    while True:
        st = [s for p in procs for s in p.stats()]
        if all(s["keys"] >= total for s in st):
            break
        if time.monotonic() - t0 > float(os.environ.get("GROWTH_CONVERGE_LIMIT", "300")):
            raise TimeoutError(f"registry incomplete: {sorted((s['keys'], s['links']) for s in st)[:5]} of {total}")
        time.sleep(1.0)
    converged_s = time.monotonic() - t0
    time.sleep(2.0)
    # Control traffic while idle (keep-alives, load reports).
    b0, c0 = lo_bytes(), time.monotonic()
    time.sleep(idle)
    bps = (lo_bytes() - b0) / (time.monotonic() - c0)
    links = [s["links"] for p in procs for s in p.stats()]
    router_links = [s["links"] for rp in router_procs for s in rp.stats()]
    # A newcomer: from opening its session to holding every entry (its own included).
    if topology == "mesh":
        new_m = {"name": "newcomer", "zone": 3, "listen": [ep(next(ports))], "seeds": list(listens), "mode": "peer"}
    else:
        new_m = {"name": "newcomer", "zone": 3, "listen": [], "seeds": routers[3], "mode": "client"}
    newcomer = Proc({"members": [new_m], "entries": entries, "expect": total + entries})
    opened = newcomer.read("opened")
    join_s = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = newcomer.stats()[0]
        if s["complete_at"] is not None:
            join_s = s["complete_at"] - opened["opened_at"]
            break
        time.sleep(0.05)
    # kill -9 of the victim: until its entries are gone from every member.
    killed = time.monotonic()
    os.kill(victim.p.pid, signal.SIGKILL)
    victim.p.wait()
    vanish_s = None
    deadline = killed + 30
    while time.monotonic() < deadline:
        st = [s for p in [*procs, newcomer] for s in p.stats()]
        if all("victim" in s["gone"] for s in st):
            vanish_s = max(s["gone"]["victim"] for s in st) - killed
            break
        time.sleep(0.1)
    fanout = fan_out(procs, plan, zones, n_subscribers=min(20, len(plan) - 1))
    for p in [newcomer, *procs, *router_procs]:
        p.stop()
    return {
        **fanout,
        "topology": topology,
        "members": n,
        "zones": zones,
        "routers": len(router_procs),
        "links_per_member": round(sum(links) / len(links), 1),
        "links_per_router": round(sum(router_links) / len(router_links), 1) if router_links else None,
        "registry_converged_s": round(converged_s, 2),
        "newcomer_full_registry_s": round(join_s, 3) if join_s is not None else None,
        "killed_entries_gone_s": round(vanish_s, 3) if vanish_s is not None else None,
        "control_bytes_per_s_per_member": round(bps / (n + len(router_procs))),
        "control_bytes_per_s_total": round(bps),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--members", default="25,50", help="comma-separated member counts (default 25,50)")
    ap.add_argument("--topologies", default="mesh,routers")
    ap.add_argument("--zones", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=5, help="processes holding the members (default 5)")
    ap.add_argument("--entries", type=int, default=4, help="registry entries per member (default 4)")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle traffic measured (default 5)")
    ap.add_argument("--out", help="append the JSON results to this file")
    args = ap.parse_args()
    if args.host:
        host(json.loads(args.host))
        return 0
    if not only_loopback():
        print("run me inside scripts/in-netns.sh (I open zenoh sessions)", file=sys.stderr)
        return 2
    results = []
    for n in (int(x) for x in args.members.split(",")):
        for topology in args.topologies.split(","):
            r = run(topology, n, args.zones, args.hosts, args.entries, args.idle)
            r["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
