"""sendmmsg against sendto: a worker's send path alone, CPU per datagram (issue 19, lever 3).

    .venv/bin/python bench/sendmmsg_syscall.py --fanout 1 5 10 40 64 --size 160 --rounds 4000 --repeats 5

A worker (:class:`~trackmesh.runtime.worker.WorkerRuntime`) flushes its outbox after every received
datagram: the copies of one forwarded packet, one per viewer (the fan-out). This bench calls the
worker's own ``_send_outbox`` on a real socket bound to 127.0.0.1, sending each flush of ``--fanout``
datagrams of ``--size`` bytes to as many loopback sockets, three ways:

- ``sendto``: the helper not built (what ``pip install -e .`` or no compiler gives): one
  ``socket.sendto`` per datagram;
- ``sendmmsg``: ``runtime/_sendmmsg.c`` as ``setup.py`` builds it (the GIL held across the syscall);
- ``sendmmsg, GIL released``: the same source built with ``-DTRACKMESH_SENDMMSG_RELEASE_GIL``.

The figure is the process's CPU time (user + system: on loopback the kernel delivers each datagram
to the receiving socket inside the sender's syscall, so that is counted too) per datagram, minus the
cost of filling the outbox, measured alone. The receivers are drained between chunks of rounds, off
the clock, so no datagram is dropped for a full receive buffer (the bench checks that every one
arrived). The ways alternate within each repeat; the table has the medians over repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from trackmesh.config import resolve
from trackmesh.runtime.worker import WorkerRuntime

ROOT = Path(__file__).resolve().parent.parent

SOURCE = ROOT / "src" / "trackmesh" / "runtime" / "_sendmmsg.c"
#: Rounds between two drains: at most this many datagrams wait in a receiver's buffer.
CHUNK = 50


def build(out: Path, defines: list[tuple[str, str | None]]) -> ModuleType:
    """Compile _sendmmsg.c with setup.py's flags plus ``defines`` into ``out`` and load it."""
    from setuptools import Distribution, Extension

    ext = Extension("_sendmmsg", [str(SOURCE)], define_macros=defines)
    dist = Distribution({"ext_modules": [ext]})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out)
    cmd.build_temp = str(out / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    spec = importlib.util.spec_from_file_location("_sendmmsg", cmd.get_ext_fullpath("_sendmmsg"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def drain(receivers: list[socket.socket]) -> int:
    got = 0
    for sock in receivers:
        while True:
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
            got += 1
    return got


def run_way(
    runtime: WorkerRuntime,
    sock: socket.socket,
    send_batch: Callable[..., int] | None,
    flush: list[tuple[bytes, tuple[str, int]]],
    receivers: list[socket.socket],
    rounds: int,
) -> tuple[float, int]:
    """CPU ns spent in fill + _send_outbox over ``rounds`` flushes, and datagrams that arrived."""
    runtime._sock = sock
    runtime._send_batch = send_batch
    runtime._tx_fd = sock.fileno() if send_batch is not None else -1
    outbox = runtime.outbox
    send = runtime._send_outbox
    spent = 0
    arrived = 0
    for done in range(0, rounds, CHUNK):
        n = min(CHUNK, rounds - done)
        t0 = time.process_time_ns()
        for _ in range(n):
            outbox.extend(flush)
            send()
        spent += time.process_time_ns() - t0
        time.sleep(0)
        arrived += drain(receivers)
    return spent, arrived


def fill_only(runtime: WorkerRuntime, flush: list[tuple[bytes, tuple[str, int]]], rounds: int) -> float:
    outbox = runtime.outbox
    t0 = time.process_time_ns()
    for _ in range(rounds):
        outbox.extend(flush)
        outbox.clear()
    return time.process_time_ns() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fanout", type=int, nargs="+", default=[1, 5, 10, 40, 64])
    ap.add_argument("--size", type=int, default=160, help="datagram bytes (an SRTP Opus packet is ~100-200)")
    ap.add_argument("--rounds", type=int, default=4000, help="flushes per way and repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        held = build(Path(tmp) / "held", [])
        released = build(Path(tmp) / "released", [("TRACKMESH_SENDMMSG_RELEASE_GIL", None)])
    ways: dict[str, Callable[..., int] | None] = {
        "sendto": None,
        "sendmmsg": held.sendmmsg,
        "sendmmsg, GIL released": released.sendmmsg,
    }
    runtime = WorkerRuntime(resolve("standalone", {"secret": "bench-secret-12345"}, {}), 0)
    sock = udp()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    results: list[dict[str, object]] = []
    print(f"{args.size}-byte datagrams, {args.rounds} flushes x {args.repeats} repeats; CPU us per datagram (median)")
    print(f"{'fan-out':>8} | " + " | ".join(f"{w:>22}" for w in ways) + " | sendto / sendmmsg")
    for fanout in args.fanout:
        receivers = [udp() for _ in range(fanout)]
        for r in receivers:  # room for a chunk of 1,200-byte datagrams (their truesize is ~2.3 KB)
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        flush = [(bytes(args.size), r.getsockname()) for r in receivers]
        per: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.repeats):
            base = fill_only(runtime, flush, args.rounds)
            for way, send_batch in ways.items():
                spent, arrived = run_way(runtime, sock, send_batch, flush, receivers, args.rounds)
                total = args.rounds * fanout
                if arrived != total:
                    raise SystemExit(f"{way}: {arrived} of {total} datagrams arrived")
                per[way].append((spent - base) / total / 1000)
        medians = {w: statistics.median(v) for w, v in per.items()}
        ratio = medians["sendto"] / medians["sendmmsg"]
        print(f"{fanout:>8} | " + " | ".join(f"{medians[w]:>22.2f}" for w in ways) + f" | {ratio:.2f}x")
        results.append({"fanout": fanout, "us_per_datagram": medians, "runs": per})
        for r in receivers:
            r.close()
    counters = runtime.counters
    print(
        f"worker counters: sendmmsg {counters['udp_tx_sendmmsg']}, batches {counters['udp_tx_sendmmsg_batches']}, "
        f"fallbacks {counters['udp_tx_fallbacks']}, errors {counters['udp_tx_errors']}"
    )
    if args.out:
        args.out.write_text(json.dumps({"size": args.size, "rounds": args.rounds, "results": results}, indent=1))


if __name__ == "__main__":
    main()
