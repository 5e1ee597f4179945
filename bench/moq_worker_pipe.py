"""Rooms as MoQ on the other workers of a standalone node: the CPU of what crosses a worker's pipe
(runtime/moq_workers.py, docs/benchmarks.md).

A room on child worker k is bridged to MoQ in the node's process: every RTP packet of a watched
track (and of a MoQ publisher's track, the other way) crosses the worker's ``multiprocessing``
pipe, encoded as a cluster media packet, in one pipe message per loop turn. This bench sends the
packets of a 1 Mbps VP8 track (30 frames/s, a 40 KB key frame every 2 s, 3.5 KB delta frames,
1,200-byte payloads: the track of bench/moq_room_bridge.py) through the same code: the sender's
:class:`~trackmesh.runtime.pipe_batch.PipeBatch` and ``encode_packet``, a spawned process that
receives and decodes each packet (``decode_packet``), with ``--batch`` packets per message (one
loop turn's worth). The CPU of both processes (``time.process_time()``) is reported per packet
and per frame (a LOC object); the sender's loop turns alone are measured apart and subtracted.

    .venv/bin/python bench/moq_worker_pipe.py [--seconds 60] [--batch 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import select
import time
from multiprocessing.connection import Connection
from typing import Any

from trackmesh.cluster.zenoh_channels import decode_packet, encode_packet
from trackmesh.codecs.vp8 import Vp8Packetizer
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.runtime.moq_workers import PUSH
from trackmesh.runtime.pipe_batch import PipeBatch

FPS, GOP, KEY, DELTA = 30, 60, 40_000, 3_500


def vp8(key: bool, size: int) -> bytes:
    tag = (10 << 5) | 0x10 | (0 if key else 1)
    head = tag.to_bytes(3, "little") + (b"\x9d\x01\x2a\x80\x02\xe0\x01" if key else b"")
    return head + bytes(size - len(head))


def track(seconds: float) -> tuple[list[MediaPacket], int]:
    pack = Vp8Packetizer()
    packets: list[MediaPacket] = []
    frames = int(seconds * FPS)
    for i in range(frames):
        key = i % GOP == 0
        payloads = pack.packetize(vp8(key, KEY if key else DELTA), 1200)
        for j, p in enumerate(payloads):
            last = j == len(payloads) - 1
            packets.append(MediaPacket(MediaCodec.VP8, 96, len(packets) & 0xFFFF, i * 3000, last, key, p))
    return packets, frames


def wait_writable(fd: int) -> bool:
    return bool(select.select([], [fd], [], None)[1])


def receiver(conn: Connection) -> None:
    """The worker's side: each message's packets decoded, as WorkerMoq.on_batch does."""
    start = time.process_time()
    count = 0
    while True:
        req_id, _, items = conn.recv()
        if req_id != PUSH:
            break
        for item in items:
            decode_packet(item[2])
            count += 1
    conn.send((time.process_time() - start, count))


def run(packets: list[MediaPacket], batch: int) -> tuple[float, float, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(child,))
    proc.start()

    async def send() -> float:
        # Waits for the receiver instead of dropping: this bench sends as fast as it can, a track does not.
        out = PipeBatch(lambda items: parent.send((PUSH, True, items)), lambda: wait_writable(parent.fileno()))
        start = time.process_time()
        for i, pkt in enumerate(packets):
            out.add(("p", 7, encode_packet(pkt)))
            if (i + 1) % batch == 0:
                await asyncio.sleep(0)  # a loop turn: the batch goes out
        await asyncio.sleep(0)
        return time.process_time() - start

    async def turns_only() -> float:  # the loop turns alone, subtracted: they happen anyway
        start = time.process_time()
        for i in range(len(packets)):
            if (i + 1) % batch == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        return time.process_time() - start

    sender_cpu = asyncio.run(send()) - asyncio.run(turns_only())
    parent.send((0, True, None))
    receiver_cpu, count = parent.recv()
    proc.join()
    assert count == len(packets), (count, len(packets))
    return sender_cpu, receiver_cpu, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of media (default 60)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16], help="packets per pipe message")
    args = parser.parse_args()
    packets, frames = track(args.seconds)
    results: list[dict[str, Any]] = []
    for batch in args.batch:
        sender, recv, count = run(packets, batch)
        both = sender + recv
        results.append({"batch": batch, "sender": sender, "receiver": recv})
        print(
            f"batch {batch:3d}: {count} packets, {frames} frames: sender {sender * 1e6 / count:.2f} us/packet, "
            f"receiver {recv * 1e6 / count:.2f} us/packet; both {both * 1e6 / count:.2f} us/packet, "
            f"{both * 1e6 / frames:.1f} us/frame, {both / args.seconds * 100:.2f} % of a core for one 1 Mbps track"
        )


if __name__ == "__main__":
    main()
