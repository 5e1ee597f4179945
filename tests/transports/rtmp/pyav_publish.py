"""Publish 1 s of video (HEVC, AV1 or VP9) + 1 s of Opus to an RTMP URL with PyAV, whose bundled
FFmpeg 8.1 writes Enhanced RTMP (Debian's ffmpeg 5.1 cannot). Run as a subprocess by
test_interop_pyav.py: ``python pyav_publish.py rtmp://127.0.0.1:PORT/live/KEY libx265 [START_MS]``;
START_MS shifts every timestamp (to start near 2^24 ms or cross 2^32 ms)."""

from __future__ import annotations

import sys

import av

ENCODER_OPTIONS = {
    "libx265": {"x265-params": "log-level=error:bframes=0:keyint=15"},
    "libsvtav1": {"preset": "12"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libx264": {"tune": "zerolatency", "preset": "ultrafast", "g": "15"},
}


def multitrack(url: str) -> None:
    """Two H.264 renditions (320x240, 160x120): FFmpeg 8.1 writes the second as an Enhanced
    RTMP multitrack tag (OneTrack, track id 1)."""
    out = av.open(url, "w", format="flv")
    streams = []
    for width, height in ((320, 240), (160, 120)):
        video = out.add_stream("libx264", rate=30, options=ENCODER_OPTIONS["libx264"])
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        streams.append(video)
    for i in range(15):
        for video in streams:
            frame = av.VideoFrame(video.width, video.height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 8 + 16) & 0xFF]) * plane.buffer_size)
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
    for video in streams:
        for packet in video.encode(None):
            out.mux(packet)
    out.close()


def main(url: str, encoder: str, start_ms: int = 0) -> None:
    if encoder == "multitrack":
        multitrack(url)
        return
    out = av.open(url, "w", format="flv")
    video = out.add_stream(encoder, rate=30, options=ENCODER_OPTIONS.get(encoder, {}))
    assert isinstance(video, av.VideoStream), encoder  # every ENCODER_OPTIONS name is a video encoder
    video.width, video.height, video.pix_fmt = 160, 128, "yuv420p"
    audio = out.add_stream("libopus", rate=48000)
    audio.layout = "stereo"
    for i in range(30):
        frame = av.VideoFrame(160, 128, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 8 + 16) & 0xFF]) * plane.buffer_size)
        frame.pts = start_ms * 30 // 1000 + i
        for packet in video.encode(frame):
            out.mux(packet)
    for k in range(50):
        samples = av.AudioFrame(format="s16", layout="stereo", samples=960)
        samples.planes[0].update(bytes(960 * 4))
        samples.sample_rate = 48000
        samples.pts = start_ms * 48 + k * 960
        for packet in audio.encode(samples):
            out.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()


def live(url: str, encoder: str, seconds: float) -> None:
    """A paced (real-time) stream: 320x240 30 fps video with a moving bar, a key frame every
    second, and a 440 Hz Opus tone, for viewers to watch (``... URL ENCODER live SECONDS``)."""
    import math
    import struct
    import time

    out = av.open(url, "w", format="flv")
    video = out.add_stream(encoder, rate=30, options=ENCODER_OPTIONS.get(encoder, {}))
    assert isinstance(video, av.VideoStream), encoder  # every ENCODER_OPTIONS name is a video encoder
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    video.codec_context.gop_size = 30
    audio = out.add_stream("libopus", rate=48000)
    audio.layout = "stereo"
    start = time.monotonic()
    tone = b"".join(struct.pack("<hh", v, v) for v in (int(4000 * math.sin(2 * math.pi * 440 * n / 48000))
                                                       for n in range(48000)))  # fmt: skip
    frames = int(seconds * 30)
    for i in range(frames):
        frame = av.VideoFrame(320, 240, "yuv420p")
        y = bytearray(b"\x30" * (320 * 240))
        top = (i * 4) % 200
        y[top * 320 : (top + 40) * 320] = b"\xe0" * (40 * 320)
        frame.planes[0].update(bytes(y))
        for plane in frame.planes[1:]:
            plane.update(b"\x80" * plane.buffer_size)
        frame.pts = i
        for packet in video.encode(frame):
            out.mux(packet)
        for k in range(i * 3 // 2, (i + 1) * 3 // 2):  # 20 ms audio frames, 1.5 per video frame
            samples = av.AudioFrame(format="s16", layout="stereo", samples=960)
            offset = (k * 960) % (48000 - 960)
            samples.planes[0].update(tone[offset * 4 : (offset + 960) * 4])
            samples.sample_rate = 48000
            samples.pts = k * 960
            for packet in audio.encode(samples):
                out.mux(packet)
        delay = start + (i + 1) / 30 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out.close()


RENDITIONS = ((240, 180), (320, 240), (160, 120))  # track 0 in the middle: layers ranked by size


def multitrack_live(url: str, seconds: float) -> None:
    """Three H.264 renditions of one paced 30 fps picture (a moving bar), a key frame every
    second, written by FFmpeg 8.1 as Enhanced RTMP multitrack (tracks 1 and 2 as OneTrack tags)
    (``... URL multitrack live SECONDS``)."""
    import time

    out = av.open(url, "w", format="flv")
    streams = []
    for width, height in RENDITIONS:
        video = out.add_stream("libx264", rate=30, options=ENCODER_OPTIONS["libx264"] | {"g": "30"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        streams.append(video)
    start = time.monotonic()
    for i in range(int(seconds * 30)):
        for video in streams:
            w, h = video.width, video.height
            frame = av.VideoFrame(w, h, "yuv420p")
            y = bytearray(b"\x30" * (w * h))
            top = (i * 2) % (h - h // 6)
            y[top * w : (top + h // 6) * w] = b"\xe0" * (h // 6 * w)
            frame.planes[0].update(bytes(y))
            for plane in frame.planes[1:]:
                plane.update(b"\x80" * plane.buffer_size)
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        delay = start + (i + 1) / 30 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out.close()


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[2:4] == ["multitrack", "live"]:
        multitrack_live(sys.argv[1], float(sys.argv[4]))
    elif len(sys.argv) > 4 and sys.argv[3] == "live":
        live(sys.argv[1], sys.argv[2], float(sys.argv[4]))
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
