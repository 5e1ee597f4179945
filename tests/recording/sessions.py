"""Recorded sessions for the compose tests, written by the recorder's own muxer (SegmentMuxer) and
sidecars (layout.write_sidecar), as a node would leave them: real VP8/Opus frames from FFmpeg's
encoders, timestamps in RTP units, each file placed on the room's clock by its ``start_wall``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trackmesh.recording.layout import file_stem, iso_time, write_sidecar
from trackmesh.recording.muxer import SegmentMuxer
from trackmesh.recording.track import Sample, SegmentStart

SESSION = "20261207T070000Z-c0de"
T0 = 1_796_000_000.0  # the session's first sample, Unix seconds


def write_track(
    root: Path, peer: str, track: str, kind: str, start: float, samples: Sequence[tuple[int, bytes, bool]],
    duration: float, room: str = "demo", size: tuple[int, int] = (160, 120),
) -> Path:  # fmt: skip
    """One recorded file: ``samples`` are (pts in RTP units, data, keyframe); ``start`` seconds
    after :data:`T0` on the room's clock."""
    video = kind == "video"
    container = "webm"
    codec = "vp8" if video else "opus"
    stem = file_stem(root, "", room, SESSION, peer, track, 0)
    path = stem.with_name(f"{stem.name}.{container}")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg = SegmentStart(0, codec, container, 90000 if video else 48000, T0 + start, True,
                       width=size[0] if video else 0, height=size[1] if video else 0, channels=2)  # fmt: skip
    muxer = SegmentMuxer(path, seg, {"room": room, "peer": peer, "track": track})
    for pts, data, key in samples:
        muxer.write(Sample(pts, data, key))
    muxer.close()
    write_sidecar(path, {
        "app": "", "room": room, "session": SESSION, "peer": peer, "track": track,
        "kind": kind, "codec": codec, "container": container, "index": 0, "start_wall": T0 + start,
        "start_time": iso_time(T0 + start), "synced": True, "status": "complete",
        "duration": round(duration, 3), "bytes": muxer.bytes, "file": path.name,
    })  # fmt: skip
    return path
