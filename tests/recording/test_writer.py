"""The recording thread and its muxers, in process: real encoded media through the queue into
WebM and fragmented MP4 files that ffprobe and ffmpeg (the oracles) read and decode."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.recording.media import Rtp, encode_opus, encode_video, packetize
from tests.recording.probe import decode_errors, needs_ffmpeg, probe
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.recording.clock import PeerClock
from trackmesh.recording.layout import list_recordings
from trackmesh.recording.muxer import SegmentMuxer
from trackmesh.recording.track import Sample, SegmentStart, TrackRecorder
from trackmesh.recording.writer import RecordingWriter, TrackMeta

pytestmark = needs_ffmpeg


def packets(codec: MediaCodec, groups: list[list[Rtp]], t0: float, step: float) -> list[MediaPacket]:
    out = []
    for i, group in enumerate(groups):
        for seq, ts, marker, payload in group:
            out.append(MediaPacket(codec, 96, seq, ts, marker, False, payload, arrival=t0 + i * step))
    return out


def run_writer(root: Path, tracks: dict[str, tuple[TrackMeta, list[MediaPacket]]]) -> dict[str, int]:
    counters: dict[str, int] = {}
    writer = RecordingWriter(root, 3600.0, counters, wall_offset=time.time() - time.monotonic())
    for key, (meta, _) in tracks.items():
        writer.open_track(key, meta)
    for key, (_, pkts) in tracks.items():
        for pkt in pkts:
            writer.packet(key, pkt)
    for key in tracks:
        writer.close_track(key, "left")
    writer.stop(10.0)
    return counters


def test_vp8_opus_and_h264_files_play_and_carry_their_names(tmp_path: Path) -> None:
    now = time.monotonic()
    vp8 = encode_video("vp8", 90, gop=30)
    h264 = encode_video("h264", 60, gop=30)
    opus = encode_opus(150)
    tracks = {
        "v": (TrackMeta("", "room 1", "s1", "alice", "video", True),
              packets(MediaCodec.VP8, packetize("vp8", [d for d, _ in vp8], 3000, mtu=1000), now, 1 / 30)),
        "a": (TrackMeta("", "room 1", "s1", "alice", "audio", False),
              packets(MediaCodec.OPUS, packetize("opus", opus, 960), now, 0.02)),
        "h": (TrackMeta("", "room 1", "s1", "bob/../x", "cam", True),
              packets(MediaCodec.H264, packetize("h264", [d for d, _ in h264], 3000, mtu=1000), now, 1 / 30)),
    }  # fmt: skip
    counters = run_writer(tmp_path, tracks)
    assert counters["recording_failures"] == 0
    assert counters["recording_files"] == 3 and counters["recording_tracks"] == 0
    listed = list_recordings(tmp_path, "", "room 1")
    assert {(i["peer"], i["track"], i["container"], i["status"]) for i in listed} == {
        ("alice", "video", "webm", "complete"),
        ("alice", "audio", "webm", "complete"),
        ("bob/../x", "cam", "mp4", "complete"),
    }
    assert counters["recording_bytes"] == sum(i["bytes"] for i in listed) > 0
    assert all(i["size"] > i["bytes"] for i in listed)  # plus the containers' own bytes
    for info in listed:
        path = tmp_path / info["path"]
        assert path.is_relative_to(tmp_path / "default" / "room%201" / "s1")
        meta = probe(path)
        (stream,) = meta["streams"]
        expected = {"video": "vp8", "audio": "opus", "cam": "h264"}[info["track"]]
        assert stream["codec_name"] == expected
        duration = float(meta["format"]["duration"])
        assert duration == pytest.approx(3.0 if info["track"] != "cam" else 2.0, abs=0.1)
        tags = {k.lower(): v for k, v in meta["format"].get("tags", {}).items()}
        assert tags.get("room") == "room 1" and tags.get("peer") == info["peer"] and tags.get("track") == info["track"]
        assert tags.get("start_time") == info["tagged_start_time"] == info["start_time"]
        assert decode_errors(path) == ""
        if info["track"] != "audio":
            assert (stream["width"], stream["height"]) == (160, 120)


def test_a_file_that_cannot_be_written_fails_its_track_only(tmp_path: Path) -> None:
    blocker = tmp_path / "default"
    blocker.write_text("not a directory")  # every path under it fails like a full or read-only disk
    now = time.monotonic()
    opus = encode_opus(20)
    tracks = {
        "a": (
            TrackMeta("", "r", "s", "p", "audio", False),
            packets(MediaCodec.OPUS, packetize("opus", opus, 960), now, 0.02),
        )
    }
    counters = run_writer(tmp_path, tracks)
    assert counters["recording_failures"] == 1
    assert counters["recording_tracks"] == 0


def test_a_full_queue_drops_packets_and_the_file_resumes_at_a_key_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker side never waits: past QUEUE_MAX queued packets it drops and counts; the recorder
    sees the gap as loss, skips to the next key frame, and the file still decodes cleanly."""
    import trackmesh.recording.writer as writer_mod

    now = time.monotonic()
    vp8 = encode_video("vp8", 90, gop=30)
    pkts = packets(MediaCodec.VP8, packetize("vp8", [d for d, _ in vp8], 3000, mtu=1000), now, 1 / 30)
    counters: dict[str, int] = {}
    writer = RecordingWriter(tmp_path, 3600.0, counters, wall_offset=time.time() - time.monotonic())
    meta = TrackMeta("", "r", "s", "p", "video", True)
    monkeypatch.setattr(writer_mod, "QUEUE_MAX", 10_000)
    writer.open_track("v", meta)
    first_gop = [p for p in pkts if p.arrival < now + 0.3]
    for pkt in first_gop:
        writer.packet("v", pkt)
    deadline = time.monotonic() + 5
    while counters["recording_files"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The thread is busy elsewhere (simulated: a queue that holds nothing more) for the rest of
    # the first GOP, then everything flows again.
    monkeypatch.setattr(writer_mod, "QUEUE_MAX", 0)
    rest = pkts[len(first_gop) :]
    dropped = [p for p in rest if p.arrival < now + 0.6]
    for pkt in dropped:
        writer.packet("v", pkt)
    monkeypatch.setattr(writer_mod, "QUEUE_MAX", 10_000)
    for pkt in rest[len(dropped) :]:
        writer.packet("v", pkt)
    writer.close_track("v", "left")
    writer.stop(10.0)
    assert counters["recording_queue_drops"] == len(dropped) > 0
    assert counters["recording_skipped_frames"] > 0 and counters["recording_failures"] == 0
    (info,) = list_recordings(tmp_path, "", "r")
    path = tmp_path / info["path"]
    assert decode_errors(path) == ""
    assert info["status"] == "complete" and info["duration"] == pytest.approx(89 / 30, abs=0.05), info


def test_stopping_the_writer_finalises_open_files(tmp_path: Path) -> None:
    """A node that stops with tracks still recording: every file gets its trailer (seekable,
    duration in the header) and its sidecar says complete, 'node stopped'."""
    now = time.monotonic()
    opus = encode_opus(100)
    h264 = encode_video("h264", 60, gop=30)
    counters: dict[str, int] = {}
    writer = RecordingWriter(tmp_path, 3600.0, counters, wall_offset=time.time() - time.monotonic())
    writer.open_track("a", TrackMeta("", "r", "s", "p", "audio", False))
    writer.open_track("v", TrackMeta("", "r", "s", "p", "video", True))
    for pkt in packets(MediaCodec.OPUS, packetize("opus", opus, 960), now, 0.02):
        writer.packet("a", pkt)
    for pkt in packets(MediaCodec.H264, packetize("h264", [d for d, _ in h264], 3000, mtu=1000), now, 1 / 30):
        writer.packet("v", pkt)
    began = time.monotonic()
    writer.stop(10.0)
    assert time.monotonic() - began < 10.0
    listed = list_recordings(tmp_path, "", "r")
    assert {(i["track"], i["status"], i["end_reason"]) for i in listed} == {
        ("audio", "complete", "node stopped"),
        ("video", "complete", "node stopped"),
    }
    for info in listed:
        meta = probe(tmp_path / info["path"])
        assert float(meta["format"]["duration"]) == pytest.approx(info["duration"], abs=0.1)
        assert decode_errors(tmp_path / info["path"]) == ""


def test_a_track_joined_mid_stream_asks_for_a_key_frame(tmp_path: Path) -> None:
    now = time.monotonic()
    vp8 = encode_video("vp8", 90, gop=30)
    groups = packetize("vp8", [d for d, _ in vp8], 3000, mtu=1000)
    asked: list[float] = []
    counters: dict[str, int] = {}
    writer = RecordingWriter(tmp_path, 3600.0, counters, wall_offset=time.time() - time.monotonic())
    writer.open_track("v", TrackMeta("", "r", "s", "p", "video", True), lambda: asked.append(time.monotonic()))
    for pkt in packets(MediaCodec.VP8, groups[5:29], now, 1 / 30):  # delta frames only
        writer.packet("v", pkt)
    deadline = time.monotonic() + 5
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.stop(5.0)
    assert asked and counters["recording_skipped_frames"] == 24 and counters["recording_files"] == 0


def test_a_write_error_mid_file_fails_that_track_and_no_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full while a file grows: that track stops recording (sidecar failed, counted, logged),
    its file is closed as it stands; the other track's file is complete."""
    import errno

    from trackmesh.recording.muxer import SegmentMuxer

    real_write = SegmentMuxer.write
    written: dict[str, int] = {}

    def write(self: SegmentMuxer, sample: Any) -> None:
        name = self.path.name
        written[name] = written.get(name, 0) + 1
        if name.startswith("video") and written[name] > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, sample)

    monkeypatch.setattr(SegmentMuxer, "write", write)
    now = time.monotonic()
    vp8 = encode_video("vp8", 90, gop=30)
    opus = encode_opus(100)
    tracks = {
        "v": (TrackMeta("", "r", "s", "p", "video", True),
              packets(MediaCodec.VP8, packetize("vp8", [d for d, _ in vp8], 3000, mtu=1000), now, 1 / 30)),
        "a": (TrackMeta("", "r", "s", "p", "audio", False),
              packets(MediaCodec.OPUS, packetize("opus", opus, 960), now, 0.02)),
    }  # fmt: skip
    counters = run_writer(tmp_path, tracks)
    assert counters["recording_failures"] == 1 and counters["recording_tracks"] == 0
    by_track = {i["track"]: i for i in list_recordings(tmp_path, "", "r")}
    assert by_track["video"]["status"] == "failed" and "No space left" in by_track["video"]["error"]
    assert by_track["audio"]["status"] == "complete"
    assert decode_errors(tmp_path / by_track["audio"]["path"]) == ""
    assert probe(tmp_path / by_track["video"]["path"])["streams"][0]["codec_name"] == "vp8"  # what it had


@pytest.mark.parametrize(("codec", "container"), [("vp9", "webm"), ("av1", "webm"), ("h265", "mp4")])
def test_vp9_av1_and_hevc_files_play(tmp_path: Path, codec: str, container: str) -> None:
    """The other video codecs through the recorder core and the muxer (FFmpeg's encoders in, our
    packetizers; the core's MediaCodec does not name HEVC yet, so not through the writer's queue):
    the file carries the codec's configuration (vpcC, av1C from the sequence header, hvcC from the
    VPS/SPS/PPS put in front of the key frame) and decodes without an error."""
    frames = encode_video(codec, 40, gop=30, size=(160, 128))
    rec = TrackRecorder(True, PeerClock())
    now = 1000.0
    for seq, ts, marker, payload in [p for g in packetize(codec, [d for d, _ in frames], 3000, mtu=1000) for p in g]:
        rec.on_packet(now, codec.upper(), seq, ts, marker, payload)
        now += 0.01
    rec.stop(now)
    muxer: SegmentMuxer | None = None
    written = 0
    while (out := rec.poll()) is not None:
        if isinstance(out, SegmentStart):
            assert out.container == container
            muxer = SegmentMuxer(tmp_path / f"v.{container}", out, {"title": "r/p/v"})
        elif isinstance(out, Sample):
            assert muxer is not None
            muxer.write(out)
            written += 1
    assert muxer is not None and written == 40
    muxer.close()
    (stream,) = probe(muxer.path)["streams"]
    assert stream["codec_name"] == {"h265": "hevc"}.get(codec, codec)
    assert (stream["width"], stream["height"]) == (160, 128)
    assert decode_errors(muxer.path) == ""
