"""Real encoded media for the recording tests: frames from FFmpeg's encoders (through PyAV),
packetized by our own packetizers into RTP packets (seq, ts, marker, payload)."""

from __future__ import annotations

import os
from fractions import Fraction
from functools import cache

import av

from trackmesh.codecs.registry import packetizer

Rtp = tuple[int, int, bool, bytes]  # seq, timestamp, marker, payload
_ENCODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9", "h264": "libx264", "h265": "libx265", "av1": "libsvtav1"}


@cache
def encode_video(
    codec: str, frames: int, fps: int = 30, gop: int = 30, size: tuple[int, int] = (160, 120)
) -> list[tuple[bytes, bool]]:
    """``frames`` encoded frames (data, keyframe) of a moving test picture: H.264 in Annex B.
    Cached per arguments (encoding is the slow part of these tests): callers must not mutate it."""
    ctx = av.CodecContext.create(_ENCODERS[codec], "w")
    assert isinstance(ctx, av.VideoCodecContext), codec
    ctx.width, ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = Fraction(fps)
    ctx.gop_size = gop
    if codec == "h264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "keyint_min": str(gop)}
    elif codec == "h265":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "bframes=0:log-level=error"}
    elif codec == "av1":
        ctx.options = {"preset": "12", "svtav1-params": "lp=1"}
    else:
        ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[tuple[bytes, bool]] = []
    ramp = bytes(range(256)) * (size[0] * size[1] // 256 + 2)
    for i in range(frames):
        frame = av.VideoFrame(size[0], size[1], "yuv420p")
        for n, plane in enumerate(frame.planes):
            start = (i * 3 + n * 50) & 0xFF
            plane.update(ramp[start : start + plane.buffer_size])
        frame.pts = i
        out.extend((bytes(p), p.is_keyframe) for p in ctx.encode(frame))
    out.extend((bytes(p), p.is_keyframe) for p in ctx.encode(None))
    return out


@cache
def encode_opus(frames: int) -> list[bytes]:
    """``frames`` 20 ms Opus packets of noise (mono); cached like :func:`encode_video`."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    for i in range(frames):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(os.urandom(960 * 2))
        frame.sample_rate = 48000
        frame.pts = i * 960
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


def packetize(
    codec: str, frames: list[bytes], ts_step: int, seq0: int = 65500, ts0: int = 4_294_000_000, mtu: int = 300
) -> list[list[Rtp]]:
    """Each frame's RTP packets (grouped per frame), sequence numbers and timestamps wrapping."""
    p = packetizer(codec)
    out: list[list[Rtp]] = []
    seq = seq0
    for i, frame in enumerate(frames):
        ts = (ts0 + i * ts_step) & 0xFFFFFFFF
        payloads = p.packetize(frame, mtu)
        group = []
        for j, payload in enumerate(payloads):
            group.append((seq & 0xFFFF, ts, j == len(payloads) - 1, payload))
            seq += 1
        out.append(group)
    return out
