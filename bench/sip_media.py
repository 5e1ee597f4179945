"""CPU per transcoded SIP call (issue 11's "calls per core"): the media of N calls in one room, in memory.

Run with ``taskset -c 1 .venv/bin/python bench/sip_media.py [N]``. One MediaWorker holds a room with
3 WebRTC-like speakers (Opus packets with RFC 6464 levels, 20 ms) and N phone calls
(:class:`~trackmesh.transports.sip.call_media.CallMedia`, no sockets). Every simulated 20 ms each
phone sends one RTP packet, each speaker one Opus packet, and every call's tick mixes the 3 loudest
voices toward its phone. Reported: CPU seconds per simulated second, and calls per core
(N divided by that), for PCMA phones (G.711 -> Opus up, 3 x Opus decode + mix + G.711 down) and
for Opus phones (passed through up, decoded for the level; mix encoded to Opus down).
"""

from __future__ import annotations

import math
import sys
import time
from array import array

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.codecs.g711 import alaw_encode
from trackmesh.core.controls import Join, Publish
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind
from trackmesh.core.worker import MediaWorker
from trackmesh.rtp.packet import build_rtp_packet
from trackmesh.transports.sip.audio import OpusEncoder, SharedDecoders
from trackmesh.transports.sip.call_media import CallMedia
from trackmesh.transports.sip.offer_answer import Negotiated

SECONDS = 5.0


def tone(freq: float, samples: int, rate: int, start: int) -> bytes:
    return array("h", [int(6000 * math.sin(2 * math.pi * freq * (start + n) / rate)) for n in range(samples)]).tobytes()


def run(calls: int, codec: str, shared: bool) -> float:
    worker = MediaWorker(1, 0, "bench-secret-bench-secret", LocalRegistry(), LocalChannelHub())
    now = 0.0
    speakers = []
    for i in range(3):
        ep = worker.create_endpoint()
        ep.control(now, Join("r", f"speaker{i}"))
        ep.control(now, Publish("mic", TrackKind.AUDIO))
        speakers.append(ep.remote_track("mic"))
    # Pre-encoded speaker audio and phone audio: the bench measures the calls, not the clients.
    enc = OpusEncoder(48000)
    speaker_packets = [enc.encode(tone(300, 960, 48000, 960 * k))[0] for k in range(50)]
    if codec == "opus":
        phone_enc = OpusEncoder(48000)
        phone_payloads = [phone_enc.encode(tone(500, 960, 48000, 960 * k))[0] for k in range(50)]
        neg = Negotiated("127.0.0.1", 6000, 111, "opus", 48000, 2, 101, 20, "sendrecv", 0)
        step = 960
    else:
        phone_payloads = [alaw_encode(tone(500, 160, 8000, 160 * k)) for k in range(50)]
        neg = Negotiated("127.0.0.1", 6000, 8, "PCMA", 8000, 1, 101, 20, "sendrecv", 0)
        step = 160
    media = []
    decoders = SharedDecoders() if shared else None
    for i in range(calls):
        call = CallMedia(worker.create_endpoint(), "r", f"phone{i}", neg, now, decoders)
        call.start(now)
        media.append(call)
    sources = [("127.0.0.1", 6000 + 2 * i) for i in range(calls)]
    ticks = int(SECONDS / 0.02)
    warmup = 25
    started = 0.0
    for k in range(ticks + warmup):
        if k == warmup:
            started = time.process_time()
        now += 0.02
        for s, track in enumerate(speakers):
            assert track is not None
            pkt = MediaPacket(MediaCodec.OPUS, 111, k, 960 * k, False, False, speaker_packets[k % 50],
                              audio_level=20 + 10 * s)  # fmt: skip
            pkt.arrival = now
            track.on_packet(pkt)
        payload = phone_payloads[k % 50]
        for i, call in enumerate(media):
            call.handle_rtp(now, build_rtp_packet(neg.payload_type, k, step * k, 1000 + i, payload), sources[i])
        worker.handle_timeout(now)
        for call in media:
            call.on_core_events(now)
            call.tick(now, now)
            while call.leg.poll_transmit() is not None:
                pass
    cpu = time.process_time() - started
    sent = sum(c.stats.downlink_packets for c in media)
    assert sent > calls * ticks * 0.9, (sent, calls * ticks)  # every call heard the mix every 20 ms
    return cpu / SECONDS


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for codec in ("PCMA", "opus"):
        for shared in (False, True):
            load = run(calls, codec, shared)
            kind = "shared" if shared else "per-call"
            print(f"{codec:5} phones, {kind} decoders: {calls} calls, {load:.3f} CPU s per s, "
                  f"{1000 * load / calls:.2f} ms CPU per call-second, {calls / load:.0f} calls per core")  # fmt: skip


if __name__ == "__main__":
    main()
