"""Microbenchmark of the codec packetizers and depacketizers (trackmesh.codecs).

Run with ``python bench/codecs_hotpath.py``; prints microseconds per RTP packet for a round
trip of synthetic frames at MTU 1200 (packetize, then depacketize in order).
"""

from __future__ import annotations

import time

from trackmesh.codecs.av1 import leb128
from trackmesh.codecs.h264 import START_CODE
from trackmesh.codecs.registry import depacketizer, packetizer

MTU = 1200
ROUNDS = 200
REPEATS = 7  # best of: the box is shared, the minimum is the least disturbed run


def frame(codec: str, size: int) -> bytes:
    body = bytes((i * 7 + 1) & 0xFF or 1 for i in range(size))
    if codec == "h264":
        return START_CODE + b"\x67\x42\xc0\x1f" + START_CODE + b"\x68\xce\x3c\x80" + START_CODE + b"\x65\x88" + body
    if codec == "h265":
        return START_CODE + b"\x40\x01\x0c" + START_CODE + b"\x42\x01\x01" + START_CODE + b"\x26\x01\xaf" + body
    if codec == "av1":
        return b"\x12\x00" + b"\x0a\x02\x00\x00" + b"\x32" + leb128(size) + body
    if codec == "vp8":
        return b"\x10" + body
    if codec == "vp9":
        return b"\x80" + body
    return body[:size]


def run(codec: str, size: int) -> None:
    data = frame(codec, size)
    pk = packetizer(codec)
    payloads = pk.packetize(data, MTU)
    n = len(payloads)
    best_pack = best_depack = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(ROUNDS):
            pk.packetize(data, MTU)
        best_pack = min(best_pack, time.perf_counter() - start)
        d = depacketizer(codec)
        start = time.perf_counter()
        seq = 0
        for r in range(ROUNDS):
            for i, p in enumerate(payloads):
                d.push(p, seq & 0xFFFF, r * 3000, i == n - 1)
                seq += 1
            d.poll_frame()
        best_depack = min(best_depack, time.perf_counter() - start)
        assert d.frames == ROUNDS
    per = ROUNDS * n
    print(
        f"{codec:<5} {size:>6} B frame, {n:>3} packets: packetize {best_pack / per * 1e6:6.2f} us/packet,"
        f" depacketize {best_depack / per * 1e6:6.2f} us/packet"
    )


def main() -> None:
    for codec, size in (
        ("h264", 30000),
        ("h264", 3000),
        ("h265", 30000),
        ("av1", 30000),
        ("vp8", 30000),
        ("vp9", 30000),
        ("opus", 120),
        ("pcmu", 160),
    ):
        run(codec, size)


if __name__ == "__main__":
    main()
