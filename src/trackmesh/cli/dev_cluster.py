"""``trackmesh dev-cluster``: a local cluster on loopback, every member a separate process.

    trackmesh dev-cluster --zones 2 --media-per-zone 2 [--gateways-per-zone 1] [--http-port 3000]
    trackmesh dev-cluster --zones 3 --routers-per-zone 2 [--global-gateways 1]

Zones are numbered 1..Z; in each, gateways get node ids 1..G, media nodes G+1..G+M and the zone's
connector (event log and webhooks, unless ``--no-connector``) G+M+1; it starts first in its zone
and keeps its log in ``trackmesh-data/dev-cluster/zone-<Z>.db``. Member k (in start order) serves
HTTP on ``--http-port + k`` and the cluster on ``--cluster-port + k * workers`` (127.0.0.1 only).

Without routers every member seeds from every member started before it, so the members form a
full mesh: the default for fewer than 8 members (gateways, media workers and global gateways
counted); from 8 members ``--routers-per-zone`` defaults to 2 (docs/cluster.md, "Tiny clusters:
mesh or routers"); ``--routers-per-zone 0`` keeps the mesh. With ``--routers-per-zone R`` the
routers of every zone start first (router ids 1..R of their zone; each dials every earlier
router), then each zone's gateways and media nodes run with ``--cluster-mode routers`` and seed
from their zone's routers only. With two zones or more a global gateway (``gateway --global``,
zone 0, node ids 1..N) starts last, above the zones; with routers it is a client of one zone's
routers (global gateway i of zone ``i % zones + 1``'s). The URLs are
printed once every member is healthy; Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from trackmesh.cli.parser import OneLineParser
from trackmesh.config import FLAGS, MESH_ADVICE_SEEDS, ConfigError

HOST = "127.0.0.1"
DATA_DIR = "trackmesh-data/dev-cluster"  # the connectors' logs, one SQLite file per zone
CONSOLE_NODE = 1  # the console: zone 0 (above the zones, like global gateways), node 1


@dataclass
class Member:
    role: str
    zone: int
    node: int
    http_port: int
    cluster_port: int
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    is_global: bool = False  # a global gateway (role gateway, --global, zone 0)

    @property
    def label(self) -> str:
        return "global gateway" if self.is_global else self.role

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def seed(self) -> str:
        last = self.cluster_port + self.workers - 1
        return f"tcp/{HOST}:{self.cluster_port}" + (f"-{last}" if last != self.cluster_port else "")


DESCRIPTION = """\
A local cluster on loopback, every member a separate process:

  trackmesh dev-cluster --zones 2 --media-per-zone 2 [--gateways-per-zone 1] [--http-port 3000]

Zones are numbered 1..Z; in each, gateways get node ids 1..G, media nodes G+1..G+M and the zone's
connector (event log, webhooks, log API; --no-connector for none) G+M+1: it starts first in its
zone and keeps its log in trackmesh-data/dev-cluster/zone-<Z>.db (webhooks: set TRACKMESH_HOOK_URL).
Member k (in start order) serves HTTP on --http-port + k and the cluster on --cluster-port + k *
workers (127.0.0.1 only); it seeds from every member started before it, so the members form a full
mesh (the default for fewer than 8 members: gateways + media workers + global gateways, the
connectors not counted; from 8 members two routers per zone start unless --routers-per-zone 0).

  trackmesh dev-cluster --zones 3 --routers-per-zone 2

With --routers-per-zone R the routers of every zone start first (router ids 1..R of their zone;
each dials every earlier router), then each zone's gateways and media nodes run with
--cluster-mode routers and seed from their zone's routers only (docs/cluster.md, "Zone routers").

With --zones 2 or more, --global-gateways N (default 1) global gateways start last (gateway --global,
zone 0): they send each new session to the best zone (docs/cluster.md, "Global gateway").
A console (trackmesh console, zone 0) starts last unless --no-console: its /console shows every zone,
node and room (docs/console.md). The URLs are printed once every member is healthy; Ctrl-C (or
SIGTERM) stops them all."""


def _int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; accepted: an integer {low}..{high}")
        return value

    return parse


def _member_flag(name: str) -> Any:
    """A value every member gets, checked once here with the members' own rule (config.py), so a
    bad one is one line from dev-cluster and not one error per member."""
    flag = next(f for f in FLAGS if f.name == name)

    def parse(text: str) -> Any:
        try:
            flag.parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None
        return text

    return parse


def _apps_file(text: str) -> str:
    """``--apps``: an existing file, as an absolute path (the members may run elsewhere)."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return os.path.abspath(text)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="trackmesh dev-cluster", description=DESCRIPTION,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--zones", type=_int(1, 64), default=1, help="number of zones (default 1)")
    p.add_argument("--media-per-zone", type=_int(1, 32), default=2, help="media nodes per zone, 1..32 (default 2)")
    p.add_argument("--gateways-per-zone", type=_int(0, 8), default=1, help="gateways per zone, 0..8 (default 1)")
    p.add_argument("--routers-per-zone", type=_int(0, 8), default=None,
                   help="zenoh routers per zone, 0..8; 0 = full mesh, no routers (default: 0 for fewer than 8 "
                        "members, i.e. gateways + media workers + global gateways, else 2)")  # fmt: skip
    p.add_argument("--global-gateways", type=_int(0, 8), default=None,
                   help="global gateways above the zones, 0..8 (default 1 with --zones 2 or more, else 0)")  # fmt: skip
    p.add_argument("--connector", action=argparse.BooleanOptionalAction, default=True,
                   help="a connector per zone: event log, webhooks (TRACKMESH_HOOK_URL), log API (default: yes)")
    p.add_argument("--apps", type=_apps_file, default=None, metavar="FILE",
                   help="multi-tenancy: each zone's connector takes this --apps file and hands the list to the "
                        "zone's members and the console (docs/connector.md); default: the single-tenant app only")
    p.add_argument("--console", action=argparse.BooleanOptionalAction, default=True,
                   help="an operator's console for the whole cluster, started last (default: yes)")
    p.add_argument("--workers", type=_int(1, 64), default=1, help="media workers per media node (default 1)")
    p.add_argument("--http-port", type=_int(1, 65535), default=3000, help="first HTTP port (default 3000)")
    p.add_argument("--cluster-port", type=_int(1, 65535), default=7450, help="first cluster port (default 7450)")
    p.add_argument("--webrtc-port", type=_int(0, 65535), default=0,
                   help="first UDP port, 0 = let each node choose (default)")  # fmt: skip
    p.add_argument("--secret", type=_member_flag("--secret"), default=None,
                   help="cluster secret, 16+ characters (default: $TRACKMESH_SECRET, else generated)")  # fmt: skip
    p.add_argument("--log-level", type=_member_flag("--log-level"), default="warning",
                   help="log level of the members: debug, info, warning or error (default warning)")  # fmt: skip
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for every member (default 60)")
    return p


def plan(args: argparse.Namespace) -> list[Member]:
    members: list[Member] = []
    k = 0
    for zone in range(1, args.zones + 1):
        for i in range(args.routers_per_zone):
            cluster_port = args.cluster_port + sum(m.workers for m in members)
            members.append(Member("router", zone, i + 1, args.http_port + k, cluster_port, 1))
            k += 1
    for zone in range(1, args.zones + 1):
        if args.connector:
            cluster_port = args.cluster_port + sum(m.workers for m in members)
            node = args.gateways_per_zone + args.media_per_zone + 1
            members.append(Member("connector", zone, node, args.http_port + k, cluster_port, 1))
            k += 1
        for i in range(args.gateways_per_zone + args.media_per_zone):
            role = "gateway" if i < args.gateways_per_zone else "media"
            workers = args.workers if role == "media" else 1
            cluster_port = args.cluster_port + sum(m.workers for m in members)
            members.append(Member(role, zone, i + 1, args.http_port + k, cluster_port, workers))
            k += 1
    for i in range(global_gateways(args)):
        cluster_port = args.cluster_port + sum(m.workers for m in members)
        members.append(Member("gateway", 0, i + 1, args.http_port + k, cluster_port, 1, is_global=True))
        k += 1
    if getattr(args, "console", False):
        cluster_port = args.cluster_port + sum(m.workers for m in members)
        members.append(Member("console", 0, CONSOLE_NODE, args.http_port + k, cluster_port, 1))
    return members


def routers_per_zone(args: argparse.Namespace) -> int:
    """``--routers-per-zone``; by default a full mesh for a handful of members, zone routers from
    ``MESH_ADVICE_SEEDS`` (8) members on, as docs/cluster.md ("Tiny clusters: mesh or routers") advises."""
    if args.routers_per_zone is not None:
        return int(args.routers_per_zone)
    # The zones' connectors are not counted: each takes only event traffic, no media channels.
    members = args.zones * (args.gateways_per_zone + args.media_per_zone * args.workers) + global_gateways(args)
    return 2 if members >= MESH_ADVICE_SEEDS else 0


def global_gateways(args: argparse.Namespace) -> int:
    """``--global-gateways``; by default one above two zones or more (one zone needs none)."""
    wanted = getattr(args, "global_gateways", None)
    if wanted is None:
        return 1 if args.zones >= 2 and args.gateways_per_zone else 0
    return int(wanted)


def command(m: Member, seeds: list[str], args: argparse.Namespace, secret: str) -> list[str]:
    cmd = [sys.executable, "-m", "trackmesh.cli.main", m.role, "--zone", str(m.zone), "--node-id", str(m.node),
           "--http-port", str(m.http_port), "--cluster-ip", HOST, "--cluster-port", str(m.cluster_port),
           "--secret", secret, "--log-level", args.log_level]  # fmt: skip
    if seeds:
        cmd += ["--seeds", ",".join(seeds)]
    if m.is_global:
        cmd += ["--global"]
    if args.routers_per_zone and m.role != "router":
        cmd += ["--cluster-mode", "routers"]
    if m.role == "connector":
        cmd += ["--connector-db", f"sqlite:///{DATA_DIR}/zone-{m.zone}.db"]
        if getattr(args, "apps", None):
            cmd += ["--apps", args.apps]
    if m.role == "media":
        cmd += ["--node-ip", HOST, "--workers", str(m.workers)]
        if args.webrtc_port:
            cmd += ["--webrtc-port", str(args.webrtc_port + (m.cluster_port - args.cluster_port))]
    return cmd


def seeds_of(members: list[Member], i: int) -> list[str]:
    """Whom member ``i`` dials: every earlier member (mesh); with routers, a router dials every
    earlier router and any other member its zone's routers (cluster/topology.py); global gateway
    ``n`` (zone 0, no routers of its own) those of zone ``n % zones + 1``."""
    m = members[i]
    routers = [r for r in members if r.role == "router"]
    if not routers:
        return [earlier.seed for earlier in members[:i]]
    if m.role == "router":
        return [earlier.seed for earlier in members[:i] if earlier.role == "router"]
    zone = m.zone
    if m.is_global or m.role == "console":
        zones = sorted({r.zone for r in routers})
        zone = zones[(m.node - 1) % len(zones)]
    return [r.seed for r in routers if r.zone == zone]


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/api/node/health", timeout=2) as resp:
            return bool(json.loads(resp.read())["data"]["ready"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return False


PR_SET_PDEATHSIG = 1  # prctl(2), Linux


def _find_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux


# Looked up once here, in the parent: the child between fork and exec must not load libraries (another thread of
# the parent may have held the loader's lock at fork time).
_PRCTL = _find_prctl()


def die_with_parent() -> None:
    """``preexec_fn`` for member processes: the kernel sends them SIGTERM when dev-cluster dies, even by SIGKILL
    (prctl(2) PR_SET_PDEATHSIG), so a killed dev-cluster never leaves members holding its ports. No-op off Linux."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_all(members: list[Member], sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
    for m in members:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for m in members:
        if m.proc is None:
            continue
        try:
            m.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.routers_per_zone = routers_per_zone(args)
    if args.secret is None and os.environ.get("TRACKMESH_SECRET"):
        try:
            args.secret = _member_flag("--secret")(os.environ["TRACKMESH_SECRET"])
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRACKMESH_SECRET: {exc}")
    last = args.http_port + len(plan(args)) - 1
    if last > 65535:
        parser.error(f"argument --http-port: {len(plan(args))} members need ports up to {last}; choose a lower one")
    secret = args.secret or secrets.token_urlsafe(24)
    members = plan(args)
    stopping: dict[str, Any] = {"sig": None}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["sig"] = signum

    # SIGINT too, explicitly: a process started in the background by a non-interactive shell inherits SIGINT
    # ignored (POSIX job control off), and Ctrl-C / `kill -INT` must still stop the cluster.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        deadline = time.monotonic() + args.ready_timeout
        # Routers first, and ready, so the other members find them at once (a zenoh client cannot
        # start unlinked: it would retry and log until they are up).
        stages = [[m for m in members if m.role == "router"], [m for m in members if m.role != "router"]]
        for stage in stages:
            for m in stage:
                m.proc = subprocess.Popen(command(m, seeds_of(members, members.index(m)), args, secret),
                                          preexec_fn=die_with_parent)  # fmt: skip
            pending = list(stage)
            while pending and stopping["sig"] is None:
                for m in list(pending):
                    if m.proc is not None and m.proc.poll() is not None:
                        print(f"trackmesh dev-cluster: {m.label} {m.zone}/{m.node} exited ({m.proc.returncode})",
                              file=sys.stderr)  # fmt: skip
                        stop_all(members)
                        return 1
                    if _healthy(m.url):
                        pending.remove(m)
                if time.monotonic() > deadline:
                    names = ", ".join(f"{m.label} {m.zone}/{m.node}" for m in pending)
                    print(f"trackmesh dev-cluster: not ready after {args.ready_timeout} s: {names}", file=sys.stderr)
                    stop_all(members)
                    return 1
                time.sleep(0.2)
        if stopping["sig"] is not None:  # stopped while starting: say nothing about being up
            stop_all(members, signal.SIGINT)
            print("trackmesh dev-cluster: stopped", file=sys.stderr)
            return 0
        topology = (f"zone routers ({args.routers_per_zone} per zone)" if args.routers_per_zone
                    else "full mesh")  # fmt: skip
        lines = [f"trackmesh dev-cluster: {len(members)} processes up, {topology} (secret: {secret})"]
        for m in members:
            where = f"cluster {m.seed}" if m.role == "router" or not args.routers_per_zone else "cluster: zone routers"
            zone = "-" if m.is_global or m.role == "console" else str(m.zone)
            lines.append(f"  zone {zone} {m.label:<9} {m.node:>3}  {m.url}  {where}")
        globals_ = [m for m in members if m.is_global]
        gateways = globals_ or [m for m in members if m.role == "gateway"]
        if globals_:
            lines.append(f"  global gateway (sends each client to the best zone): {globals_[0].url}   "
                         f"zones: {globals_[0].url}/api/global/zones")  # fmt: skip
        if gateways:
            base = gateways[0].url
            lines.append(f"  room (video + chat): {base}/samples/room.html   all samples: {base}/samples/index.html")
            lines.append(f"  publish: {base}/samples/whip.html   watch: {base}/samples/whep.html")
        connectors = [m for m in members if m.role == "connector"]
        if connectors:
            lines.append(f"  event log: {connectors[0].url}/api/connector/log/sessions "
                         "(Authorization: Bearer <secret>; each zone's connector has its own log)")
        consoles = [m for m in members if m.role == "console"]
        if consoles:
            lines.append(f"  console (every zone, node and room): {consoles[0].url}/console   (log in with the secret)")
        lines.append("  Ctrl-C stops them all")
        print("\n".join(lines), flush=True)
        while stopping["sig"] is None:
            for m in members:
                if m.proc is not None and m.proc.poll() is not None:
                    print(f"trackmesh dev-cluster: {m.label} {m.zone}/{m.node} exited ({m.proc.returncode})",
                          file=sys.stderr)  # fmt: skip
                    m.proc = None
            time.sleep(0.5)
    except KeyboardInterrupt:  # SIGINT arriving before the handler above was installed
        pass
    stop_all(members, signal.SIGINT)
    print("trackmesh dev-cluster: stopped", file=sys.stderr)
    return 0
