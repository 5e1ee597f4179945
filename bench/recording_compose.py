"""Compose speed: a 4-person 720p room into one 720p H.264+AAC file, on one core.

Run with ``python bench/recording_compose.py [--seconds 20] [--fps 25] [--size 1280x720]``.
Builds a recorded session the way a node leaves it (tests/recording/sessions.py: the recorder's
own muxer and sidecars): 4 peers, each a 1280x720 30 fps VP8 track (libvpx realtime, ~1.5 Mbit/s,
a key frame every 2 s) and an Opus track; one peer joins 2 s late and one leaves 4 s early, so the
grid changes. Then composes it with ``--threads 1`` (decoders and encoders on one thread) and
reports, best of ``--repeats``:

- wall-clock seconds and **speed** (seconds of output per second of work; > 1 is faster than real
  time), and **CPU seconds of the process** (user + system: the share of one core);
- the output's size and bit rate.

The issue's target: faster than real time on one core for a 4-person 720p room. ``--long H``
instead composes an ``H``-hour synthetic session (one peer, 64x64 1 fps video with a white flash
every 10 s and a 1 kHz beep at the same instants) and reports the A/V offset of the last flashes
(tests/recording/test_compose.py measures the same on 5 minutes in the suite).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
from tests.recording.media import encode_opus, encode_video
from tests.recording.sessions import write_track

from trackmesh.recording.compose import ComposeOptions, compose


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def camera(seconds: int, size: tuple[int, int], fps: int = 30) -> list[tuple[bytes, bool]]:
    """VP8 frames (1.5 Mbit/s, libvpx realtime, a key frame every 2 s) of FFmpeg's testsrc2: a
    mostly still picture with a moving part, closer to a camera than a full-frame pattern."""
    src = av.open(f"testsrc2=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}", format="lavfi")
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = size[0], size[1], "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size = Fraction(1, fps), Fraction(fps), 2 * fps
    ctx.bit_rate = 1_500_000
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[tuple[bytes, bool]] = []
    for i, frame in enumerate(src.decode(video=0)):
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        out.extend((bytes(p), p.is_keyframe) for p in ctx.encode(frame))
    out.extend((bytes(p), p.is_keyframe) for p in ctx.encode(None))
    src.close()
    return out


def build_room(root: Path, seconds: int, size: tuple[int, int], pattern: bool = False) -> Path:
    fps = 30
    video = encode_video("vp8", seconds * fps, fps=fps, gop=2 * fps, size=size) if pattern else camera(seconds, size)
    audio = encode_opus(seconds * 50)
    spans = {"alice": (0.0, seconds), "bob": (0.1, seconds), "carol": (2.0, seconds), "dave": (0.3, seconds - 4)}
    for peer, (start, end) in spans.items():
        n = int((end - start) * fps)
        write_track(root, peer, "video_main", "video", start,
                    [(i * 3000, d, k) for i, (d, k) in enumerate(video[:n])], n / fps, size=size)  # fmt: skip
        na = int((end - start) * 50)
        write_track(root, peer, "audio_main", "audio", start,
                    [(i * 960, d, True) for i, d in enumerate(audio[:na])], na / 50)  # fmt: skip
    return next(root.glob("*/*/*"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pattern", action="store_true", help="inputs of moving full-frame stripes (hard to code)")
    ap.add_argument("--long", type=float, default=0.0, help="hours of the A/V sync run instead")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.long:
            from tests.recording.test_compose import av_offsets, build_sync_session

            session = build_sync_session(Path(tmp) / "rec", args.long * 3600)
            began, c0 = time.monotonic(), cpu()
            out = Path(tmp) / "long.mp4"
            compose(session, out, ComposeOptions(width=128, height=72, fps=25, preset="ultrafast", names=False))
            spent, used = time.monotonic() - began, cpu() - c0
            offsets = av_offsets(out, args.long * 3600)
            print(f"{args.long:g} h session composed in {spent:.1f} s ({used:.1f} CPU s); "
                  f"A/V offset of the flashes: first {offsets[0] * 1000:+.1f} ms, last {offsets[-1] * 1000:+.1f} ms, "
                  f"max |offset| {max(abs(o) for o in offsets) * 1000:.1f} ms over {len(offsets)} flashes")  # fmt: skip
            return
        t = time.monotonic()
        session = build_room(Path(tmp) / "rec", args.seconds, (1280, 720), args.pattern)
        print(f"built a 4-person 1280x720 session of {args.seconds} s in {time.monotonic() - t:.1f} s")
        best = None
        for i in range(args.repeats):
            out = Path(tmp) / f"out{i}.mp4"
            began, c0 = time.monotonic(), cpu()
            result = compose(session, out, ComposeOptions(width=w, height=h, fps=args.fps, preset=args.preset))
            spent, used = time.monotonic() - began, cpu() - c0
            if best is None or used < best[1]:
                best = (spent, used, out.stat().st_size, result.duration)
        assert best is not None
        spent, used, size, duration = best
        print(f"output {w}x{h} @ {args.fps} fps, preset {args.preset}: {duration:.1f} s of room in {spent:.2f} s wall "
              f"({duration / spent:.2f}x real time), {used:.2f} CPU s ({duration / used:.2f}x real time per core), "
              f"{size / 1e6:.2f} MB ({size * 8 / duration / 1e6:.2f} Mbit/s)")  # fmt: skip


if __name__ == "__main__":
    main()
