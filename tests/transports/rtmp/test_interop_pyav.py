"""Enhanced RTMP from a real encoder: PyAV's FFmpeg 8.1 publishes HEVC, AV1 and VP9, each with
Opus, to the asyncio listener on 127.0.0.1 (loopback-only namespace); the core and the ingest
layer must see the sequence headers (hvcC parsed by codecs.hevc), 30 frames and the Opus packets."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import pytest

from trackmesh.codecs.h264 import AvcConfig, split_annexb
from trackmesh.codecs.hevc import HevcConfig
from trackmesh.runtime.rtmp_listener import RtmpConnection, RtmpListener
from trackmesh.transports.rtmp.events import AudioData, ConnectRequested, Event, PublishRequested, VideoData
from trackmesh.transports.rtmp.ingest import AudioFrame, ConfigChanged, Ingest, IngestOutput, VideoFrame

av = pytest.importorskip("av")
PUBLISHER = Path(__file__).with_name("pyav_publish.py")


class AcceptAll:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, conn: RtmpConnection, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, ConnectRequested):
            conn.accept_connect()
        elif isinstance(event, PublishRequested):
            conn.accept_publish(event.stream_id)


async def _publish(encoder: str) -> tuple[list[IngestOutput], RtmpListener]:
    handler = AcceptAll()
    listener = RtmpListener(handler)
    await listener.start("127.0.0.1", 0)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PUBLISHER),
            f"rtmp://127.0.0.1:{listener.port}/live/key",
            encoder,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        await asyncio.sleep(0.1)  # the last reads and the connection's end
    finally:
        await listener.close()
    ingest = Ingest()
    out: list[IngestOutput] = []
    for event in handler.events:
        if isinstance(event, VideoData):
            out += ingest.video(event.timestamp, event.payload)
        elif isinstance(event, AudioData):
            out += ingest.audio(event.timestamp, event.payload)
    return out, listener


@pytest.mark.parametrize(("encoder", "fourcc"), [("libx265", "hvc1"), ("libsvtav1", "av01"), ("libvpx-vp9", "vp09")])
def test_pyav_enhanced_rtmp_publish(encoder: str, fourcc: str) -> None:
    if encoder not in av.codecs_available:
        pytest.skip(f"PyAV has no {encoder}")
    out, listener = asyncio.run(_publish(encoder))
    assert listener.stats.errors == {}
    configs = {(c.kind, c.fourcc): c.config for c in out if isinstance(c, ConfigChanged)}
    assert set(configs) == {("video", fourcc), ("audio", "Opus")}
    config = configs["video", fourcc]
    if fourcc == "hvc1":
        assert isinstance(config, HevcConfig) and config.vps and config.sps and config.pps
    elif fourcc == "av01":
        assert isinstance(config, bytes) and config[0] == 0x81  # av1C: marker 1, version 1
    else:
        assert isinstance(config, bytes) and config[0] == 1  # vpcC version 1
    assert isinstance(configs["audio", "Opus"], bytes) and configs["audio", "Opus"].startswith(b"OpusHead")
    frames = [f for f in out if isinstance(f, VideoFrame)]
    assert len(frames) == 30 and frames[0].keyframe and all(f.fourcc == fourcc for f in frames)
    assert [f.dts for f in frames] == sorted(f.dts for f in frames)
    if fourcc == "hvc1":  # Annex B with VPS/SPS/PPS (types 32-34) ahead of the key frame
        assert [(u[0] >> 1) & 0x3F for u in split_annexb(frames[0].data)][:3] == [32, 33, 34]
    audio = [a for a in out if isinstance(a, AudioFrame)]
    assert len(audio) >= 49 and all(a.fourcc == "Opus" for a in audio)


async def _publish_events(encoder: str, start_ms: int) -> list[Event]:
    handler = AcceptAll()
    listener = RtmpListener(handler)
    await listener.start("127.0.0.1", 0)
    try:
        url = f"rtmp://127.0.0.1:{listener.port}/live/key"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PUBLISHER), url, encoder, str(start_ms), stderr=asyncio.subprocess.PIPE
        )
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        await asyncio.sleep(0.1)
    finally:
        await listener.close()
    assert listener.stats.errors == {}
    return handler.events


@pytest.mark.parametrize("start_ms", [2**24 - 500, 2**31 - 500], ids=["near-2^24", "across-ffmpeg-2^31-wrap"])
def test_timestamps_past_the_24_bit_field_and_the_wrap(start_ms: int) -> None:
    """Extended timestamps on every chunk from 2^24 ms (4 h 40 min) on, and FFmpeg's wrap (its
    FLV writer keeps 31 bits): the frames' timeline must stay 33/34 ms steps throughout."""
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV has no libx264")
    events = asyncio.run(_publish_events("libx264", start_ms))
    # Coded frames only (AVC packet type 1): FFmpeg stamps its sequence header at 0.
    stamps = [e.timestamp for e in events if isinstance(e, VideoData) and e.payload[1:2] == b"\x01"]
    assert len(stamps) == 30
    assert all(33 <= b - a <= 34 for a, b in itertools.pairwise(stamps))
    # Opus coded frames (ExAudioTagHeader 0x91: sound format 9, packet type CodedFrames).
    audio = [e.timestamp for e in events if isinstance(e, AudioData) and e.payload[0] == 0x91]
    assert len(audio) >= 49 and all(19 <= b - a <= 21 for a, b in itertools.pairwise(audio))


def test_pyav_multitrack_renditions() -> None:
    """FFmpeg 8.1's multitrack FLV output (two H.264 renditions): both tracks come out whole."""
    if "libx264" not in av.codecs_available:
        pytest.skip("PyAV has no libx264")
    out, listener = asyncio.run(_publish("multitrack"))
    assert listener.stats.errors == {}
    configs = {c.track_id: c.config for c in out if isinstance(c, ConfigChanged)}
    assert set(configs) == {0, 1}
    high, low = configs[0], configs[1]
    assert isinstance(high, AvcConfig) and isinstance(low, AvcConfig) and high.sps != low.sps
    for track in (0, 1):
        frames = [f for f in out if isinstance(f, VideoFrame) and f.track_id == track]
        assert len(frames) == 15 and frames[0].keyframe and all(f.fourcc == "avc1" for f in frames)
