"""One file per room session from its recorded tracks: voices mixed, videos in a grid. A driver.

``trackmesh record compose <session folder> -o out.mp4`` and ``POST /api/record/compose`` (jobs.py)
run :func:`compose`. It works offline, from the files and sidecars alone (the node may be stopped):

- **Timeline** (timeline.py): every file is placed by its sidecar's ``start_wall`` (the room's
  clock, RTCP-synced per peer) and, inside the file, by its own timestamps (RTP time), so voices
  and pictures stay where the node put them however long the session. Output time 0 is the
  session's first sample; the output ends with its last.
- **Video**: FFmpeg's decoders (PyAV), one picture every ``1/fps`` s: each tile shows the newest
  frame of its file at that instant, scaled into its cell (``sws_scale``, keeping the aspect
  ratio), with the peer's name drawn (font.py). A tile is scaled and copied only when its picture
  changes; the grid is redrawn when someone arrives or leaves. H.264 (libx264) in MP4, or VP9
  (libvpx) in WebM.
- **Audio**: every audio file decoded to 48 kHz mono, placed sample-exactly at its timeline
  position (a gap in a file's timestamps, as DTX or loss leave, is silence; a sample position
  more than :data:`SLACK` samples off the running count is re-anchored, so no drift can grow),
  summed with saturation; AAC in MP4, Opus in WebM.

Progress goes to a callback (``done``, ``total`` seconds of output) about twice a second of
output. The result says what was made (duration, frames, the grid's changes).
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
from av.audio.resampler import AudioResampler
from av.container import InputContainer, OutputContainer
from av.video.frame import VideoFrame

from .font import render_label
from .layout import read_sidecar
from .timeline import Tile, Timeline, TimelineError, fit

_audioop: Any
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop  # C-speed saturating sums of s16 samples (CPython <= 3.12)
    except ImportError:  # pragma: no cover - Python 3.13 drops it
        _audioop = None

__all__ = ["ComposeError", "ComposeOptions", "ComposeResult", "compose", "session_files"]

log = logging.getLogger("trackmesh.recording.compose")

RATE: Final = 48000
#: A decoded audio frame this many samples (1 ms) off the running count is placed by its timestamp.
SLACK: Final = 48
_BACKGROUND: Final = (16, 128, 128)  # black (video range)
_NAME_TILE: Final = (40, 128, 128)  # a dark grey cell for a peer without video
_SIDE: Final = ".json"

Progress = Callable[[float, float], None]


class ComposeError(Exception):
    """The composition cannot be made; the message says why (no files, several sessions...)."""


@dataclass(frozen=True, slots=True)
class ComposeOptions:
    width: int = 1280
    height: int = 720
    fps: int = 25
    container: str = "mp4"  # "mp4" (H.264 + AAC) or "webm" (VP9 + Opus)
    preset: str = "veryfast"  # libx264's speed/size trade-off
    crf: int = 23
    threads: int = 1  # encoder and decoder threads (1: one core)
    names: bool = True

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ComposeError("width and height must be even and at least 64")
        if not 1 <= self.fps <= 60:
            raise ComposeError("fps must be between 1 and 60")
        if self.container not in ("mp4", "webm"):
            raise ComposeError("container must be mp4 or webm")


@dataclass(slots=True)
class ComposeResult:
    output: str
    duration: float
    video_frames: int
    audio_samples: int
    peers: list[str]
    files: int
    #: files left out (unreadable), each with why
    skipped: list[str] = field(default_factory=list)
    #: (time, tiles' peers) at each change of the grid
    layouts: list[tuple[float, list[str]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "duration": round(self.duration, 3),
            "video_frames": self.video_frames,
            "audio_samples": self.audio_samples,
            "peers": self.peers,
            "files": self.files,
            "skipped": self.skipped,
            "layouts": [{"t": round(t, 3), "tiles": p} for t, p in self.layouts],
        }


def _measured_duration(media: Path) -> float | None:
    """The end of the file's last packet (seconds from its first): for a file a crash cut."""
    try:
        with av.open(str(media)) as c:
            assert isinstance(c, InputContainer)
            first: float | None = None
            last = 0.0
            for packet in c.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                t = float(packet.pts * packet.time_base)
                end = t + float((packet.duration or 0) * packet.time_base)
                first = t if first is None else min(first, t)
                last = max(last, end)
            return None if first is None else last - first
    except (av.FFmpegError, OSError):
        return None


def _unreadable(media: Path, kind: str) -> str | None:
    """Why ``media`` cannot be composed (not a media file, no stream of its kind), or None."""
    try:
        with av.open(str(media)) as c:
            assert isinstance(c, InputContainer)
            streams = c.streams.video if kind == "video" else c.streams.audio
            return None if len(streams) else f"no {kind} stream"
    except (av.FFmpegError, OSError) as exc:
        return f"unreadable ({exc})"


def session_files(folder: Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The sidecars of one session's media files under ``folder`` (a session folder, or a room
    folder holding a single session), each with ``path`` (absolute) and a ``duration``. Files
    that cannot be read are left out, each named with why in ``skipped``."""
    if not folder.is_dir():
        raise ComposeError(f"{folder}: not a folder")
    skipped = [] if skipped is None else skipped
    files: list[dict[str, Any]] = []
    missing = 0
    for side in sorted(folder.rglob("*" + _SIDE)):
        if side.name.endswith(".upload" + _SIDE) or side.name.endswith(".tmp"):
            continue
        info = read_sidecar(side)
        if info is None or "kind" not in info:
            continue
        media = side.with_name(side.name[: -len(_SIDE)])
        if not media.is_file():
            missing += 1  # uploaded to S3 (and deleted here) or removed
            continue
        if info.get("status") == "failed" and not media.stat().st_size:
            continue
        problem = _unreadable(media, str(info.get("kind")))
        if problem is not None:
            log.warning("recording left out of the composition", extra={"fields": {"path": str(media),
                                                                                   "error": problem}})  # fmt: skip
            skipped.append(f"{media.relative_to(folder)}: {problem}")
            continue
        if not isinstance(info.get("duration"), (int, float)):
            info["duration"] = _measured_duration(media)
        info["path"] = str(media)
        files.append(info)
    sessions = sorted({str(f.get("session", "")) for f in files})
    if len(sessions) > 1:
        names = ", ".join(sessions)
        raise ComposeError(f"{folder} holds {len(sessions)} sessions ({names}): give one session's folder")
    if not files:
        more = f" ({missing} listed but not here: uploaded to S3 or removed)" if missing else ""
        raise ComposeError(f"{folder}: no recorded files{more}")
    return files


# ---- sources ---------------------------------------------------------------------------------


class _Video:
    """One video file's decoded frames, asked for in increasing timeline time."""

    def __init__(self, start: float, path: str, threads: int) -> None:
        self._start = start
        container = av.open(path)
        assert isinstance(container, InputContainer)
        self._container = container
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        self._frames = container.decode(stream)
        self._first: float | None = None
        self.current: VideoFrame | None = None
        self.serial = 0  # counts the frames made current: a new picture to draw
        self._next: VideoFrame | None = None
        self._next_t = -math.inf
        self._done = False
        self._pull()

    def _pull(self) -> None:
        while True:
            try:
                frame = next(self._frames)
            except (StopIteration, av.FFmpegError):
                self._done, self._next = True, None
                return
            if frame.time is None:
                continue
            if self._first is None:
                self._first = frame.time
            self._next, self._next_t = frame, self._start + frame.time - self._first
            return

    def at(self, t: float) -> VideoFrame | None:
        while self._next is not None and self._next_t <= t:
            self.current = self._next
            self.serial += 1
            self._pull()
        return self.current

    def close(self) -> None:
        self._container.close()


class _Audio:
    """One audio file as 48 kHz mono s16 samples at their timeline positions."""

    def __init__(self, start: float, path: str, threads: int) -> None:
        self._start = start
        container = av.open(path)
        assert isinstance(container, InputContainer)
        self._container = container
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = threads
        self._frames = container.decode(stream)
        self._resampler = AudioResampler(format="s16", layout="mono", rate=RATE)
        self._first: float | None = None
        self._buf = bytearray()
        self._pos = round(start * RATE)  # timeline sample of _buf[0]
        self._done = False

    def _fill(self, until: int) -> None:
        while not self._done and self._pos + len(self._buf) // 2 < until:
            try:
                frame = next(self._frames)
            except (StopIteration, av.FFmpegError):
                self._done = True
                return
            if frame.time is None:
                continue
            if self._first is None:
                self._first = frame.time
            at = round((self._start + frame.time - self._first) * RATE)
            data = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(frame))
            end = self._pos + len(self._buf) // 2
            if at > end + SLACK:
                self._buf += bytes(2 * (at - end))  # a gap in the timestamps: silence
            elif at < end - SLACK:
                data = data[2 * (end - at) :]  # overlaps what is already placed
            self._buf += data

    def take(self, a: int, b: int) -> bytes | None:
        """Samples ``a`` to ``b`` (timeline positions, asked for in increasing order), silence
        where the file has none; None when it has nothing there at all."""
        self._fill(b)
        if self._pos >= b:
            return None  # starts later
        if self._pos < a:  # what lies before ``a`` was not asked for: drop it
            drop = min(a - self._pos, len(self._buf) // 2)
            del self._buf[: 2 * drop]
            self._pos = a if drop < a - self._pos else self._pos + drop
        lead = self._pos - a
        n = min(b - self._pos, len(self._buf) // 2)
        if n <= 0 and self._done:
            return None
        body = bytes(self._buf[: 2 * n])
        del self._buf[: 2 * n]
        self._pos += n
        out = bytes(2 * lead) + body
        return out + bytes(2 * (b - a) - len(out))

    def close(self) -> None:
        self._container.close()


def _mix(chunks: list[bytes], size: int) -> bytes:
    if not chunks:
        return bytes(size)
    out = chunks[0]
    for chunk in chunks[1:]:
        out = _add(out, chunk)
    return out


def _add(a: bytes, b: bytes) -> bytes:
    if _audioop is not None:
        return bytes(_audioop.add(a, b, 2))
    import array  # pragma: no cover - the slow path without audioop

    x, y = array.array("h", a), array.array("h", b)  # pragma: no cover
    return array.array("h", (max(-32768, min(32767, p + q)) for p, q in zip(x, y, strict=True))).tobytes()


# ---- the picture -----------------------------------------------------------------------------


class _Canvas:
    """The output picture as three planes of bytes, drawn tile by tile."""

    def __init__(self, width: int, height: int) -> None:
        template = VideoFrame(width, height, "yuv420p")
        self.width, self.height = width, height
        self.strides = [p.line_size for p in template.planes]
        self.planes = [bytearray(p.buffer_size) for p in template.planes]
        self.clear()

    def clear(self) -> None:
        for plane, value in zip(self.planes, _BACKGROUND, strict=True):
            plane[:] = bytes([value]) * len(plane)

    def fill(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for i, (plane, stride) in enumerate(zip(self.planes, self.strides, strict=True)):
            d = 2 if i else 1
            row = bytes([color[i]]) * (w // d)
            for r in range(y // d, (y + h) // d):
                at = r * stride + x // d
                plane[at : at + w // d] = row

    def blit(self, x: int, y: int, frame: VideoFrame) -> None:
        """Copy a yuv420p ``frame`` with its top-left corner at (x, y)."""
        for i, (plane, stride) in enumerate(zip(self.planes, self.strides, strict=True)):
            d = 2 if i else 1
            src = frame.planes[i]
            data = memoryview(src)
            sls, w = src.line_size, frame.width // d
            base = (y // d) * stride + x // d
            for r in range(frame.height // d):
                at = base + r * stride
                plane[at : at + w] = data[r * sls : r * sls + w]

    def label(self, x: int, y: int, text: str, cell_w: int, cell_h: int) -> None:
        """The name at the bottom-left of a cell: a dark band with white letters."""
        scale = max(1, cell_h // 110)
        lw, lh, luma = render_label(text, scale, cell_w)
        y = y + cell_h - lh
        stride = self.strides[0]
        for r in range(lh):
            at = (y + r) * stride + x
            self.planes[0][at : at + lw] = luma[r * lw : (r + 1) * lw]
        for i in (1, 2):
            row = b"\x80" * (lw // 2)
            for r in range(y // 2, (y + lh) // 2):
                at = r * self.strides[i] + x // 2
                self.planes[i][at : at + lw // 2] = row

    def frame(self) -> VideoFrame:
        out = VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(out.planes, self.planes, strict=True):
            plane.update(bytes(data))
        return out


# ---- the composition -------------------------------------------------------------------------


def _open_output(path: Path, opts: ComposeOptions) -> tuple[OutputContainer, Any, Any]:
    mp4 = opts.container == "mp4"
    options = {"movflags": "+faststart"} if mp4 else {}
    out = av.open(str(path), "w", format=opts.container, options=options)
    assert isinstance(out, OutputContainer)
    if mp4:
        video = out.add_stream("libx264", rate=opts.fps)
        video.codec_context.options = {"preset": opts.preset, "crf": str(opts.crf)}
    else:
        video = out.add_stream("libvpx-vp9", rate=opts.fps)
        video.codec_context.options = {"deadline": "realtime", "cpu-used": "8", "crf": "34", "b": "0", "row-mt": "1"}
    video.width, video.height, video.pix_fmt = opts.width, opts.height, "yuv420p"
    video.codec_context.time_base = Fraction(1, opts.fps)
    video.codec_context.thread_count = opts.threads
    audio = out.add_stream("aac" if mp4 else "libopus", rate=RATE)
    audio.codec_context.layout = "mono"
    audio.codec_context.time_base = Fraction(1, RATE)
    if mp4:
        audio.codec_context.bit_rate = 96_000
    out.metadata["encoder"] = "trackmesh record compose"
    return out, video, audio


def compose(
    folder: Path, output: Path, opts: ComposeOptions | None = None, progress: Progress | None = None
) -> ComposeResult:
    """Compose the session recorded under ``folder`` into ``output``."""
    opts = opts or ComposeOptions()
    skipped: list[str] = []
    files = session_files(folder, skipped)
    try:
        timeline = Timeline.from_sidecars(files)
    except TimelineError as exc:
        raise ComposeError(f"{folder}: {exc}") from None
    meta = files[0]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part" + output.suffix)
    out, vstream, astream = _open_output(tmp, opts)
    try:
        out.metadata.update(
            {"title": f"{meta.get('room', '')} ({meta.get('session', '')})", "room": str(meta.get("room", "")),
             "session": str(meta.get("session", ""))}
        )  # fmt: skip
        result = _run(timeline, out, vstream, astream, opts, progress)
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
    out.close()
    tmp.replace(output)
    result.output = str(output)
    result.skipped = skipped
    return result


def _run(
    timeline: Timeline, out: OutputContainer, vstream: Any, astream: Any, opts: ComposeOptions,
    progress: Progress | None,
) -> ComposeResult:  # fmt: skip
    total = timeline.duration
    spans = timeline.spans
    videos: dict[int, _Video] = {}
    audios: dict[int, _Audio] = {}
    canvas = _Canvas(opts.width, opts.height)
    shown: dict[int, int] = {}  # tile index -> serial of the source frame drawn there
    tiles: list[Tile] = []
    key: tuple[tuple[str, int | None], ...] | None = None
    n_frames = max(1, math.ceil(total * opts.fps - 1e-9))
    n_samples = round(total * RATE)
    block = astream.codec_context.frame_size or 1024
    a_pos = v_idx = 0
    resample = AudioResampler(format=astream.codec_context.format.name, layout="mono", rate=RATE)
    next_report = 0.0
    try:
        while a_pos < n_samples or v_idx < n_frames:
            # Audio: one encoder frame, then the pictures up to its end (interleaved output).
            b = min(a_pos + block, n_samples)
            if a_pos < b:
                chunks: list[bytes] = []
                for s in spans:
                    if s.kind != "audio" or s.end * RATE <= a_pos or s.start * RATE >= b:
                        if s.key in audios and s.end * RATE <= a_pos:
                            audios.pop(s.key).close()
                        continue
                    src = audios.get(s.key)
                    if src is None:
                        src = audios[s.key] = _Audio(s.start, s.path, opts.threads)
                    chunk = src.take(a_pos, b)
                    if chunk is not None:
                        chunks.append(chunk)
                pcm = _mix(chunks, 2 * (b - a_pos))
                frame = av.AudioFrame(format="s16", layout="mono", samples=b - a_pos)
                frame.planes[0].update(pcm + bytes(frame.planes[0].buffer_size - len(pcm)))
                frame.sample_rate = RATE
                frame.pts = a_pos
                frame.time_base = Fraction(1, RATE)
                for f in resample.resample(frame):
                    out.mux(astream.encode(f))
                a_pos = b
            horizon = a_pos / RATE if a_pos < n_samples else math.inf
            while v_idx < n_frames and v_idx / opts.fps < horizon:
                t = v_idx / opts.fps
                now_key = timeline.layout_key(t)
                if now_key != key:
                    key = now_key
                    tiles = timeline.grid(t, opts.width, opts.height)
                    canvas.clear()
                    shown.clear()
                    for tile in tiles:
                        if tile.span is None:
                            canvas.fill(tile.x, tile.y, tile.width, tile.height, _NAME_TILE)
                            if opts.names:
                                canvas.label(tile.x, tile.y, tile.peer, tile.width, tile.height)
                    for k in [k for k in videos if all(tile.span != k for tile in tiles)]:
                        videos.pop(k).close()
                for i, tile in enumerate(tiles):
                    if tile.span is None:
                        continue
                    src_v = videos.get(tile.span)
                    if src_v is None:
                        src_v = videos[tile.span] = _Video(spans[tile.span].start, spans[tile.span].path, opts.threads)
                    picture = src_v.at(t)
                    if picture is None or shown.get(i) == src_v.serial:
                        continue
                    shown[i] = src_v.serial
                    dx, dy, w, h = fit(picture.width, picture.height, tile.width, tile.height)
                    scaled = picture.reformat(width=w, height=h, format="yuv420p", interpolation="FAST_BILINEAR")
                    canvas.blit(tile.x + dx, tile.y + dy, scaled)
                    if opts.names:
                        canvas.label(tile.x, tile.y, tile.peer, tile.width, tile.height)
                vf = canvas.frame()
                vf.pts = v_idx
                vf.time_base = Fraction(1, opts.fps)
                out.mux(vstream.encode(vf))
                v_idx += 1
            done = min(a_pos / RATE, v_idx / opts.fps)
            if progress is not None and (done >= next_report or done >= total):
                progress(min(done, total), total)
                next_report = done + 0.5
        out.mux(vstream.encode(None))
        for f in resample.resample(None):
            out.mux(astream.encode(f))
        out.mux(astream.encode(None))
    finally:
        for video_src in videos.values():
            video_src.close()
        for audio_src in audios.values():
            audio_src.close()
    if progress is not None:
        progress(total, total)
    return ComposeResult(
        output="",
        duration=total,
        video_frames=v_idx,
        audio_samples=a_pos,
        peers=sorted({s.peer for s in spans}),
        files=len(spans),
        layouts=timeline.changes_of_grid(),
    )


def main_progress_bar(done: float, total: float) -> None:  # pragma: no cover - a terminal nicety
    width = 30
    frac = done / total if total else 1.0
    bar = "#" * int(frac * width)
    sys.stderr.write(f"\r[{bar:<{width}}] {frac * 100:5.1f}%  {done:8.1f} / {total:.1f} s")
    sys.stderr.flush()
