"""Composing a recorded room session into one file (recording/compose.py, ``trackmesh record
compose``): recordings written by the recorder's own muxer and sidecars, the output judged by
ffprobe/ffmpeg and by decoding it (PyAV) and looking at its pixels and samples."""

from __future__ import annotations

import array
import itertools
import json
import math
import subprocess
import sys
import warnings
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import pytest
from av.audio.resampler import AudioResampler

from tests.recording.media import encode_video
from tests.recording.probe import decode_errors, needs_ffmpeg, probe
from tests.recording.sessions import write_track
from trackmesh.recording.compose import ComposeError, ComposeOptions, compose
from trackmesh.recording.layout import write_sidecar

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = needs_ffmpeg

VFPS = 15  # the recorded cameras' frame rate
FLASH_EVERY = 10  # seconds between the sync test's flashes (and beeps)


@cache
def encode_tone(freq: int, frames: int, amplitude: int = 4000) -> list[bytes]:
    """``frames`` 20 ms Opus packets (mono) of a ``freq`` Hz tone."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.time_base = 48000, "mono", "s16", Fraction(1, 48000)
    out: list[bytes] = []
    for n in range(frames):
        pcm = array.array("h", (int(amplitude * math.sin(2 * math.pi * freq * (n * 960 + i) / 48000))
                                for i in range(960)))  # fmt: skip
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm.tobytes() + bytes(frame.planes[0].buffer_size - 1920))
        frame.sample_rate, frame.pts = 48000, n * 960
        out.extend(bytes(p) for p in ctx.encode(frame))
    return out


def two_publishers(root: Path) -> Path:
    """alice for 6 s from 0; bob from 0.2 s for 3 s (he leaves half-way): VP8 160x120 + Opus
    (each a tone of their own)."""
    video = encode_video("vp8", 6 * VFPS, fps=VFPS, gop=VFPS)
    for peer, start, seconds in (("alice", 0.0, 6.0), ("bob", 0.2, 3.0)):
        audio = encode_tone(440 if peer == "alice" else 660, 300)
        n = int(seconds * VFPS)
        write_track(root, peer, "video_main", "video", start,
                    [(i * 90000 // VFPS, d, k) for i, (d, k) in enumerate(video[:n])], n / VFPS)  # fmt: skip
        na = int(seconds * 50)
        write_track(root, peer, "audio_main", "audio", start,
                    [(i * 960, d, True) for i, d in enumerate(audio[:na])], na / 50)  # fmt: skip
    return next(root.glob("*/*/*"))


@cache
def picture_at(path: Path, t: float) -> tuple[bytes, int]:
    """The luma plane (and its line size) of the output's picture shown at ``t``."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time + 1e-6 >= t:
                plane = frame.planes[0]
                return bytes(plane), plane.line_size
    raise AssertionError(f"no picture at {t}")


def luma_at(path: Path, t: float, x: int, y: int) -> int:
    luma, stride = picture_at(path, t)
    return luma[y * stride + x]


def mean_luma(path: Path, t: float, x0: int, y0: int, x1: int, y1: int) -> float:
    """The mean luma of the rectangle [x0, x1) x [y0, y1) of the picture shown at ``t``."""
    values = [luma_at(path, t, x, y) for x in range(x0, x1) for y in range(y0, y1)]
    return sum(values) / len(values)


def rms_between(path: Path, a: float, b: float) -> float:
    """RMS of the output's (mono) samples from ``a`` to ``b`` seconds."""
    resampler = AudioResampler(format="s16", layout="mono", rate=48000)
    total, count = 0.0, 0
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            if frame.time is None or not a <= frame.time < b:
                continue
            for f in resampler.resample(frame):
                data = bytes(f.planes[0])[: f.samples * 2]
                total += audioop.rms(data, 2) ** 2 * f.samples
                count += f.samples
    return math.sqrt(total / count) if count else 0.0


def test_two_publishers_one_leaving_make_one_file_whose_grid_follows_them(tmp_path: Path) -> None:
    session = two_publishers(tmp_path / "rec")
    out = tmp_path / "room.mp4"
    # The CLI, as a user runs it (its JSON progress is what the node's compose jobs read).
    run = subprocess.run(
        [sys.executable, "-m", "trackmesh.cli.main", "record", "compose", str(session), "-o", str(out),
         "--width", "320", "--height", "240", "--fps", "10", "--progress", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    steps = [line for line in lines if "done" in line]
    assert len(steps) >= 5 and steps[-1]["done"] == steps[-1]["total"] == 6.0
    assert all(p["done"] <= q["done"] for p, q in itertools.pairwise(steps))
    result = lines[-1]["result"]
    assert result["peers"] == ["alice", "bob"] and result["files"] == 4
    assert [(round(x["t"], 1), x["tiles"]) for x in result["layouts"]] == [
        (0.0, ["alice"]), (0.2, ["alice", "bob"]), (3.2, ["alice"])
    ]  # fmt: skip

    info = probe(out)
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in info["streams"])
    assert kinds == [("audio", "aac"), ("video", "h264")]
    assert abs(float(info["format"]["duration"]) - 6.0) < 0.1
    assert decode_errors(out) == ""
    # The grid changes: with two tiles side by side, alice's 4:3 picture is letterboxed in a 160x240
    # cell (black bands above and below); alone, she fills the 320x240 picture.
    band, left, right = (10, 50), (20, 140), (180, 300)
    assert mean_luma(out, 1.5, left[0], band[0], left[1], band[1]) < 25  # black above both pictures
    assert mean_luma(out, 1.5, right[0], band[0], right[1], band[1]) < 25
    assert mean_luma(out, 1.5, left[0], 100, left[1], 140) > 60  # alice's picture
    assert mean_luma(out, 1.5, right[0], 100, right[1], 140) > 60  # bob's
    assert mean_luma(out, 5.0, left[0], band[0], right[1], band[1]) > 60  # alice alone, the whole picture
    # Names are drawn at the bottom-left of each cell: white letters where the letterbox is black.
    for x0 in (0, 160):
        letters = [luma_at(out, 1.5, x, y) for x in range(x0 + 2, x0 + 40) for y in range(224, 238)]
        assert max(letters) > 180 and min(letters) < 40
    assert max(luma_at(out, 1.5, x, y) for x in range(60, 100) for y in range(224, 238)) < 40  # past the names
    # Both voices are mixed while both are there, then only alice's.
    # (Two tones of the same level: their sum has sqrt(2) times one's RMS.)
    both, alone = rms_between(out, 0.5, 3.0), rms_between(out, 3.5, 6.0)
    assert 2000 < alone < 3500 and 1.3 < both / alone < 1.5


def test_webm_output_is_vp9_and_opus(tmp_path: Path) -> None:
    session = two_publishers(tmp_path / "rec")
    out = tmp_path / "room.webm"
    result = compose(session, out, ComposeOptions(width=160, height=120, fps=5, container="webm", names=False))
    kinds = sorted((s["codec_type"], s["codec_name"]) for s in probe(out)["streams"])
    assert kinds == [("audio", "opus"), ("video", "vp9")]
    assert result.video_frames == 30 and result.audio_samples == 6 * 48000
    assert decode_errors(out) == ""


def test_a_file_cut_by_a_crash_is_composed_from_what_it_holds(tmp_path: Path) -> None:
    session = two_publishers(tmp_path / "rec")
    side = next(session.glob("bob/video_main-000.webm.json"))
    info = json.loads(side.read_text())
    del info["duration"]
    info["status"] = "interrupted"
    write_sidecar(side.with_suffix(""), info)
    result = compose(session, tmp_path / "o.mp4", ComposeOptions(width=64, height=64, fps=5, names=False))
    # bob's video now ends where its last packet does (a few ms from his audio's end).
    layouts = [(round(t, 1), p) for t, p in result.layouts]
    assert layouts[:2] == [(0.0, ["alice"]), (0.2, ["alice", "bob"])] and layouts[-1] == (3.2, ["alice"])
    assert all(t == 3.2 for t, _ in layouts[2:])


def test_an_unreadable_file_is_left_out_and_named(tmp_path: Path) -> None:
    session = two_publishers(tmp_path / "rec")
    broken = session / "bob" / "video_main-000.webm"
    broken.write_bytes(b"\x1a\x45\xdf\xa3 not really a webm" * 10)
    result = compose(session, tmp_path / "o.mp4", ComposeOptions(width=64, height=64, fps=5, names=False))
    assert [s.split(":")[0] for s in result.skipped] == ["bob/video_main-000.webm"]
    assert result.files == 3  # bob stays on the grid with his name (his audio is there)
    assert [(round(t, 1), p) for t, p in result.layouts] == [(0.0, ["alice"]), (0.2, ["alice", "bob"]),
                                                             (3.2, ["alice"])]  # fmt: skip
    assert decode_errors(tmp_path / "o.mp4") == ""


def test_what_cannot_be_composed_says_why(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="not a folder"):
        compose(tmp_path / "nothing", tmp_path / "o.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ComposeError, match="no recorded files"):
        compose(tmp_path / "empty", tmp_path / "o.mp4")
    session = two_publishers(tmp_path / "rec")
    other = session.with_name("20261207T080000Z-beef") / "carol"
    other.mkdir(parents=True)
    for f in session.glob("alice/audio_main-000.webm*"):
        data = f.read_bytes()
        if f.suffix == ".json":
            data = data.replace(b"c0de", b"beef")
        (other / f.name).write_bytes(data)
    with pytest.raises(ComposeError, match="2 sessions"):
        compose(session.parent, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()
    run = subprocess.run([sys.executable, "-m", "trackmesh.cli.main", "record", "compose", str(tmp_path / "empty"),
                          "-o", str(tmp_path / "o.mp4")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and "no recorded files" in run.stderr


# ---- A/V sync over a long synthetic session ----------------------------------------------------


@cache
def _sync_media() -> tuple[bytes, bytes, tuple[bytes, ...]]:
    """(a black key frame, a white key frame, :data:`FLASH_EVERY` s of 20 ms Opus packets: silence
    but for a 1 kHz beep in the packet 0.5 s before the end)."""
    pictures = []
    for luma in (16, 235):
        video = av.CodecContext.create("libvpx", "w")
        video.width, video.height, video.pix_fmt, video.time_base = 64, 64, "yuv420p", Fraction(1, 1)
        picture = av.VideoFrame(64, 64, "yuv420p")
        for i, plane in enumerate(picture.planes):
            plane.update(bytes([luma if i == 0 else 128]) * plane.buffer_size)
        picture.pts = 0
        pictures.append(b"".join(bytes(p) for p in [*video.encode(picture), *video.encode(None)]))
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.time_base = 48000, "mono", "s16", Fraction(1, 48000)
    packets: list[bytes] = []
    per_cycle = FLASH_EVERY * 50
    for n in range(per_cycle + 5):  # (a few more: the encoder's look-ahead holds the last ones back)
        tone = n % per_cycle == per_cycle - 25
        pcm = array.array("h", (int(16000 * math.sin(2 * math.pi * 1000 * i / 48000)) if tone else 0
                                for i in range(960)))  # fmt: skip
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm.tobytes() + bytes(frame.planes[0].buffer_size - 1920))
        frame.sample_rate, frame.pts = 48000, n * 960
        packets.extend(bytes(p) for p in ctx.encode(frame))
    return pictures[0], pictures[1], tuple(packets[:per_cycle])


def build_sync_session(root: Path, seconds: float) -> Path:
    """One peer for ``seconds``: 64x64 video at 1 fps, white every :data:`FLASH_EVERY` s (from the
    first ``FLASH_EVERY``), else
    black; Opus audio, a 20 ms 1 kHz beep at the same instants, else silence. Timestamps are the
    RTP units a sender would use (90 kHz, 48 kHz): generated, not real time. The audio file
    starts 0.5 s after the video on the room's clock, its beeps shifted to match."""
    black, white, cycle = _sync_media()
    whole = int(seconds)
    video = [(i * 90000, white if i % FLASH_EVERY == 0 and i else black, True) for i in range(whole)]
    write_track(root, "alice", "video_main", "video", 0.0, video, float(whole), size=(64, 64))
    audio = [(i * 960, cycle[i % len(cycle)], True) for i in range(whole * 50 - 25)]
    write_track(root, "alice", "audio_main", "audio", 0.5, audio, len(audio) / 50)
    return next(root.glob("*/*/*"))


def av_offsets(path: Path, seconds: float) -> list[float]:
    """For each flash of the output, its beep's onset minus its picture's first showing (s)."""
    flashes: list[float] = []
    with av.open(str(path)) as c:
        bright = False
        for picture in c.decode(video=0):
            plane = picture.planes[0]
            y = bytes(plane)[32 * plane.line_size + 64]  # the middle of the 128x72 picture
            if y > 128 and not bright and picture.time is not None:
                flashes.append(picture.time)
            bright = y > 128
    beeps: list[float] = []
    resampler = AudioResampler(format="s16", layout="mono", rate=48000)
    with av.open(str(path)) as c:
        quiet_until = -1.0
        for frame in c.decode(audio=0):
            for f in resampler.resample(frame):
                data = bytes(f.planes[0])[: f.samples * 2]
                if f.time is None or f.time < quiet_until or audioop.max(data, 2) < 4000:
                    continue
                samples = array.array("h", data)
                first = next(i for i, s in enumerate(samples) if abs(s) >= 4000)
                beeps.append(f.time + first / 48000)
                quiet_until = beeps[-1] + 1.0
    assert len(flashes) == len(beeps) == (int(seconds) - 1) // FLASH_EVERY, (len(flashes), len(beeps))
    return [b - f for f, b in zip(flashes, beeps, strict=True)]


SYNC_SECONDS = 300  # the suite's length; bench/recording_compose.py --long 2 runs 2 hours


def test_audio_and_video_stay_in_sync_over_a_long_session(tmp_path: Path) -> None:
    session = build_sync_session(tmp_path / "rec", SYNC_SECONDS)
    out = tmp_path / "long.mp4"
    result = compose(session, out, ComposeOptions(width=128, height=72, fps=25, preset="ultrafast", names=False))
    assert abs(result.duration - SYNC_SECONDS) < 0.05
    offsets = av_offsets(out, SYNC_SECONDS)
    # The picture is sampled every 40 ms and each flash falls on a frame: a beep within one frame
    # of its picture, and no drift from the first flash to the last.
    assert max(abs(o) for o in offsets) <= 0.040, offsets
    assert abs(offsets[-1] - offsets[0]) <= 0.010, offsets
