"""WHIP publisher / WHEP player built on aiortc, for end-to-end tests.

An independent second WebRTC stack next to GStreamer and Chromium. Run it with the project venv
(``.venv/bin/python tests/e2e/clients/aiortc_client.py ...``) inside a private network namespace
(``scripts/in-netns.sh``). Same CLI and JSON summary shape as ``gst_webrtc_client.py``:

  whip URL [--token T] [--codec vp8|h264] [--duration S]
  whep URL [--token T] [--codec vp8|h264|any] [--duration S] [--frames N] [--min-frames N]
  loopback [--codec vp8|h264] [--duration S] [--min-frames N]   (two peers in one process, no server)

ICE host candidates are restricted to 127.0.0.1 (aioice normally skips loopback and would use every
other interface), no STUN/TURN server is configured, and only 127.0.0.1 candidates are put in the SDP.
The functions ``publish``, ``play`` and ``loopback`` can also be awaited from tests directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

LOOPBACK = "127.0.0.1"
VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020


def restrict_to_loopback() -> None:
    """Make aioice gather exactly one host address: 127.0.0.1 (it skips loopback by default)."""

    def loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [LOOPBACK] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_only


def new_pc() -> RTCPeerConnection:
    restrict_to_loopback()
    # iceServers=[] explicitly: aiortc's default configuration points at a public STUN server.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def filter_candidates(sdp: str) -> str:
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] != LOOPBACK:
                continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def prefer_codec(pc: RTCPeerConnection, kind: str, codecs: list[str]) -> None:
    """Restrict the transceivers of ``kind`` to the given codec names (e.g. ["VP8"]), keeping rtx."""
    wanted = {c.upper() for c in codecs}
    caps = RTCRtpSender.getCapabilities(kind).codecs
    prefs = [c for c in caps if c.mimeType.split("/")[1].upper() in wanted]
    prefs += [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    for t in pc.getTransceivers():
        if t.kind == kind:
            t.setCodecPreferences(prefs)


# -- synthetic sources ---------------------------------------------------------------------------


class TestVideoTrack(MediaStreamTrack):
    """640x480 YUV420 frames with a moving bright bar (so encoders have real work to do)."""

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0
        self.sent = 0
        row_dark = bytes([40]) * width
        self._y_dark = row_dark * height
        self._bar_h = max(8, height // 12)
        self._bar = bytes([220]) * (width * self._bar_h)
        self._uv = bytes([128]) * ((width // 2) * (height // 2))

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        top = (self._count * 4) % (self.height - self._bar_h)
        y = self._y_dark[: top * self.width] + self._bar
        y += self._y_dark[len(y) :]
        for plane, data in zip(frame.planes, (y, self._uv, self._uv), strict=True):
            w, h = plane.width, plane.height
            if plane.line_size == w:
                plane.update(data)
            else:  # rows padded to the plane's line size
                pad = bytes(plane.line_size - w)
                plane.update(b"".join(data[r * w : (r + 1) * w] + pad for r in range(h)))
        frame.pts = int(self._count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        self.sent += 1
        return frame


class TestAudioTrack(MediaStreamTrack):
    """48 kHz mono 440 Hz sine in 20 ms frames."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._count = 0
        self.sent = 0
        n = int(AUDIO_RATE * AUDIO_PTIME)
        period = AUDIO_RATE / 440
        self._cycle = [int(8000 * math.sin(2 * math.pi * i / period)) for i in range(AUDIO_RATE // 40)]
        self._samples = n

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count * AUDIO_PTIME
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self._samples
        off = (self._count * n) % len(self._cycle)
        samples = [self._cycle[(off + i) % len(self._cycle)] for i in range(n)]
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(struct.pack(f"<{n}h", *samples))
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._count * n
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._count += 1
        self.sent += 1
        return frame


# -- receive-side counting -----------------------------------------------------------------------


@dataclass
class Counters:
    frames: int = 0
    width: int = 0
    height: int = 0
    audio_buffers: int = 0
    audio_peak: int = 0  # loudest decoded s16 sample: 0 means silence
    first_frame_s: float | None = None
    # The longest wait between two decoded video frames, as (last frame before, first frame
    # after) on CLOCK_MONOTONIC, which the calling test shares: when video stopped and resumed.
    longest_gap: tuple[float, float] | None = None
    last_frame_at: float | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)  # every decoded frame size
    started: float = field(default_factory=time.monotonic)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, pc: RTCPeerConnection) -> None:
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()  # aiortc depacketises and decodes here
                if track.kind == "video":
                    assert isinstance(frame, av.VideoFrame), "aiortc decodes remote video to av.VideoFrame"
                    now = time.monotonic()
                    last = self.last_frame_at
                    gap = self.longest_gap
                    if last is not None and (gap is None or now - last > gap[1] - gap[0]):
                        self.longest_gap = (last, now)
                    self.last_frame_at = now
                    self.frames += 1
                    self.width, self.height = frame.width, frame.height
                    self.sizes.add((frame.width, frame.height))
                    if self.first_frame_s is None:
                        self.first_frame_s = round(time.monotonic() - self.started, 3)
                else:
                    assert isinstance(frame, av.AudioFrame), "aiortc decodes remote audio to av.AudioFrame"
                    self.audio_buffers += 1
                    if frame.format.name == "s16":
                        pcm = memoryview(bytes(frame.planes[0])).cast("h")
                        self.audio_peak = max(self.audio_peak, max(pcm, default=0), -min(pcm, default=0))

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "audio_buffers": self.audio_buffers,
            "audio_peak": self.audio_peak,
            "first_frame_s": self.first_frame_s,
            "longest_gap": self.longest_gap,
            "sizes": sorted(self.sizes),
        }


# -- HTTP (WHIP/WHEP signalling) -----------------------------------------------------------------


def _http(
    method: str, url: str, token: str | None, body: str | None, timeout: float
) -> tuple[int, dict[str, str], str]:
    headers: dict[str, str] = {}
    if body is not None:
        headers["Content-Type"] = "application/sdp"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body.encode() if body is not None else None, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode(errors="replace")


class ClientError(Exception):
    pass


async def _negotiate(pc: RTCPeerConnection, url: str, token: str | None, summary: dict[str, Any]) -> str | None:
    """Non-trickle WHIP/WHEP exchange. Returns the absolute Location URL (or None)."""
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers fully before returning
    offer = filter_candidates(pc.localDescription.sdp)
    if "a=candidate:" not in offer:
        raise ClientError("no 127.0.0.1 candidate in the local offer")
    try:
        status, headers, body = await asyncio.to_thread(_http, "POST", url, token, offer, 10.0)
    except (OSError, urllib.error.URLError) as exc:
        raise ClientError(f"POST {url} failed: {exc}") from exc
    summary["status"] = status
    if status != 201:
        raise ClientError(f"POST {url} returned {status}, expected 201: {body[:300]!r}")
    if not headers.get("content-type", "").startswith("application/sdp"):
        raise ClientError(f"201 answer has Content-Type {headers.get('content-type')!r}, expected application/sdp")
    location = urllib.parse.urljoin(url, headers["location"]) if "location" in headers else None
    summary["location"] = location
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


async def _wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise ClientError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise ClientError(f"not connected after {timeout}s (state {pc.connectionState})")
        await asyncio.sleep(0.05)


async def _delete(location: str | None, token: str | None, summary: dict[str, Any]) -> None:
    if not location:
        return
    try:
        status, _h, _b = await asyncio.to_thread(_http, "DELETE", location, token, None, 10.0)
    except (OSError, urllib.error.URLError) as exc:
        summary["delete_status"] = None
        raise ClientError(f"DELETE {location} failed: {exc}") from exc
    summary["delete_status"] = status
    if status not in (200, 204):
        raise ClientError(f"DELETE {location} returned {status}")


def _finish(summary: dict[str, Any], started: float, error: str | None) -> dict[str, Any]:
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    summary["ok"] = error is None
    if error is not None:
        summary["error"] = error
    return summary


async def publish(
    url: str, token: str | None = None, codec: str = "vp8", duration: float = 5.0, timeout: float = 30.0,
    size: tuple[int, int] = (640, 480),
) -> dict[str, Any]:
    started = time.monotonic()
    summary: dict[str, Any] = {"mode": "whip"}
    pc = new_pc()
    video, audio = TestVideoTrack(*size), TestAudioTrack()
    pc.addTransceiver(video, direction="sendonly")
    pc.addTransceiver(audio, direction="sendonly")
    prefer_codec(pc, "video", [codec])
    prefer_codec(pc, "audio", ["opus"])
    error = None
    location = None
    try:
        location = await _negotiate(pc, url, token, summary)
        await _wait_connected(pc, timeout)
        await asyncio.sleep(duration)
    except ClientError as exc:
        error = str(exc)
    finally:
        summary["connection_state"] = pc.connectionState
        summary.update(video_buffers=video.sent, audio_buffers_sent=audio.sent)
        await pc.close()
        try:
            await _delete(location, token, summary)
        except ClientError as exc:
            error = error or str(exc)
    return _finish(summary, started, error)


async def play(
    url: str,
    token: str | None = None,
    codec: str = "any",
    duration: float = 5.0,
    min_frames: int = 1,
    timeout: float = 30.0,
    frames: int = 0,
) -> dict[str, Any]:
    """Play a WHEP URL for ``duration`` seconds, or until ``frames`` video frames were decoded."""
    started = time.monotonic()
    summary: dict[str, Any] = {"mode": "whep"}
    pc = new_pc()
    counters = Counters()
    counters.attach(pc)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    if codec != "any":
        prefer_codec(pc, "video", [codec])
    prefer_codec(pc, "audio", ["opus"])
    error = None
    location = None
    try:
        location = await _negotiate(pc, url, token, summary)
        await _wait_connected(pc, timeout)
        end = time.monotonic() + duration
        while time.monotonic() < end and not (frames and counters.frames >= frames):
            await asyncio.sleep(0.02)
    except ClientError as exc:
        error = str(exc)
    finally:
        summary["connection_state"] = pc.connectionState
        await counters.close()
        await pc.close()
        summary.update(counters.summary())
        try:
            await _delete(location, token, summary)
        except ClientError as exc:
            error = error or str(exc)
    if error is None and counters.frames < min_frames:
        error = f"decoded {counters.frames} video frames, expected at least {min_frames}"
    return _finish(summary, started, error)


async def loopback(
    codec: str = "vp8", duration: float = 3.0, min_frames: int = 1, timeout: float = 20.0
) -> dict[str, Any]:
    """Two aiortc peers in this process exchange media over 127.0.0.1 (no server)."""
    started = time.monotonic()
    summary: dict[str, Any] = {"mode": "loopback"}
    tx, rx = new_pc(), new_pc()
    counters = Counters()
    counters.attach(rx)
    video, audio = TestVideoTrack(), TestAudioTrack()
    tx.addTransceiver(video, direction="sendonly")
    tx.addTransceiver(audio, direction="sendonly")
    prefer_codec(tx, "video", [codec])
    error = None
    try:
        await tx.setLocalDescription(await tx.createOffer())
        offer = filter_candidates(tx.localDescription.sdp)
        summary["offer_candidates"] = offer.count("a=candidate:")
        await rx.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await rx.setLocalDescription(await rx.createAnswer())
        answer = filter_candidates(rx.localDescription.sdp)
        summary["answer_candidates"] = answer.count("a=candidate:")
        await tx.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await _wait_connected(tx, timeout)
        await _wait_connected(rx, timeout)
        await asyncio.sleep(duration)
    except ClientError as exc:
        error = str(exc)
    finally:
        summary["connection_state"] = rx.connectionState
        summary["offer_sdp_addresses"] = sorted(
            {ln.split()[4] for ln in tx.localDescription.sdp.splitlines() if ln.startswith("a=candidate:")}
        )
        await counters.close()
        await tx.close()
        await rx.close()
        summary.update(counters.summary())
        summary.update(video_buffers=video.sent, audio_buffers_sent=audio.sent)
    if error is None and counters.frames < min_frames:
        error = f"decoded {counters.frames} video frames, expected at least {min_frames}"
    return _finish(summary, started, error)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["whip", "whep", "loopback"])
    p.add_argument("url", nargs="?")
    p.add_argument("--token", default=os.environ.get("TRACKMESH_TOKEN"))
    p.add_argument("--codec", default=None, choices=["vp8", "h264", "any"])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--frames", type=int, default=0, help="whep: stop early after this many decoded frames")
    p.add_argument("--min-frames", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--size", default="640x480", help="whip: the video's WIDTHxHEIGHT")
    a = p.parse_args(argv)
    if a.mode in ("whip", "whep") and not a.url:
        p.error(f"{a.mode} needs a URL")
    if a.codec is None:
        a.codec = "any" if a.mode == "whep" else "vp8"
    if a.mode != "whep" and a.codec == "any":
        p.error("a publisher needs one codec: vp8 or h264")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.mode == "whip":
        width, height = (int(v) for v in a.size.split("x"))
        coro = publish(a.url, a.token, a.codec, a.duration, a.timeout, (width, height))
    elif a.mode == "whep":
        coro = play(a.url, a.token, a.codec, a.duration, a.min_frames, a.timeout, a.frames)
    else:
        coro = loopback(a.codec, a.duration, a.min_frames, a.timeout)
    try:
        summary = asyncio.run(asyncio.wait_for(coro, a.timeout + a.duration + 15))
    except TimeoutError:
        summary = {"mode": a.mode, "ok": False, "error": "overall timeout"}
    print(json.dumps(summary), flush=True)
    if not summary["ok"]:
        print(f"aiortc_client: {summary['error']}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
