"""``python -m bench.janus`` (or ``python bench/janus/cli.py``): trackmesh-bench with Janus as a second server.

    python -m bench.janus s1 --against both --cores 0 --duration 30
    python -m bench.janus s1 --against janus --cores 0 --duration 30 --profile cm
    python -m bench.janus s2 --against both --cores 0 --duration 15
    python -m bench.janus report bench/results/s2-both-gcm-15s.json

Every option is ``trackmesh-bench``'s (``trackmesh.loadtest.cli``). Run it from the repository root, or
anywhere as ``python bench/janus/cli.py``: the command re-executes itself in a private network namespace
as ``python -m bench.janus`` with the repository root on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trackmesh.loadtest.cli import Target, trackmesh_target
from trackmesh.loadtest.cli import main as bench_main

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a file: make ``bench.janus`` importable for janus_target
    sys.path.insert(0, str(ROOT))


def janus_target() -> Target:
    from bench.janus.multi import JanusMultiRun
    from bench.janus.rooms import JanusRooms
    from bench.janus.server import JanusServer
    from bench.janus.videoroom import JanusVideoRoom

    return Target(
        start=lambda cores, workdir, n: JanusServer(cores, workdir, event_loops=n),
        s1=lambda server: JanusVideoRoom(server.port),
        multi=lambda server: JanusRooms(server.port),
        multi_run=JanusMultiRun,
    )


def main(argv: list[str] | None = None) -> int:
    path = os.environ.get("PYTHONPATH", "")
    return bench_main(
        argv, servers={"trackmesh": trackmesh_target, "janus": janus_target}, prog="python -m bench.janus",
        module="bench.janus", netns_env={"PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)},
    )


if __name__ == "__main__":
    raise SystemExit(main())
