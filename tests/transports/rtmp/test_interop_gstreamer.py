"""Interop with real encoders, publishing to a small asyncio TCP server in this test that feeds
every byte to the sans-IO session (loopback only: scripts/test.sh runs pytest in a network
namespace with only ``lo``):

- GStreamer's ``rtmp2sink`` (its own RTMP stack) publishes x264 + AAC through ``flvmux``: it must
  reach NetStream.Publish.Start and deliver video frames whose avcC parses.
- GStreamer's ``rtmpsink`` (librtmp, an independent implementation) with SWF verification on,
  which makes librtmp use the FP9 digest handshake and check our S1 digest and S2 signature.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from trackmesh.codecs.h264 import AvcConfig, H264Depacketizer, avcc_to_annexb, split_annexb
from trackmesh.transports.rtmp import flv
from trackmesh.transports.rtmp.events import (
    AudioData,
    Closed,
    ConnectRequested,
    Event,
    MetadataReceived,
    PublishRequested,
    Unpublished,
    VideoData,
)
from trackmesh.transports.rtmp.flv import PacketType
from trackmesh.transports.rtmp.ingest import BFramesDetected, Ingest, VideoFrame
from trackmesh.transports.rtmp.media import RtmpMedia
from trackmesh.transports.rtmp.session import ServerSession


def _have(*elements: str) -> bool:
    if shutil.which("gst-launch-1.0") is None or shutil.which("gst-inspect-1.0") is None:
        return False
    return all(
        subprocess.run(["gst-inspect-1.0", e], capture_output=True, check=False).returncode == 0 for e in elements
    )


ELEMENTS = ("rtmp2sink", "flvmux", "x264enc", "h264parse", "voaacenc", "aacparse", "videotestsrc", "audiotestsrc")
pytestmark = pytest.mark.skipif(not _have(*ELEMENTS), reason="GStreamer rtmp2sink/flvmux/x264enc/voaacenc missing")


async def _serve(
    events: list[Event], publish_started: asyncio.Event, sessions: list[ServerSession] | None = None
) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession(loop.time())
        if sessions is not None:
            sessions.append(session)
        try:
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    session.connection_lost()
                session.receive_data(data, loop.time())
                for event in session.events():
                    events.append(event)
                    if isinstance(event, ConnectRequested):
                        if event.app == "live":
                            session.accept_connect()
                        else:
                            session.reject_connect(f"unknown app {event.app!r}")
                    elif isinstance(event, PublishRequested):
                        session.accept_publish(event.stream_id)
                        publish_started.set()
                writer.write(session.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _publish_with_gstreamer(x264: str = "tune=zerolatency speed-preset=ultrafast") -> list[Event]:
    events: list[Event] = []
    publish_started = asyncio.Event()
    server = await _serve(events, publish_started)
    port = server.sockets[0].getsockname()[1]
    pipeline = (
        "videotestsrc num-buffers=60 ! video/x-raw,width=320,height=240,framerate=30/1 "
        f"! x264enc {x264} key-int-max=30 ! h264parse ! queue ! mux. "
        "audiotestsrc num-buffers=90 samplesperbuffer=1024 ! audio/x-raw,rate=44100,channels=2 "
        "! audioconvert ! voaacenc ! aacparse ! queue ! mux. "
        f"flvmux name=mux streamable=true ! rtmp2sink location=rtmp://127.0.0.1:{port}/live/tok123"
    )
    proc = await asyncio.create_subprocess_exec(
        "gst-launch-1.0", "-q", *pipeline.split(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=12)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
        await server.wait_closed()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert publish_started.is_set()
    return events


def test_gstreamer_rtmp2sink_publishes_h264_and_aac() -> None:
    events = asyncio.run(_publish_with_gstreamer())

    connect = next(e for e in events if isinstance(e, ConnectRequested))
    assert connect.app == "live" and connect.tc_url.startswith("rtmp://127.0.0.1")
    publish = next(e for e in events if isinstance(e, PublishRequested))
    assert publish.stream_key == "tok123"

    video = [p for e in events if isinstance(e, VideoData) for p in flv.parse_video(e.payload)]
    sequence = [p for p in video if p.packet_type == PacketType.SEQUENCE_START]
    frames = [p for p in video if p.packet_type == PacketType.CODED_FRAMES]
    assert sequence and all(p.fourcc == "avc1" for p in video)
    config = flv.video_config(sequence[0])
    assert isinstance(config, AvcConfig) and config.sps and config.pps and config.sps[0][0] & 0x1F == 7
    assert len(frames) == 60
    # The hand-off to codecs/h264: AVCC frames -> Annex B with the avcC's NAL length size.
    nal_types = [[u[0] & 0x1F for u in split_annexb(avcc_to_annexb(f.data, config.length_size))] for f in frames]
    assert all((5 in types) == f.is_keyframe for types, f in zip(nal_types, frames, strict=True))
    assert sum(p.is_keyframe for p in frames) == 2  # key-int-max=30 over 60 frames
    stamps = [e.timestamp for e in events if isinstance(e, VideoData)]
    assert stamps == sorted(stamps) and 1900 <= stamps[-1] - stamps[0] <= 2100  # 2 s at 30 fps

    audio = [p for e in events if isinstance(e, AudioData) for p in flv.parse_audio(e.payload)]
    [asc] = [p for p in audio if p.packet_type == PacketType.SEQUENCE_START]
    aac = flv.parse_aac_config(asc.data)
    assert (aac.object_type, aac.sample_rate, aac.channels) == (2, 44100, 2)
    assert len([p for p in audio if p.packet_type == PacketType.CODED_FRAMES]) >= 80
    # The ingest layer: Annex B access units, parameter sets before every key frame, no B-frames.
    ingest = Ingest()
    out = [o for e in events if isinstance(e, VideoData) for o in ingest.video(e.timestamp, e.payload)]
    access_units = [o for o in out if isinstance(o, VideoFrame)]
    assert len(access_units) == 60 and not any(isinstance(o, BFramesDetected) for o in out)
    for au in access_units:
        types = [u[0] & 0x1F for u in split_annexb(au.data)]
        assert (types[:2] == [7, 8]) == au.keyframe and 9 not in types

    # ... and on to core MediaPackets (RFC 6184), which the shared depacketizer reassembles.
    media = RtmpMedia()
    depacketizer = H264Depacketizer()
    for au in access_units:
        for packet in media.video(au, 0.0):
            depacketizer.push(packet.payload, packet.seq, packet.ts, packet.marker)
    rebuilt = [depacketizer.poll_frame() for _ in access_units]
    assert [f.data if f else None for f in rebuilt] == [au.data for au in access_units]

    meta = next(e for e in events if isinstance(e, MetadataReceived))
    assert (meta.metadata["width"], meta.metadata["height"]) == (320.0, 240.0)
    assert events[-2:] == [Unpublished(publish.stream_id, "tok123"), Closed("connection lost", False)]


async def _serve_swf() -> asyncio.Server:
    """A one-file HTTP server: librtmp fetches the SWF named by swfUrl to hash it (an
    uncompressed "FWS" body is enough), and that switches it to the digest handshake."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"FWS" + bytes(200)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _publish_with_librtmp(home: str) -> tuple[list[Event], list[ServerSession], str]:
    events: list[Event] = []
    sessions: list[ServerSession] = []
    server = await _serve(events, asyncio.Event(), sessions)
    swf = await _serve_swf()
    port = server.sockets[0].getsockname()[1]
    swf_port = swf.sockets[0].getsockname()[1]
    location = f"rtmp://127.0.0.1:{port}/live/tok456 swfUrl=http://127.0.0.1:{swf_port}/p.swf swfVfy=1"
    pipeline = [
        *["videotestsrc", "num-buffers=30", "!", "video/x-raw,width=160,height=120,framerate=30/1"],
        *["!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=30", "!", "h264parse"],
        *["!", "flvmux", "streamable=true", "!", "rtmpsink"],
        f"location={location}",
    ]
    # librtmp logs through GStreamer's "rtmp" category; HOME holds its SWF hash cache (~/.swfinfo).
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "GST_DEBUG": "rtmp:6", "GST_DEBUG_NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        "gst-launch-1.0", "-q", *pipeline, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=12)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for s in (server, swf):
            s.close()
            await s.wait_closed()
    log = err.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    return events, sessions, log


@pytest.mark.skipif(not _have("rtmpsink"), reason="GStreamer rtmpsink (librtmp) missing")
def test_librtmp_digest_handshake_and_publish(tmp_path: Path) -> None:
    events, sessions, log = asyncio.run(_publish_with_librtmp(str(tmp_path)))
    [session] = sessions
    assert session.handshake_digest_used
    # librtmp's own verdict on our S2 (it aborts the connection when the signature is wrong).
    assert "Genuine Adobe Flash Media Server" in log
    assert next(e for e in events if isinstance(e, PublishRequested)).stream_key == "tok456"
    video = [p for e in events if isinstance(e, VideoData) for p in flv.parse_video(e.payload)]
    assert isinstance(flv.video_config(video[0]), AvcConfig)
    assert len([p for p in video if p.packet_type == PacketType.CODED_FRAMES]) == 30


@pytest.mark.skipif(not _have(*ELEMENTS), reason="GStreamer elements missing")
def test_b_frames_from_x264_are_detected() -> None:
    events = asyncio.run(_publish_with_gstreamer("speed-preset=ultrafast bframes=2 b-adapt=false"))
    ingest = Ingest()
    out = [o for e in events if isinstance(e, VideoData) for o in ingest.video(e.timestamp, e.payload)]
    [detected] = [o for o in out if isinstance(o, BFramesDetected)]
    assert detected.composition_time > 0
    frames = [o for o in out if isinstance(o, VideoFrame)]
    assert len(frames) == 60 and any(f.pts != f.dts for f in frames)
