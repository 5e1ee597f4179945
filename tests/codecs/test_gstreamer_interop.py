"""Interop with GStreamer's RTP payloaders, depayloaders and decoders (real implementations).

For each codec: GStreamer encodes a few frames and payloads them; our depacketizer must yield
exactly the encoder's frames from GStreamer's packets. Then our packetizer payloads those frames
and GStreamer's depayloader + decoder must decode every one. AV1 has no GStreamer payloader in
this distribution (rtpav1pay lives in gst-plugins-rs): there our packetizer -> depacketizer round
trip must give back libaom's temporal units and av1dec must decode them.

No sockets: buffers cross appsrc/appsink in a system-python subprocess (tests/codecs/gst_rtp.py).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from trackmesh.codecs.av1 import split_obus
from trackmesh.codecs.g711 import alaw_encode, ulaw_encode
from trackmesh.codecs.h264 import split_annexb
from trackmesh.codecs.payload import Frame
from trackmesh.codecs.registry import depacketizer, packetizer
from trackmesh.codecs.vp9 import vp9_frame_size
from trackmesh.rtp.packet import RtpHeader, build_rtp_packet

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("gst_rtp.py")
FRAMES = 12
#: RTP timestamp step per frame: 90 kHz video at 30 fps, Opus 20 ms at 48 kHz, G.711 20 ms at 8 kHz.
TS_STEP = {"opus": 960, "pcmu": 160, "pcma": 160}
PAYLOAD_TYPE = {"pcmu": 0, "pcma": 8, "opus": 111}

Records = list[tuple[bytes, bytes]]


def gst(*args: str, records: Records | None = None) -> Records:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("no system python with python3-gi")
    stdin = b"".join(kind + struct.pack("!I", len(data)) + data for kind, data in records or [])
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(SCRIPT), *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    if proc.returncode == 3:
        pytest.skip(proc.stderr.decode().strip())
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out: Records = []
    raw, pos = proc.stdout, 0
    while pos < len(raw):
        size = struct.unpack_from("!I", raw, pos + 1)[0]
        out.append((raw[pos : pos + 1], raw[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    return out


def of_kind(records: Records, kind: bytes) -> list[bytes]:
    return [data for k, data in records if k == kind]


def depacketize(codec: str, packets: list[bytes]) -> tuple[list[Frame], int]:
    depack = depacketizer(codec)
    for packet in packets:
        h = RtpHeader.parse(packet)
        payload = packet[h.payload_offset : h.payload_offset + h.payload_length]
        depack.push(payload, h.sequence_number, h.timestamp, h.marker)
    depack.flush()
    frames = []
    while (frame := depack.poll_frame()) is not None:
        frames.append(frame)
    return frames, depack.dropped_frames + depack.bad_payloads + depack.lost_packets


def our_packets(codec: str, frames: list[bytes], mtu: int) -> list[bytes]:
    pk = packetizer(codec)
    packets = []
    seq = 65000  # crosses the 16-bit wrap
    for i, frame in enumerate(frames):
        payloads = pk.packetize(frame, mtu)
        for j, payload in enumerate(payloads):
            marker = j == len(payloads) - 1 if codec not in TS_STEP else i == 0
            ts = 12345 + i * TS_STEP.get(codec, 3000)
            packets.append(
                build_rtp_packet(PAYLOAD_TYPE.get(codec, 96), seq & 0xFFFF, ts, 0x1234, payload, marker=marker)
            )
            seq += 1
    return packets


def obus(tu: bytes) -> list[tuple[int, bytes, bytes]]:
    return [(t, bytes(h), bytes(p)) for t, h, p in split_obus(tu)]


def units(frame: bytes) -> list[bytes]:
    return [bytes(u) for u in split_annexb(frame)]


@pytest.mark.parametrize("codec", ["h264", "h265", "vp8", "vp9"])
@pytest.mark.parametrize("mtu", [1200, 300])
def test_video(codec: str, mtu: int) -> None:
    records = gst("pay", codec, str(FRAMES), str(mtu))
    encoded, packets = of_kind(records, b"F"), of_kind(records, b"R")
    assert len(encoded) == FRAMES and len(packets) >= FRAMES

    # GStreamer's payloader -> our depacketizer: the encoder's frames, key frames flagged.
    ours, losses = depacketize(codec, packets)
    assert losses == 0
    if codec in ("h264", "h265"):
        assert [units(f.data) for f in ours] == [units(f) for f in encoded]
    else:
        assert [f.data for f in ours] == encoded
    assert ours[0].keyframe and any(not f.keyframe for f in ours)
    assert sum(f.keyframe for f in ours) >= 2  # key-int-max 5 over 12 frames
    if codec == "vp9":  # the size our scalability structure announces, read from libvpx's header
        assert vp9_frame_size(encoded[0]) == (320, 240)

    # A packet lost in the middle: its frame is dropped (or never seen), every other frame is whole.
    lost = len(packets) // 2
    survivors, losses = depacketize(codec, packets[:lost] + packets[lost + 1 :])
    assert losses >= 1 and len(survivors) < FRAMES
    by_ts = {f.timestamp: f.data for f in ours}
    assert all(f.data == by_ts[f.timestamp] for f in survivors)

    # Our packetizer -> GStreamer's depayloader and decoder: every frame decodes.
    sent = our_packets(codec, encoded, mtu)
    assert all(len(p) - 12 <= mtu for p in sent)
    decoded = of_kind(gst("depay", codec, records=[(b"R", p) for p in sent]), b"D")
    assert len(decoded) == FRAMES


def test_av1_encoder_and_decoder() -> None:
    records = gst("encode", "av1", str(FRAMES))
    encoded = of_kind(records, b"F")
    assert len(encoded) == FRAMES
    for mtu in (1200, 200):
        ours, losses = depacketize("av1", our_packets("av1", encoded, mtu))
        assert losses == 0
        view = [[(t, bytes(h), bytes(p)) for t, h, p in split_obus(f.data)] for f in ours]
        assert view == [
            [(t, bytes([h[0] | 0x02]) + bytes(h[1:]), bytes(p)) for t, h, p in split_obus(f)] for f in encoded
        ]
        assert ours[0].keyframe
        decoded = of_kind(gst("decode", "av1", records=[(b"F", f.data) for f in ours]), b"D")
        assert len(decoded) == FRAMES


def test_opus() -> None:
    records = gst("pay", "opus", str(FRAMES), "1200")
    encoded, packets = of_kind(records, b"F"), of_kind(records, b"R")
    ours, losses = depacketize("opus", packets)
    assert losses == 0 and [f.data for f in ours] == encoded and len(encoded) >= FRAMES - 1
    decoded = of_kind(gst("depay", "opus", records=[(b"R", p) for p in our_packets("opus", encoded, 1200)]), b"D")
    assert len(decoded) == len(encoded)


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_g711(codec: str) -> None:
    records = gst("pay", codec, str(FRAMES), "1200")
    encoded, packets, pcm = of_kind(records, b"F"), of_kind(records, b"R"), b"".join(of_kind(records, b"P"))
    samples = b"".join(encoded)
    # GStreamer's mulawenc/alawenc and our tables agree on every sample.
    assert (ulaw_encode if codec == "pcmu" else alaw_encode)(pcm) == samples
    ours, losses = depacketize(codec, packets)
    assert losses == 0 and b"".join(f.data for f in ours) == samples
    decoded = of_kind(gst("depay", codec, records=[(b"R", p) for p in our_packets(codec, [samples], 1200)]), b"D")
    assert sum(len(d) for d in decoded) == 2 * len(samples)
