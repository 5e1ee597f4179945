"""MoQ relay core fan-out: CPU per delivered object, without QUIC.

One publisher session and N subscriber sessions (sans-IO ``ServerSession``s on one ``Relay``, in
memory) relay a 1 Mbps LOC-like video track: 30 frames/s, one group per key frame every 2 s, key
frames of 40 KB and delta frames of about 3 KB (1 Mbit/s on average). Each publisher group arrives
on its own SUBGROUP_HEADER stream, fed in 1,200-byte chunks as QUIC would deliver them; every
subscriber's stream writes are drained as a driver would.

Measured: ``time.process_time()`` for the whole run divided by objects delivered (N x objects),
and by objects published. This is the relay core only (parsing, cache, per-subscriber headers,
fan-out). The QUIC stack (aioquic: packetization, AEAD, acknowledgments) comes on top of it.

    taskset -c 1 .venv/bin/python bench/moq_fanout.py 1 10 100 300 [--seconds 20] [--draft 16|20]
"""

from __future__ import annotations

import argparse
import time

from trackmesh.transports.moq import codec16, codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.objects import SubgroupHeader, encode_object, encode_subgroup_header
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.session import Anonymous, ServerSession, StreamWrite

FPS = 30
GOP = 60
KEY = 40_000
DELTA = 3_500
CHUNK = 1_200
NS = (b"bench", b"room")


class Side:
    """One session and the bytes it writes (drained and dropped, as a driver's socket would)."""

    def __init__(self, relay: Relay, draft: int) -> None:
        self.next_uni = 3
        self.next_bidi = 1
        self.codec = codec20 if draft >= 18 else codec16
        self.session = ServerSession(
            relay, self._uni, draft=draft, open_bidi=self._bidi, authorizer=Anonymous(), request_window=1000
        )
        self.bytes_out = 0
        self.control: list[m.ControlMessage] = []
        self.draft = draft

    def _uni(self) -> int:
        self.next_uni += 4
        return self.next_uni - 4

    def _bidi(self) -> int:
        self.next_bidi += 4
        return self.next_bidi - 4

    def drain(self) -> None:
        for out in self.session.drain():
            if isinstance(out, StreamWrite):
                self.bytes_out += len(out.data)

    def send(self, msg: m.ControlMessage, stream: int) -> None:
        self.session.stream_data(stream, False, self.codec.encode_message(msg), False, 0.0)

    def setup(self) -> None:
        if self.draft >= 18:
            self.session.stream_data(2, True, codec20.encode_message(m.ClientSetup({})), False, 0.0)
        else:
            self.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 1000}), 0)
        self.drain()


def run(subscribers: int, seconds: float, draft: int) -> dict[str, float]:
    relay = Relay()
    pub = Side(relay, draft)
    pub.setup()
    vi64 = draft >= 18
    pub.send(m.Publish(0, NS, b"video", 1, {m.PARAM_FORWARD: 1}), 0 if not vi64 else 4)
    pub.drain()
    subs = [Side(relay, draft) for _ in range(subscribers)]
    for sub in subs:
        sub.setup()
        sub.send(m.Subscribe(0, NS, b"video"), 0 if not vi64 else 4)
        sub.drain()
    frames = int(seconds * FPS)
    stream = 2
    buf = b""
    published = 0
    start = time.process_time()
    for frame in range(frames):
        if frame % GOP == 0:
            if buf:
                pub.session.stream_data(stream, True, b"", True, 0.0)
            stream += 4
            header = encode_subgroup_header(SubgroupHeader(1, frame // GOP, 0, 128), vi64)
            first = True
            previous = None
        payload = bytes(KEY if frame % GOP == 0 else DELTA)
        obj = encode_object(frame % GOP, previous, payload, vi64=vi64)
        previous = frame % GOP
        buf = (header if first else b"") + obj
        first = False
        for i in range(0, len(buf), CHUNK):
            pub.session.stream_data(stream, True, buf[i : i + CHUNK], False, 0.0)
        published += 1
        for sub in subs:
            sub.drain()
    elapsed = time.process_time() - start
    delivered = relay.stats.objects_out
    return {
        "subscribers": subscribers,
        "published": published,
        "delivered": delivered,
        "cpu_s": elapsed,
        "us_per_delivered": elapsed / max(1, delivered) * 1e6,
        "us_per_published": elapsed / max(1, published) * 1e6,
        "cpu_share_at_30fps": elapsed / seconds,
        "mbps_out": sum(s.bytes_out for s in subs) * 8 / seconds / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subscribers", type=int, nargs="+")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of media (default 20)")
    parser.add_argument("--draft", type=int, default=16, choices=(16, 20))
    args = parser.parse_args()
    print("| subscribers | objects delivered | CPU us per delivered object | CPU share of one core (1 Mbps live) |")
    print("|---|---|---|---|")
    for n in args.subscribers:
        r = run(n, args.seconds, args.draft)
        print(
            f"| {n} | {r['delivered']:.0f} | {r['us_per_delivered']:.2f} | {r['cpu_share_at_30fps'] * 100:.1f} % "
            f"({r['mbps_out']:.0f} Mbps out) |"
        )


if __name__ == "__main__":
    main()
