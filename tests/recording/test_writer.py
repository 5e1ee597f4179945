"""The recording thread and its muxers, in process: real encoded media through the queue into
WebM and fragmented MP4 files that ffprobe and ffmpeg (the oracles) read and decode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.recording.media import Rtp, encode_opus, encode_video, packetize
from tests.recording.probe import decode_errors, needs_ffmpeg, probe
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.recording.layout import list_recordings
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
