"""Microbenchmark of the per-packet RTP operations on the forwarding path.

Run with ``python bench/rtp_hotpath.py``; prints microseconds per operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trackmesh.codecs.registry import is_keyframe
from trackmesh.codecs.vp8 import parse_vp8_descriptor
from trackmesh.rtp.nack import RetransmitBuffer
from trackmesh.rtp.packet import (
    RtpHeader,
    build_rtp_packet,
    find_extension,
    read_transport_cc_seq,
    rewrite_header,
    set_transport_cc_seq,
)
from trackmesh.rtp.rewrite import SeqTsRewriter

N = 200_000


def bench(name: str, fn: Callable[[], object], n: int = N) -> None:
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    print(f"{name:<34} {best / n * 1e6:7.3f} us/op")


def main() -> None:
    vp8 = bytes([0x90, 0xE0, 0x92, 0x34, 0x07, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]) + bytes(1000)
    exts = {1: b"0", 3: b"\x12\x34\x56", 5: b"\x00\x01", 10: b"h"}
    pkt = build_rtp_packet(96, 1234, 90000, 0x1234, vp8, marker=True, extensions=exts)
    buf = bytearray(pkt)
    h = RtpHeader.parse(pkt)
    payload = memoryview(pkt)[h.payload_offset : h.payload_offset + h.payload_length]
    loc = find_extension(pkt, h, 5)
    assert loc is not None
    rewriter = SeqTsRewriter(90000)
    ring = RetransmitBuffer()
    state = [0]

    def rewrite_step() -> object:
        state[0] = (state[0] + 1) & 0xFFFF
        return rewriter.rewrite(0x1234, state[0], 90000, 0.0)

    def ring_step() -> object:
        state[0] = (state[0] + 1) & 0xFFFF
        ring.put(state[0], pkt, payload, 0.0)
        return ring.get(state[0] - 5, 0.0)

    print(f"packet: {len(pkt)} bytes, {len(exts)} one-byte extensions")
    bench("RtpHeader.parse", lambda: RtpHeader.parse(pkt))
    bench("rewrite_header", lambda: rewrite_header(buf, 0xCAFE, 4321, 123456))
    bench("read_transport_cc_seq (ext lookup)", lambda: read_transport_cc_seq(pkt, h, 5))
    bench("set_transport_cc_seq", lambda: set_transport_cc_seq(buf, loc[0], 77))
    bench("is_keyframe vp8", lambda: is_keyframe("vp8", payload))
    bench("parse_vp8_descriptor", lambda: parse_vp8_descriptor(payload))
    bench("SeqTsRewriter.rewrite", rewrite_step)
    bench("RetransmitBuffer put+get", ring_step)

    fwd_rewriter = SeqTsRewriter(90000)

    def forward() -> object:
        # Parse the incoming packet, map its numbers, write them into the outgoing copy.
        hdr = RtpHeader.parse(pkt)
        state[0] = (state[0] + 1) & 0xFFFF
        out = fwd_rewriter.rewrite(hdr.ssrc, state[0], hdr.timestamp, 0.0)
        if out is not None:
            rewrite_header(buf, 0xCAFE, out[0], out[1])
        return out

    bench("parse + rewrite + rewrite_header", forward)


if __name__ == "__main__":
    main()
