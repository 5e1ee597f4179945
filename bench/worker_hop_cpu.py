"""CPU per packet of the worker-to-worker hop of a spread room (``--room-spread``) against in-process forwarding.

Runs ONLY inside a private network namespace (it opens zenoh sessions)::

    scripts/in-netns.sh .venv/bin/python bench/worker_hop_cpu.py [--pps 200,2000] [--seconds 5] [--receivers 1]
    scripts/in-netns.sh .venv/bin/python bench/worker_hop_cpu.py --carrier pipe ...

``--carrier zenoh`` (the default) measures a media node's hop; ``--carrier pipe`` a standalone node's
(``trackmesh standalone --workers N --room-spread K``): the same two phases, with each process's
``WorkerMesh`` (cluster/worker_mesh.py) on a pipe to the sender, batched once per loop turn by a
``PipeBatch`` (runtime/pipe_batch.py), as runtime/worker_spread.py wires a worker's links.

Two processes, each wired like a media worker (zenoh peer on tcp/127.0.0.1, usrpwd, no scouting; a
``ZenohChannelHub`` on the node's event loop, ``Poster``-like ``call_soon_threadsafe``). For each rate:

1. *in process*: the publishing process paces 1,200-byte MediaPackets through a ``LocalChannelHub``
   handle to one local subscriber (what a viewer on the publisher's own worker costs the channel);
2. *across workers*: the same packets through the ``ZenohChannelHub`` handle of a channel the other
   process subscribes (one zenoh put per packet, decode and hand-over to its loop, its proxy's fan-out to
   one local subscriber); with ``--receivers K``, K other processes subscribe (a room spread over K+1
   workers: the sender's cost grows with K, each receiver's does not).

Each process's own CPU time (``time.process_time``: every thread, zenoh's included) is read around
both phases. The hop's cost per packet is, on the sending worker, phase 2 minus phase 1, and on the
receiving worker, phase 2 minus its idle CPU during phase 1. Pacing, packet building and the loop's
wake-ups are in both phases and cancel out on the sender. The receiver's idle CPU (zenoh keep-alives,
an idle loop) is subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from trackmesh.cluster.local import LocalChannelHub
from trackmesh.cluster.worker_mesh import WorkerMesh
from trackmesh.cluster.zenoh_channels import ZenohChannelHub
from trackmesh.cluster.zenoh_session import ClusterConfig, open_node
from trackmesh.core.channel import Feedback
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.runtime.pipe_batch import PipeBatch, writable
from trackmesh.runtime.worker_spread import LINK_BUFFER

CHANNEL = 42
SECRET = "bench-secret-worker-hop"
PAYLOAD = 1200


class Sink:
    """A viewer's channel subscriber reduced to a counter."""

    def __init__(self) -> None:
        self.packets = 0

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        self.packets += 1

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass


class Publisher:
    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        pass


def poster(loop: asyncio.AbstractEventLoop) -> Callable[[Callable[[], None]], None]:
    """The worker's ``post``: zenoh threads hand closures to the loop (runtime/worker_cluster.py Poster)."""

    def post(fn: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(fn)

    return post


def _run(coro: Any) -> Any:
    from trackmesh.runtime.loop import new_event_loop

    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def mesh_on_pipes(index: int, workers: int, conns: dict[int, Connection]) -> tuple[WorkerMesh, list[PipeBatch]]:
    """A worker's mesh on its pipes, wired as runtime/worker_spread.py does (without a worker runtime)."""
    loop = asyncio.get_running_loop()
    for conn in conns.values():  # the links' send buffer, as runtime/worker_spread.py sets it
        sock = socket.socket(fileno=conn.fileno())
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
        sock.detach()
    batches = {peer: PipeBatch(conn.send, functools.partial(writable, conn.fileno())) for peer, conn in conns.items()}
    mesh = WorkerMesh(index, workers, lambda peer, item: batches[peer].add(item))

    def on_readable(peer: int, conn: Connection) -> None:
        now = loop.time()
        while conn.poll():
            mesh.on_items(now, peer, conn.recv())

    for peer, conn in conns.items():
        loop.add_reader(conn.fileno(), on_readable, peer, conn)
    return mesh, list(batches.values())


async def run_receiver(port: int, fd: int) -> None:
    """Subscribes the channel; answers each stdin line with its CPU time and packets received."""
    loop = asyncio.get_running_loop()
    sink = Sink()
    node: Any = None
    hub: Any = None
    if fd >= 0:  # --carrier pipe: this process is worker 1, the sender worker 0
        mesh = mesh_on_pipes(1, 2, {0: Connection(fd)})[0]
        mesh.hub.subscribe(loop.time(), CHANNEL, sink)
    else:
        node = open_node(ClusterConfig(SECRET, listen=[f"tcp/127.0.0.1:{port}"]))
        hub = ZenohChannelHub(node.session, poster(loop), loop.time)
        hub.subscribe(loop.time(), CHANNEL, sink)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"quit":
            break
        print(json.dumps({"cpu": time.process_time(), "packets": sink.packets}), flush=True)
    if node is not None:
        hub.close()
        node.close()


async def pace(send: Any, pps: int, seconds: float) -> int:
    body = bytes(PAYLOAD)
    n = int(pps * seconds)
    start = time.monotonic()
    for seq in range(n):
        delay = start + seq / pps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        send(MediaPacket(MediaCodec.VP8, 96, seq, seq * 90, False, seq % 100 == 0, body))
    return n


async def run_sender(args: argparse.Namespace, rxs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    def mark() -> dict[str, float]:
        """The receivers' CPU time and packets received, summed (each got every packet)."""
        out = {"cpu": 0.0, "packets": 0.0}
        for rx in rxs:
            assert rx.stdin is not None and rx.stdout is not None
            rx.stdin.write("mark\n")
            rx.stdin.flush()
            one = json.loads(rx.stdout.readline())
            out["cpu"] += one["cpu"]
            out["packets"] += one["packets"]
        return out

    loop = asyncio.get_running_loop()
    node: Any = None
    hub: Any = None
    batches: list[PipeBatch] = []
    if args.carrier == "pipe":
        mesh, batches = mesh_on_pipes(0, len(rxs) + 1, {i + 1: conn for i, conn in enumerate(args.conns)})
        remote = mesh.hub.start_publish(loop.time(), CHANNEL, Publisher())

        def subscribed() -> bool:
            return len(mesh.hub._interest.get(CHANNEL, ())) >= len(rxs)
    else:
        seeds = [f"tcp/127.0.0.1:{args.port + i}" for i in range(len(rxs))]
        node = open_node(ClusterConfig(SECRET, listen=[f"tcp/127.0.0.1:{args.port + len(rxs)}"], seeds=seeds))
        hub = ZenohChannelHub(node.session, poster(loop), loop.time)
        remote = hub.start_publish(loop.time(), CHANNEL, Publisher())
        export = hub._exports[CHANNEL]

        def subscribed() -> bool:
            return bool(export.interest and len(node.peers()) >= len(rxs))

    for _ in range(500):
        if subscribed():
            break
        await asyncio.sleep(0.01)
    else:
        raise SystemExit("the receiving workers never subscribed")
    await asyncio.sleep(1.0)  # its proxy goes live (the source token or item crossed)
    local = LocalChannelHub()
    local_sink = Sink()
    local.subscribe(loop.time(), CHANNEL, local_sink)
    in_process = local.start_publish(loop.time(), CHANNEL, Publisher())
    rows = []
    for pps in args.pps:
        for _ in range(args.rounds):
            r0, c0 = mark(), time.process_time()
            n = await pace(in_process.send, pps, args.seconds)
            r1, c1 = mark(), time.process_time()
            await pace(remote.send, pps, args.seconds)
            await asyncio.sleep(0.2)  # the last packets reach the receiver
            r2, c2 = mark(), time.process_time()
            got = int(r2["packets"] - r1["packets"])  # over all receivers
            local_us = (c1 - c0) / n * 1e6
            rows.append({
                "receivers": len(rxs),
                "pps": pps,
                "packets": n,
                "received": got,
                "dropped_behind": sum(b.dropped for b in batches),  # pipe: packets a busy receiver made us drop
                "sender_in_process_us": round(local_us, 2),
                "sender_across_us": round((c2 - c1) / n * 1e6, 2),
                "sender_hop_us": round((c2 - c1 - (c1 - c0)) / n * 1e6, 2),
                "receiver_idle_us": round((r1["cpu"] - r0["cpu"]) / n * 1e6, 2),
                "receiver_hop_us": round(((r2["cpu"] - r1["cpu"]) - (r1["cpu"] - r0["cpu"])) / max(got, 1) * 1e6, 2),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    remote.stop(loop.time())
    if node is not None:
        hub.close()
        node.close()
    return rows


def in_process_fanout_ns(viewers: int = 1, n: int = 200_000) -> float:
    """LocalChannelHub's own cost per packet and viewer (the channel walk; the viewer's work not included)."""
    hub = LocalChannelHub()
    for _ in range(viewers):
        hub.subscribe(0.0, CHANNEL, Sink())
    handle = hub.start_publish(0.0, CHANNEL, Publisher())
    pkt = MediaPacket(MediaCodec.VP8, 96, 1, 90, False, False, bytes(PAYLOAD))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            handle.send(pkt)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--role", choices=["main", "receiver"], default="main")
    p.add_argument("--port", type=int, default=17547)
    p.add_argument("--pps", type=lambda s: [int(x) for x in s.split(",")], default=[200, 2000])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--receivers", type=int, default=1, help="other workers with a viewer of the track")
    p.add_argument("--carrier", choices=["zenoh", "pipe"], default="zenoh",
                   help="zenoh: a media node's hop; pipe: a standalone node's (runtime/worker_spread.py)")
    p.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)  # a receiver's end of its pipe
    args = p.parse_args()
    if args.carrier == "zenoh" and sorted(os.listdir("/sys/class/net")) != ["lo"]:
        raise SystemExit("run me inside scripts/in-netns.sh (opens zenoh sessions)")
    if args.role == "receiver":
        _run(run_receiver(args.port, args.fd))
        return
    args.conns = []
    rxs = []
    for i in range(args.receivers):
        extra: list[str] = []
        fds: tuple[int, ...] = ()
        if args.carrier == "pipe":
            ours, theirs = Pipe(duplex=True)
            args.conns.append(ours)
            fds = (theirs.fileno(),)
            extra = ["--fd", str(theirs.fileno())]
        rxs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--role", "receiver", "--port",
                                     str(args.port + i), *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, pass_fds=fds))  # fmt: skip
    for rx in rxs:
        assert rx.stdout is not None
        if rx.stdout.readline().strip() != "ready":
            raise SystemExit("a receiving worker failed to start")
    try:
        rows = _run(run_sender(args, rxs))
    finally:
        for rx in rxs:
            assert rx.stdin is not None
            rx.stdin.write("quit\n")
            rx.stdin.flush()
            rx.wait(10)
    walk = in_process_fanout_ns()
    print(f"\nin-process channel walk (LocalChannelHub, one viewer): {walk:.0f} ns per packet")
    print(f"{args.receivers} receiving worker(s) over {args.carrier}; the receiver's hop is per packet and receiver")
    print("pps   sender in-process  sender across  = hop on the sender   receiver hop   received/sent")
    for r in rows:
        print(f"{r['pps']:<5} {r['sender_in_process_us']:>10.2f} us {r['sender_across_us']:>12.2f} us "
              f"{r['sender_hop_us']:>14.2f} us {r['receiver_hop_us']:>14.2f} us   {r['received']}/{r['packets']}")
    print(json.dumps({"carrier": args.carrier, "in_process_walk_ns": round(walk), "rows": rows,
                      "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
