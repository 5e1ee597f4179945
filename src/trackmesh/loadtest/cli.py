"""``trackmesh-bench``: load-test a trackmesh server with real WebRTC clients, see docs/benchmarks.md.

    trackmesh-bench s1 --cores 0 --duration 30                 # broadcast: 1 publisher -> N WHEP viewers
    trackmesh-bench s1 --cores 0 --duration 30 --profile cm
    trackmesh-bench s2 --cores 0 --duration 15                 # meeting: rooms of 6, +1 room per step
    trackmesh-bench s3 --cores 0 --duration 15                 # audio only: 10 speakers, +10 listeners per step
    TRACKMESH_BENCH_SECRET=... trackmesh-bench s1 --url http://media.example:3000   # a running deployment
    trackmesh-bench report bench/results/s1-trackmesh-gcm-....json

The side-by-side comparison with Janus 1.1.2 is a repository tool built on this module, not
installed: from a checkout, ``python -m bench.janus s1 --against both --cores 0`` (bench/janus/).

Network safety: the command re-executes itself inside a fresh private network namespace
(``unshare -n``) that has only ``lo`` and a veth pair whose one end carries 127.0.0.2/32
(Janus does not gather candidates on loopback interfaces; shared/research/ecosystem.md 4.2),
and refuses to run if any other interface or any non-127/8 address is visible.

With ``--url`` it starts no server and no namespace (that would cut it off from the deployment):
it signals with the node or gateway at that URL, tokens minted with ``--secret`` (or
``$TRACKMESH_BENCH_SECRET``), and sends media to the candidates its answers name. That is the only
way the command sends outside 127.0.0.0/8; see deployment.py for what it can measure there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackmesh.loadtest.multi_report import join_phases_table, multi_steps_table, multi_table
from trackmesh.loadtest.verdict import step_subscribers, step_verdict
from trackmesh.rtp.srtp import SrtpProfile

if TYPE_CHECKING:
    from trackmesh.loadtest.headers import VerifyPolicy
    from trackmesh.loadtest.multi import MultiRun

_NETNS_SETUP = (
    "set -e; ip link set lo up; ip link add v0 type veth peer name v1; "
    "ip link set v0 addrgenmode none; ip link set v1 addrgenmode none; "
    "ip addr add 127.0.0.2/32 dev v0; ip link set v0 up; ip link set v1 up; "
    'exec "$@"'
)
PROFILES = {"gcm": SrtpProfile.AEAD_AES_128_GCM, "cm": SrtpProfile.AES128_CM_SHA1_80}


@dataclass(frozen=True)
class Target:
    """How to start one kind of server under test and signal with it."""

    #: (cores for taskset, work directory, number of server cores) -> a started server (``.proc``, ``.tree``,
    #: ``.stop()``, see servers.py)
    start: Callable[[str, Path, int], Any]
    #: server -> S1 signalling (``setup``, ``publish``, ``subscribe``, ``close``; signalling.py)
    s1: Callable[[Any], Any]
    #: server -> S2/S3 signalling (sdk_client.py ``TrackmeshSdk`` for trackmesh)
    multi: Callable[[Any], Any]
    #: the S2/S3 run for this server's signalling (None: the SDK one in multi.py)
    multi_run: type[MultiRun] | None = None


def trackmesh_target() -> Target:
    from trackmesh.loadtest.sdk_client import TrackmeshSdk
    from trackmesh.loadtest.servers import TrackmeshServer
    from trackmesh.loadtest.signalling import TrackmeshWhipWhep

    return Target(
        start=lambda cores, workdir, _n: TrackmeshServer(cores, workdir),
        s1=lambda server: TrackmeshWhipWhep(server.url, server.secret, server.room_prefix + "bench"),
        multi=lambda server: TrackmeshSdk(server.url, server.secret, room_prefix=server.room_prefix),
    )


#: The servers the installed command can start; bench/janus adds "janus".
SERVERS: dict[str, Callable[[], Target]] = {"trackmesh": trackmesh_target}
#: The module the command re-executes inside its network namespace (``python -m MODULE``).
_MODULE = "trackmesh.loadtest.cli"


def _reexec_in_netns(module: str, extra_env: dict[str, str]) -> None:
    if os.environ.get("TRACKMESH_BENCH_NETNS") == "1":
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SystemExit("unshare not found (apt-get install util-linux)")
    env = dict(os.environ, TRACKMESH_BENCH_NETNS="1", **extra_env)
    prefix = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-r", "-n"]
    args = [*prefix, "sh", "-c", _NETNS_SETUP, "sh", sys.executable, "-m", module, *sys.argv[1:]]
    os.execve(unshare, args, env)


def _parse(argv: list[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    p.add_argument("scenario", choices=["s1", "s2", "s3"],
                   help="s1 = broadcast, 1 publisher -> N subscribers; s2 = meeting, rooms of 6 where everyone "
                        "publishes; s3 = audio only, 10 speakers -> N listeners (or: report FILE.json)")
    p.add_argument("--against", choices=["trackmesh", "janus", "both"], default="trackmesh",
                   help="the server(s) to start; janus and both need the repository tool: python -m bench.janus")
    p.add_argument("--url", default=None, metavar="URL",
                   help="load-test a running trackmesh node or gateway (http://host:port) instead of starting one; "
                        "needs the app secret (--secret or $TRACKMESH_BENCH_SECRET)")
    p.add_argument("--secret", default=None,
                   help="with --url: the deployment's app secret, to mint tokens (default: $TRACKMESH_BENCH_SECRET)")
    p.add_argument("--metrics-token", default=None,
                   help="with --url: the bearer for /metrics if the node runs with --metrics-token "
                        "(default: $TRACKMESH_BENCH_METRICS_TOKEN)")
    p.add_argument("--cores", default="0", help="CPU list for the server (taskset -c); the generator gets the rest "
                                                "(ignored with --url: the generator gets every core)")
    p.add_argument("--duration", type=float, default=30.0, help="hold time of each step, seconds")
    p.add_argument("--step", type=int, default=None,
                   help="added per step: subscribers (s1, default 25), rooms (s2, 1), listeners (s3, 10)")
    p.add_argument("--max-subs", type=int, default=None,
                   help="ramp limit: subscribers (s1, 400), rooms (s2, 40), listeners (s3, 500)")
    p.add_argument("--room-size", type=int, default=6, help="s2: participants per room")
    p.add_argument("--speakers", type=int, default=10, help="s3: audio-only publishers")
    p.add_argument("--profile", choices=sorted(PROFILES), default="gcm", help="the one SRTP profile offered")
    p.add_argument("--storm-rate", type=float, default=20.0, help="joins per second during a storm")
    p.add_argument("--idle-peers", type=int, default=10)
    p.add_argument("--sequential-joins", type=int, default=5)
    p.add_argument("--pacing-mbps", type=float, default=2.5,
                   help="publisher pacing rate like libwebrtc's pacer (2.5 x 1 Mbps); 0 = send frames as bursts")
    p.add_argument("--keyframe-interval-ms", type=float, default=300.0,
                   help="s2/s3: publishers answer PLI/FIR with the recording's next key frame, at most once per "
                        "this many ms (libwebrtc's 300 ms); 0 = ignore them (fixed 2 s GOP)")
    p.add_argument("--verify-all", type=int, default=50, metavar="N",
                   help="subscribers (in join order) that all decrypt and verify every packet: payload integrity, "
                        "duplicates, reordering, latency (default 50); beyond them only a sample does, the others "
                        "count packets, sequence gaps and silences from the clear RTP header")
    p.add_argument("--verify-share", type=float, default=0.1, metavar="SHARE",
                   help="share of the subscribers beyond --verify-all that verify, spread over the join order "
                        "(default 0.1: every 10th; 1 = every subscriber, 0 = none)")
    p.add_argument("--max-minutes", type=float, default=30.0, help="hard limit per server run")
    p.add_argument("--recording", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default bench/results/...)")
    p.add_argument("--media-workers", type=int, default=0, metavar="N",
                   help="trackmesh: start a media node with N workers and --room-spread 1 (one room's viewers "
                        "spread over the workers) instead of a one-worker standalone node (default 0)")
    p.add_argument("--no-netns", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _cpu_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _server_cores(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """(server cores, generator cores); with --url the server is elsewhere and the generator gets every core."""
    all_cores = sorted(os.sched_getaffinity(0))
    if args.url:
        return [], all_cores
    server_cores = _cpu_list(args.cores)
    return server_cores, [c for c in all_cores if c not in server_cores] or all_cores


def _start(target: Target, args: argparse.Namespace, workdir: Path, server_cores: list[int]) -> tuple[Any, str, str]:
    """(server, local address for the generator's sockets, where it runs): started here, or the --url deployment."""
    if args.url:
        from trackmesh.loadtest.deployment import Deployment
        from trackmesh.loadtest.signalling import ServerUrl

        dep = Deployment(ServerUrl.parse(args.url), args.secret, metrics_token=args.metrics_token)
        dep.preflight()
        return dep, dep.local_ip(), f"at {dep.url}"
    local_ip = "127.0.0.2" if _has_v0() else "127.0.0.1"
    server = target.start(args.cores, workdir, len(server_cores))
    return server, local_ip, f"pid {server.proc.pid} on cores {args.cores}"


async def _one(server_name: str, target: Target, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from trackmesh.loadtest.recording import load
    from trackmesh.loadtest.runner import S1Config, run_s1

    server_cores, gen_cores = _server_cores(args)
    os.sched_setaffinity(0, gen_cores)
    if args.scenario != "s1":
        return await _one_multi(server_name, target, args, workdir, server_cores, gen_cores)
    cfg = S1Config(
        profile=PROFILES[args.profile], duration=args.duration, step=args.step, max_subs=args.max_subs,
        idle_peers=args.idle_peers, sequential_joins=args.sequential_joins, storm_rate=args.storm_rate,
        max_wall=args.max_minutes * 60, gen_cores=gen_cores, pacing_bps=args.pacing_mbps * 1e6,
        verify=_verify(args),
    )
    rec = load(args.recording)
    server, local_ip, where = _start(target, args, workdir, server_cores)
    sig = target.s1(server)
    print(f"{server_name}: {where}; generator on {gen_cores}; "
          f"SRTP {cfg.profile.value}; steps of {cfg.step} held {cfg.duration:g} s", flush=True)
    try:
        result = await asyncio.wait_for(run_s1(cfg, server, sig, rec, local_ip, server_cores), cfg.max_wall + 300)
    finally:
        server.stop()
    return _finish(result, server)


def _verify(args: argparse.Namespace) -> VerifyPolicy:
    from trackmesh.loadtest.headers import VerifyPolicy

    return VerifyPolicy(all_up_to=args.verify_all, share=args.verify_share)


def _finish(result: dict[str, Any], server: Any) -> dict[str, Any]:
    result["server_version"] = getattr(server, "version", None)
    coverage = getattr(server, "coverage", None)
    if coverage is not None:
        result["target"] = coverage()
    return result


_DEFAULTS = {"s1": (25, 400), "s2": (1, 40), "s3": (10, 500)}


async def _one_multi(
    server_name: str, target: Target, args: argparse.Namespace, workdir: Path, server_cores: list[int],
    gen_cores: list[int],
) -> dict[str, Any]:
    from trackmesh.loadtest.multi import MultiConfig, run_multi
    from trackmesh.loadtest.recording import load

    cfg = MultiConfig(
        scenario=args.scenario, profile=PROFILES[args.profile], duration=args.duration, step=args.step,
        max_units=args.max_subs, room_size=args.room_size, speakers=args.speakers,
        sequential_joins=args.sequential_joins, storm_rate=args.storm_rate, max_wall=args.max_minutes * 60,
        gen_cores=gen_cores, pacing_bps=args.pacing_mbps * 1e6,
        keyframe_interval=args.keyframe_interval_ms / 1000 if args.keyframe_interval_ms > 0 else None,
        verify=_verify(args),
    )
    rec = load(args.recording)
    server, local_ip, where = _start(target, args, workdir, server_cores)
    sig = target.multi(server)
    unit = "rooms" if cfg.scenario == "s2" else "listeners"
    print(f"{server_name} {cfg.scenario}: {where}; generator on {gen_cores}; "
          f"SRTP {cfg.profile.value}; +{cfg.step} {unit} per step held {cfg.duration:g} s", flush=True)
    try:
        result = await asyncio.wait_for(
            run_multi(cfg, server, sig, rec, local_ip, server_cores, target.multi_run), cfg.max_wall + 300
        )
    finally:
        server.stop()
    return _finish(result, server)


def _has_v0() -> bool:
    import subprocess

    return "v0" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _fmt(v: Any, unit: str = "", nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


def _share(v: float | None) -> str:
    """A share of one core as a percentage; "-" when not measured (a --url deployment's CPU)."""
    return "-" if v is None else f"{v:.1%}"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def table(results: dict[str, dict[str, Any]]) -> str:
    """One Markdown table, a column per server."""
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, fn: Any) -> None:
        rows.append((label, [fn(results[n]) for n in names]))

    add("S1 capacity (subscribers, all SLOs)", lambda r: f"{r['capacity']}")
    add("limited by", lambda r: r.get("limited_by") or "-")
    def at(r: dict[str, Any], p: str) -> str:
        a = r["at_load"].get(p)
        if a is None:
            return "-"
        text = f"{a['us_per_pkt']} (N={a['subscribers']}, {a['server_cpu']:.0%} core)"
        if abs(a["server_cpu"] - int(p[:-1]) / 100) > 0.1:
            text = f"not reached; nearest: {text}"
        return text

    for pct in ("25%", "50%", "75%"):
        add(f"server us per forwarded pkt at {pct} core", lambda r, p=pct: at(r, p))
    add("CPU-bound estimate: N at 85 % core (linear, extrapolated)", lambda r: _fmt(r.get("cpu_bound_estimate")))

    def lat(r: dict[str, Any]) -> str:
        ok = [s for s in r["steps"] if s["slo_ok"]] or r["steps"]
        if not ok:
            return "-"
        s = ok[-1]
        lm = s["latency_ms"]
        return f"{_fmt(lm['p50'], '', 2)} / {_fmt(lm['p95'], '', 2)} / {_fmt(lm['p99'], '', 2)} (N={s['subscribers']})"

    add("latency p50/p95/p99 ms (last passing step)", lat)
    add("join ms idle p50/p99", lambda r: f"{_fmt(r['join_ms']['idle']['p50'], '', 0)} / "
                                          f"{_fmt(r['join_ms']['idle']['p99'], '', 0)}")
    add("join ms storm 20/s p50/p99", lambda r: f"{_fmt(r['join_ms']['storm']['p50'], '', 0)} / "
                                               f"{_fmt(r['join_ms']['storm']['p99'], '', 0)} "
                                               f"(n={r['join_ms']['storm']['n']})")
    add("RSS per idle peer KB", lambda r: _fmt(r["rss_per_idle_peer_kb"]))
    add("RSS per active peer KB", lambda r: _fmt(r["rss_per_active_peer_kb"]))
    add("max generator CPU", lambda r: f"{max((s['generator_cpu'] for s in r['steps']), default=0):.0%}")
    add("dup / reordered / corrupted", lambda r: " / ".join(
        str(sum(s[k] for s in r["steps"])) for k in ("duplicated", "reordered", "corrupted")))
    out = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows]
    return "\n".join(out)


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    t, j = results.get("trackmesh"), results.get("janus")
    if t and j:
        ratio = t["capacity"] / j["capacity"] if j["capacity"] else None
        verdict = "MET" if ratio and ratio >= 1 else "MISSED"
        if t.get("inconclusive") or j.get("inconclusive"):
            verdict += " but INCONCLUSIVE (a server's last step failed while the box was busy with other work)"
        lines.append(f"S1 capacity trackmesh/janus = {t['capacity']}/{j['capacity']} = "
                     f"{_fmt(ratio, '', 2)} (target >= 1): {verdict}")
    if t:
        # A --url deployment may not expose its process CPU and RSS: those targets are then not judged.
        remote = "target" in t
        us = t["at_load"].get("50%", {}).get("us_per_pkt")
        if not (remote and us is None):
            lines.append(f"trackmesh us/pkt near 50% load = {us} (target <= 10): "
                         f"{'MET' if us and us <= 10 else 'MISSED'}")
        st = t["join_ms"]["storm"]
        ok = st["p50"] is not None and st["p50"] < 100 and st["p99"] is not None and st["p99"] < 300
        lines.append(f"trackmesh storm join p50/p99 = {_fmt(st['p50'], '', 0)}/{_fmt(st['p99'], '', 0)} ms "
                     f"(target < 100 / < 300): {'MET' if ok else 'MISSED'}")
        idle = t["rss_per_idle_peer_kb"]
        if not (remote and idle is None):
            lines.append(f"trackmesh RSS per idle peer = {idle} KB (target < 300): "
                         f"{'MET' if idle is not None and idle < 300 else 'MISSED'}")
    return lines


def steps_table(results: dict[str, dict[str, Any]]) -> str:
    """Every held step of every server, retried ones included (marked)."""
    out = [
        "| server | N | server CPU | us/pkt | out pkt/s | loss worst | p50 / p95 / p99 ms | added p99 ms | "
        "max gap s | foreign load srv/gen | gen CPU | RSS MB | SLO |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for s in r["steps"]:
            lm = s["latency_ms"]
            verdict = step_verdict(s)
            out.append(
                f"| {name} | {step_subscribers(s)} | {_share(s['server_cpu'])} | {_cell(s['server_us_per_pkt'])} | "
                f"{s['pkts_out_per_s']:.0f} | {s['loss_worst']:.2%} | {_fmt(lm['p50'], '', 2)} / "
                f"{_fmt(lm['p95'], '', 2)} / {_fmt(lm['p99'], '', 2)} | {_fmt(s.get('added_p99_ms'), '', 1)} | "
                f"{s['freeze_max_s']} | {_cell(s.get('foreign_load_server_cores'))} / "
                f"{s.get('foreign_load_generator_cores', '-')} | {s['generator_cpu']:.0%} | "
                f"{'-' if s['rss_kb'] is None else round(s['rss_kb'] / 1024, 1)} | {verdict} |"
            )
    return "\n".join(out)


def report(path: Path) -> int:
    """Print the tables of a saved result (``trackmesh-bench report FILE``)."""
    doc = json.loads(path.read_text())
    if doc.get("scenario", "s1") != "s1":
        print(multi_table(doc["results"]))
        print()
        print(multi_steps_table(doc["results"]))
        if phases := join_phases_table(doc["results"]):
            print()
            print(phases)
        if "target" in doc:
            print(coverage_text(doc["target"]))
        print(f"\nenvironment: {json.dumps(doc['environment'])}")
        return 0
    print(table(doc["results"]))
    print()
    print(steps_table(doc["results"]))
    print()
    for line in doc.get("targets", []):
        print(f"- {line}")
    if "target" in doc:
        print(coverage_text(doc["target"]))
    print(f"\nenvironment: {json.dumps(doc['environment'])}")
    return 0


def main(
    argv: list[str] | None = None, *, servers: dict[str, Callable[[], Target]] | None = None,
    prog: str = "trackmesh-bench", module: str = _MODULE, netns_env: dict[str, str] | None = None,
) -> int:
    """The command; bench/janus calls it with ``servers`` that include Janus, its own ``module`` to re-execute
    in the network namespace and ``netns_env`` (PYTHONPATH) for that re-execution."""
    argv = sys.argv[1:] if argv is None else argv
    servers = SERVERS if servers is None else servers
    if argv[:1] in (["soak"], ["chaos"]):
        from trackmesh.loadtest.soak_chaos_cli import main as long_runs

        return long_runs(argv, reexec=lambda: _reexec_in_netns(module, netns_env or {}), profiles=PROFILES,
                         cpu_list=_cpu_list)
    if argv[:1] == ["report"] and len(argv) == 2:
        return report(Path(argv[1]))
    args = _parse(argv, prog)
    if args.verify_all < 0 or not 0 <= args.verify_share <= 1:
        print(f"{prog}: --verify-all must be >= 0 and --verify-share between 0 and 1", file=sys.stderr)
        return 2
    names = ["trackmesh", "janus"] if args.against == "both" else [args.against]
    missing = [n for n in names if n not in servers]
    if missing:
        print(f"{prog}: --against {args.against} needs {', '.join(missing)}: the Janus comparison is a repository "
              "tool, not installed; from a checkout run: python -m bench.janus " + " ".join(argv), file=sys.stderr)
        return 2
    step, max_units = _DEFAULTS[args.scenario]
    args.step = step if args.step is None else args.step
    args.max_subs = max_units if args.max_subs is None else args.max_subs
    if args.url:
        refused = _check_url_args(args)
        if refused:
            print(f"{prog}: {refused}", file=sys.stderr)
            return 2
    elif not args.no_netns:
        _reexec_in_netns(module, netns_env or {})
    from trackmesh.loadtest.servers import environment, netns_ok

    if args.url:
        why = "none: --url reaches the deployment through this host's network"
    else:
        ok, why = netns_ok()
        if not ok:
            print(f"refusing to run: not in a private loopback-only namespace ({why})", file=sys.stderr)
            return 3
    profile = PROFILES[args.profile].value
    env = environment("-" if args.url else args.cores, _server_cores(args)[1], profile)
    env["netns"] = why
    env["publisher_pacing_mbps"] = args.pacing_mbps
    env["verify"] = {"all_up_to": args.verify_all, "share": args.verify_share}
    if args.scenario != "s1":
        env["publisher_keyframe_interval_ms"] = args.keyframe_interval_ms
    if args.url:
        env["target_url"] = args.url
    results: dict[str, dict[str, Any]] = {}
    from trackmesh.loadtest.deployment import DeploymentError

    with tempfile.TemporaryDirectory(prefix="trackmesh-bench-") as tmp:
        for name in names:
            target = servers[name]()
            if name == "trackmesh" and args.media_workers:
                from trackmesh.loadtest.servers import TrackmeshServer

                n_workers = int(args.media_workers)

                def start(cores: str, workdir: Path, _n: int, n_workers: int = n_workers) -> Any:
                    return TrackmeshServer(cores, workdir, workers=n_workers)

                target = replace(target, start=start)
            try:
                results[name] = asyncio.run(_one(name, target, args, Path(tmp)))
            except DeploymentError as exc:
                print(f"{prog}: {exc}", file=sys.stderr)
                return 2
    steal = [s["steal"] for r in results.values() for s in r["steps"]]
    env["steal_max"] = max(steal, default=None)
    if args.scenario != "s1":
        phases = join_phases_table(results)
        printed, target_lines = multi_table(results) + ("\n\n" + phases if phases else ""), []
    else:
        printed, target_lines = table(results), targets(results)
    secrets = {"secret", "metrics_token"}
    doc: dict[str, Any] = {
        "scenario": args.scenario,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {k: ("<redacted>" if k in secrets and v else str(v)) for k, v in vars(args).items()},
        "environment": env,
        "results": results,
        "targets": target_lines,
    }
    coverage = next((r["target"] for r in results.values() if "target" in r), None)
    if coverage is not None:
        doc["target"] = coverage
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out or Path("bench/results") / f"{args.scenario}-{args.against}-{args.profile}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print()
    print(printed)
    print()
    for line in doc["targets"]:
        print(line)
    if coverage is not None:
        print(coverage_text(coverage))
    print(f"\nenvironment: {json.dumps(env)}")
    print(f"JSON: {out}")
    return 0


def _check_url_args(args: argparse.Namespace) -> str | None:
    """Fill --secret/--metrics-token from the environment; a message when --url cannot run."""
    from trackmesh.loadtest.signalling import ServerUrl

    if args.against != "trackmesh":
        return "--url load-tests one trackmesh deployment; --against janus/both start local servers"
    try:
        ServerUrl.parse(args.url)
    except ValueError as exc:
        return str(exc)
    args.secret = args.secret or os.environ.get("TRACKMESH_BENCH_SECRET") or None
    args.metrics_token = args.metrics_token or os.environ.get("TRACKMESH_BENCH_METRICS_TOKEN") or None
    if not args.secret:
        return "--url needs the deployment's app secret: --secret SECRET or TRACKMESH_BENCH_SECRET=SECRET"
    return None


def coverage_text(coverage: dict[str, Any]) -> str:
    """What a --url run measured and what it could not, for the printed report."""
    lines = [f"\ndeployment {coverage['url']} (role {coverage.get('role') or '?'}, "
             f"version {coverage.get('version') or '?'}); measured from the clients:"]
    lines += [f"  + {m}" for m in coverage["measured"]]
    lines.append("not measured:")
    lines += [f"  - {m}" for m in coverage["not_measured"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
