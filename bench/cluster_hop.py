"""Added latency and throughput of one node hop through ZenohChannelHub (loopback).

Runs ONLY inside a private network namespace (it opens zenoh sessions)::

    scripts/in-netns.sh .venv/bin/python bench/cluster_hop.py [--packets 5000] [--pps 1000]

On a shared, loaded machine other processes' scheduling dominates the tail; to measure the hop
itself, run both nodes at real-time priority: ``chrt -f 1 scripts/in-netns.sh ...`` (root).

Two processes, each a cluster node (zenoh peer, tcp/127.0.0.1, usrpwd, no scouting) with a
ZenohChannelHub driven by an asyncio loop (``post = loop.call_soon_threadsafe``):

- the subscriber node subscribes to one channel and records, for each packet its local
  subscriber receives, ``monotonic_ns() - send stamp`` (CLOCK_MONOTONIC is system-wide, so the
  stamps of the two processes compare);
- the publisher node sends 1,200-byte MediaPackets into the channel through the publish handle
  (stamp in the first 8 payload bytes): first ``--packets`` paced at ``--pps``, then
  ``--blast`` as fast as it can for throughput.

So the delay covers everything a cross-node viewer adds: serialization, zenoh, the TCP hop,
parsing, and the hand-over to the receiving node's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trackmesh.cluster.zenoh_channels import ZenohChannelHub
from trackmesh.cluster.zenoh_session import ClusterConfig, open_node
from trackmesh.core.channel import Feedback
from trackmesh.core.model import MediaCodec, MediaPacket

CHANNEL = 42
SECRET = "bench-secret"
PAYLOAD = 1200
BLAST_BASE = 1 << 24


def only_loopback() -> bool:
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Recorder:
    def __init__(self, expect_paced: int, expect_blast: int, done: asyncio.Event) -> None:
        self.delays_us: list[float] = []
        self.blast = 0
        self.blast_first = 0
        self.blast_last = 0
        self.expect_paced = expect_paced
        self.expect_blast = expect_blast
        self.done = done

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        now = time.monotonic_ns()
        if pkt.seq < BLAST_BASE:
            sent = int.from_bytes(pkt.payload[:8], "big")
            self.delays_us.append((now - sent) / 1000)
        else:
            if self.blast == 0:
                self.blast_first = now
            self.blast += 1
            self.blast_last = now
            if self.blast == self.expect_blast:
                self.done.set()

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass


def poster(loop: asyncio.AbstractEventLoop) -> Callable[[Callable[[], None]], None]:
    """The hub's ``post``: run a callback on ``loop`` from zenoh's threads."""

    def post(fn: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(fn)

    return post


async def run_sub(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    node = open_node(ClusterConfig(SECRET, listen=[f"tcp/127.0.0.1:{args.port}"]))
    hub = ZenohChannelHub(
        node.session, poster(loop), loop.time, express=args.express, indirect=args.indirect
    )
    done = asyncio.Event()
    rec = Recorder(args.packets, args.blast, done)
    hub.subscribe(loop.time(), CHANNEL, rec)
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=args.packets / args.pps + 30)
    await asyncio.sleep(0.2)
    d = rec.delays_us
    span = (rec.blast_last - rec.blast_first) / 1e9 if rec.blast > 1 else 0.0
    result = {
        "paced_received": len(d),
        "p50_us": percentile(d, 0.50) if d else None,
        "p99_us": percentile(d, 0.99) if d else None,
        "p999_us": percentile(d, 0.999) if d else None,
        "max_us": max(d) if d else None,
        "blast_received": rec.blast,
        "blast_msg_per_s": rec.blast / span if span else None,
        "blast_mbit_per_s": rec.blast * PAYLOAD * 8 / span / 1e6 if span else None,
        "bad_packets": hub.bad_packets,
        "dropped_no_source": hub.dropped_no_source,
    }
    hop = hub.hop_stats() if hasattr(hub, "hop_stats") else None  # trackmesh_cluster_hop_seconds, paced + blast
    if hop is not None:
        n = sum(hop["counts"])
        result["hop_hist_count"] = n
        result["hop_hist_mean_us"] = round(hop["sum"] / n * 1e6, 1) if n else None
        result["hop_hist_le_1ms"] = sum(c for b, c in zip(hop["bounds"], hop["counts"], strict=False) if b <= 0.001)
        result["paced_mean_us"] = round(sum(d) / len(d), 1) if d else None
    print(json.dumps(result), flush=True)
    hub.close()
    node.close()


class Publisher:
    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        pass


def packet(seq: int, body: bytes) -> MediaPacket:
    stamp = time.monotonic_ns().to_bytes(8, "big")
    return MediaPacket(MediaCodec.VP8, 96, seq, seq * 90, False, False, stamp + body)


async def run_pub(args: argparse.Namespace) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    node = open_node(
        ClusterConfig(SECRET, listen=[f"tcp/127.0.0.1:{args.port + 1}"], seeds=[f"tcp/127.0.0.1:{args.port}"])
    )
    hub = ZenohChannelHub(
        node.session, poster(loop), loop.time, express=args.express, indirect=args.indirect
    )
    handle = hub.start_publish(loop.time(), CHANNEL, Publisher())
    export = hub._exports[CHANNEL]
    for _ in range(500):
        if export.interest:
            break
        await asyncio.sleep(0.01)
    else:
        raise SystemExit("the subscriber node never matched")
    await asyncio.sleep(0.5)  # the source token reaches the subscriber: its proxy goes live
    body = bytes(PAYLOAD - 8)
    interval = 1.0 / args.pps
    start = time.monotonic()
    for seq in range(args.packets):
        target = start + seq * interval
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        handle.send(packet(seq, body))
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    for i in range(args.blast):
        handle.send(packet(BLAST_BASE + i, body))
        if i % 256 == 0:
            await asyncio.sleep(0)  # let the loop breathe, as a real worker would
    send_rate = args.blast / (time.perf_counter() - t0)
    await asyncio.sleep(1.0)
    handle.stop(loop.time())
    hub.close()
    node.close()
    return {"blast_send_msg_per_s": send_rate, "packets_out": hub.packets_out}


LOOP_KIND = "node"


def _run(coro: Any) -> Any:
    """Run on the same kind of event loop as a trackmesh node, unless --loop asyncio."""
    from trackmesh.runtime.loop import new_event_loop

    loop = new_event_loop() if LOOP_KIND == "node" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["main", "sub"], default="main")
    parser.add_argument("--port", type=int, default=17447)
    parser.add_argument("--packets", type=int, default=5000)
    parser.add_argument("--pps", type=int, default=1000)
    parser.add_argument("--blast", type=int, default=20000)
    parser.add_argument("--no-express", dest="express", action="store_false")
    parser.add_argument("--indirect", action="store_true", help="zenoh runs media callbacks on a separate thread")
    parser.add_argument(
        "--loop",
        choices=["node", "asyncio"],
        default="node",
        help="node: the event loop trackmesh runs (uvloop when importable)",
    )
    args = parser.parse_args()
    global LOOP_KIND
    LOOP_KIND = args.loop
    if not only_loopback():
        raise SystemExit("run me inside scripts/in-netns.sh (opens zenoh sessions)")
    if args.role == "sub":
        _run(run_sub(args))
        return
    flags = [*(["--no-express"] if not args.express else []), *(["--indirect"] if args.indirect else [])]
    sub = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--role", "sub", "--port", str(args.port), "--loop", args.loop,
         "--packets", str(args.packets), "--pps", str(args.pps), "--blast", str(args.blast), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != "ready":
        raise SystemExit("subscriber node failed to start")
    pub = _run(run_pub(args))
    out, _ = sub.communicate(timeout=60)
    result = {**json.loads(out.strip().splitlines()[-1]), **pub}
    print(
        f"express={args.express} indirect={args.indirect} {args.packets} x {PAYLOAD} B at {args.pps} pps: "
        f"received {result['paced_received']}, one-hop delay p50 {result['p50_us']:.0f} us, "
        f"p99 {result['p99_us']:.0f} us, p99.9 {result['p999_us']:.0f} us, max {result['max_us']:.0f} us"
    )
    print(
        f"blast {args.blast}: sent {result['blast_send_msg_per_s']:.0f} msg/s, received {result['blast_received']} "
        f"at {result['blast_msg_per_s'] or 0:.0f} msg/s ({result['blast_mbit_per_s'] or 0:.0f} Mbit/s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
