"""``trackmesh-bench soak`` and ``trackmesh-bench chaos``: the long runs of docs/benchmarks.md.

    trackmesh-bench soak --minutes 30 --capacity 375 --cores 0
    trackmesh-bench chaos --minutes 5 --every 30

Both re-execute themselves in a private network namespace with only loopback (as every
``trackmesh-bench`` scenario does) and refuse to run anywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trackmesh.rtp.srtp import SrtpProfile

__all__ = ["main"]


def _parse(argv: list[str], profiles: Mapping[str, SrtpProfile]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trackmesh-bench", description="soak and chaos runs (docs/benchmarks.md)")
    sub = p.add_subparsers(dest="run", required=True)
    s = sub.add_parser("soak", help="1 publisher, viewers at 70 %% of capacity, churn; drift of RSS, fds, delivery")
    s.add_argument("--minutes", type=float, default=30.0)
    s.add_argument("--viewers", type=int, default=None, help="steady viewers (default: 70 %% of --capacity)")
    s.add_argument("--capacity", type=int, default=None,
                   help="S1 capacity to take 70 %% of (default: measured first with a 10 s-per-step S1 ramp)")
    s.add_argument("--share", type=float, default=0.7, help="share of the capacity held (default 0.7)")
    s.add_argument("--churn", type=float, default=1.0, help="churn joins (and leaves) per second")
    s.add_argument("--churn-life", type=float, default=10.0, help="seconds each churn viewer stays")
    s.add_argument("--sample-every", type=float, default=10.0)
    s.add_argument("--warmup", type=float, default=None, help="seconds (default 20 %% of the run, at most 180)")
    s.add_argument("--cores", default="0", help="CPU list for the server (taskset -c); the generator gets the rest")
    s.add_argument("--profile", choices=sorted(profiles), default="gcm")
    s.add_argument("--nice", type=int, default=0,
                   help="scheduling niceness of the run and of its session's autogroup, inherited by the server "
                        "(e.g. -5 on a shared box, so other work cannot starve the server under test; needs root "
                        "for < 0; start the run with setsid)")
    s.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/soak-<stamp>.json)")
    c = sub.add_parser("chaos", help="kill -9 media nodes and gateways of a dev-cluster while clients reconnect")
    c.add_argument("--minutes", type=float, default=5.0)
    c.add_argument("--every", type=float, default=30.0, help="seconds between kills")
    c.add_argument("--media", type=int, default=2, help="media nodes (default 2)")
    c.add_argument("--gateways", type=int, default=2, help="gateways (default 2)")
    c.add_argument("--workers", type=int, default=1, help="workers per media node (default 1)")
    c.add_argument("--whep", type=int, default=4, help="WHEP viewers (default 4)")
    c.add_argument("--sdk", type=int, default=2, help="SDK viewers (default 2)")
    c.add_argument("--target", type=float, default=5.0, help="recovery target, seconds after a kill (default 5)")
    c.add_argument("--nice", type=int, default=0, help="scheduling niceness, inherited by the members (see soak)")
    c.add_argument("--out", type=Path, default=None, help="JSON result (default bench/results/chaos-<stamp>.json)")
    return p.parse_args(argv)


async def _measure_capacity(args: argparse.Namespace, workdir: Path, gen_cores: list[int]) -> int:
    from trackmesh.loadtest.recording import load
    from trackmesh.loadtest.runner import S1Config, run_s1
    from trackmesh.loadtest.servers import TrackmeshServer
    from trackmesh.loadtest.signalling import ServerUrl, TrackmeshWhipWhep

    cfg = S1Config(profile=args.srtp_profile, duration=10.0, max_wall=900.0, gen_cores=gen_cores)
    server = TrackmeshServer(args.cores, workdir)
    try:
        sig = TrackmeshWhipWhep(ServerUrl.local(server.port), server.secret, "capacity")
        r = await run_s1(cfg, server, sig, load(None), "127.0.0.1", args.server_cores)
    finally:
        server.stop()
    print(f"soak: measured S1 capacity {r['capacity']} ({r['limited_by']})", flush=True)
    return int(r["capacity"])


async def _soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from trackmesh.loadtest.recording import load
    from trackmesh.loadtest.servers import TrackmeshServer
    from trackmesh.loadtest.soak import SoakConfig, run_soak

    if args.nice:
        renice(args.nice)  # the servers started below inherit it
    server_cores = args.server_cores
    all_cores = sorted(os.sched_getaffinity(0))
    gen_cores = [c for c in all_cores if c not in server_cores] or all_cores
    os.sched_setaffinity(0, gen_cores)
    capacity = args.capacity
    viewers = args.viewers
    if viewers is None:
        if capacity is None:
            capacity = await _measure_capacity(args, workdir, gen_cores)
        viewers = max(1, int(capacity * args.share))
    cfg = SoakConfig(
        seconds=args.minutes * 60, viewers=viewers, profile=args.srtp_profile, churn_per_s=args.churn,
        churn_life=args.churn_life, sample_every=args.sample_every, warmup=args.warmup, gen_cores=gen_cores,
        server_cores=server_cores,
    )
    server = TrackmeshServer(args.cores, workdir)
    print(f"soak: trackmesh pid {server.proc.pid} on cores {args.cores}, generator on {gen_cores}; "
          f"{viewers} steady viewers (capacity {capacity}, share {args.share:g})", flush=True)
    try:
        result = await asyncio.wait_for(run_soak(cfg, server, load(None), "127.0.0.1"), cfg.seconds + 900)
    finally:
        server.stop()
    result["capacity"] = capacity
    result["nice"] = args.nice
    result["server_exit_code"] = server.proc.returncode
    return result


def renice(nice: int) -> None:
    """This process's niceness and, when the kernel groups processes by session (autogroup), its session's:
    with autogroups the scheduler shares CPU between sessions first, so a process's own niceness does not
    weigh against other sessions' work. Start the run in a session of its own (``setsid``) so that only it
    (and the servers it starts) get the priority."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass  # no autogroups (CONFIG_SCHED_AUTOGROUP off): the process niceness is what counts


def main(
    argv: list[str], *, reexec: Callable[[], None], profiles: Mapping[str, SrtpProfile],
    cpu_list: Callable[[str], list[int]],
) -> int:
    """Called by ``trackmesh-bench`` (loadtest/cli.py) with its network-namespace re-execution, SRTP profiles
    and CPU-list parser."""
    args = _parse(argv, profiles)
    if args.run == "soak":
        args.srtp_profile = profiles[args.profile]
        args.server_cores = cpu_list(args.cores)
    # SIGTERM unwinds like Ctrl-C, so the server (soak) and the members (chaos) are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    reexec()
    from trackmesh.loadtest.servers import environment, netns_ok

    ok, why = netns_ok()
    if not ok:
        print(f"refusing to run: not in a private loopback-only namespace ({why})", file=sys.stderr)
        return 3
    stamp = time.strftime("%Y%m%dT%H%M%S")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix=f"trackmesh-{args.run}-") as tmp:
        if args.run == "soak":
            from trackmesh.loadtest.soak import summary_lines

            env = environment(args.cores, [c for c in sorted(os.sched_getaffinity(0))
                                           if c not in args.server_cores], args.srtp_profile.value)
            result = asyncio.run(_soak(args, Path(tmp)))
            lines = summary_lines(result)
        else:
            from trackmesh.loadtest.chaos import ChaosConfig, run_chaos
            from trackmesh.loadtest.chaos import summary_lines as chaos_lines

            env = environment("-", sorted(os.sched_getaffinity(0)), "gcm")
            if args.nice:
                renice(args.nice)  # the members inherit it
            env["nice"] = args.nice
            ccfg = ChaosConfig(seconds=args.minutes * 60, every=args.every, media=args.media,
                               gateways=args.gateways, workers=args.workers, whep=args.whep, sdk=args.sdk,
                               target=args.target, workdir=Path(tmp))
            result = asyncio.run(run_chaos(ccfg))
            lines = chaos_lines(result)
    env["netns"] = why
    doc = {"scenario": args.run, "when": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "argv": ["trackmesh-bench", *argv], "environment": env, "result": result, "summary_lines": lines}
    out = args.out or Path("bench/results") / f"{args.run}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print()
    for line in lines:
        print(line)
    print(f"JSON: {out}")
    return 0
