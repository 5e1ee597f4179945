"""Rooms as MoQ: CPU of the room bridges, without QUIC (docs/benchmarks.md).

- **RTP -> LOC** (``transports/moq/rtp_to_loc.py``): the RTP packets of a 1 Mbps VP8 track (30
  frames/s, a key frame of 40 KB every 2 s, delta frames of 3.5 KB, 1,200-byte payloads from the
  shared packetizer) depacketized into LOC objects, then published through a
  :class:`~trackmesh.transports.moq.local_publisher.LocalTrack` on a relay with one in-memory
  draft-16 subscriber session (its writes drained and dropped, as a socket would).
- **LOC -> RTP** (``transports/moq/loc_to_rtp.py``): the same frames as LOC objects cut into RTP
  packets for a room.

Measured with ``time.process_time()`` over the run, per RTP packet and per frame.

    taskset -c 1 .venv/bin/python bench/moq_room_bridge.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import time

from trackmesh.codecs.vp8 import Vp8Packetizer
from trackmesh.core.model import MediaCodec
from trackmesh.transports.moq import codec16
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.loc import LocProperties, encode_loc_properties
from trackmesh.transports.moq.loc_to_rtp import LocToRtp
from trackmesh.transports.moq.local_publisher import LocalPublisher, LocalTrack
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.rtp_to_loc import RtpToLoc
from trackmesh.transports.moq.session import Anonymous, ServerSession

FPS = 30
GOP = 60
KEY = 40_000
DELTA = 3_500


def vp8(key: bool, size: int) -> bytes:
    tag = (10 << 5) | 0x10 | (0 if key else 1)
    head = tag.to_bytes(3, "little") + (b"\x9d\x01\x2a\x80\x02\xe0\x01" if key else b"")
    return head + bytes(size - len(head))


def frames(seconds: float) -> list[tuple[bytes, bool]]:
    return [(vp8(i % GOP == 0, KEY if i % GOP == 0 else DELTA), i % GOP == 0) for i in range(int(seconds * FPS))]


def subscriber(relay: Relay) -> ServerSession:
    counter = iter(range(3, 1 << 30, 4))
    session = ServerSession(relay, lambda: next(counter), draft=16, authorizer=Anonymous())
    session.stream_data(0, False, codec16.encode_message(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 100})), False, 0.0)
    session.drain()
    return session


def rtp_to_loc(seconds: float) -> tuple[float, int, int]:
    relay = Relay()
    tracks: list[LocalTrack] = []

    def adopt(t: LocalTrack) -> None:
        tracks.append(t)
        t.accept()

    LocalPublisher(relay, (b"trackmesh",), adopt, lambda t: None)
    sub = subscriber(relay)
    msg = m.Subscribe(0, (b"trackmesh", b"bench"), b"cam/video", {m.PARAM_FORWARD: 1})
    sub.stream_data(0, False, codec16.encode_message(msg), False, 0.0)
    (local,) = tracks
    pack = Vp8Packetizer()
    packets = []
    for i, (frame, _) in enumerate(frames(seconds)):
        payloads = pack.packetize(frame, 1200)
        packets += [(p, j == len(payloads) - 1, i * 3000) for j, p in enumerate(payloads)]
    bridge = RtpToLoc(video=True)
    start = time.process_time()
    for seq, (payload, marker, ts) in enumerate(packets):
        bridge.push(payload, seq & 0xFFFF, ts, marker, "vp8", seq / 100)
        while (obj := bridge.poll()) is not None:
            local.publish(obj.group, obj.object_id, obj.payload, obj.extensions)
        sub.drain()
    return time.process_time() - start, len(packets), bridge.objects


def loc_to_rtp(seconds: float) -> tuple[float, int, int]:
    objects = []
    for i, (frame, key) in enumerate(frames(seconds)):
        objects.append((0 if key else 1, frame, encode_loc_properties(LocProperties(i * 33_333))))
    rtp = LocToRtp(MediaCodec.VP8, "vp8")
    start = time.process_time()
    for object_id, frame, ext in objects:
        rtp.object(object_id, frame, ext, 1.0)
    return time.process_time() - start, rtp.packets, rtp.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of media (default 60)")
    args = parser.parse_args()
    for name, run in (("RTP -> LOC (+ relay, 1 subscriber)", rtp_to_loc), ("LOC -> RTP", loc_to_rtp)):
        cpu, packets, frames_ = run(args.seconds)
        share = cpu / args.seconds * 100
        print(
            f"{name}: {packets} packets, {frames_} frames, {cpu * 1e6 / packets:.2f} us/packet, "
            f"{cpu * 1e6 / frames_:.1f} us/frame, {share:.2f} % of a core for one 1 Mbps track"
        )


if __name__ == "__main__":
    main()
