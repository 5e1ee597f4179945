"""A room recording session's timeline, and the grid of its composite: a sans-IO core.

The composer (compose.py) reads the session's sidecars (layout.py), builds a :class:`Timeline`
from them and asks it, for each output frame, which tiles the picture holds (:meth:`Timeline.grid`).
No I/O and no clock here: times are seconds from the session's first sample (``t0``).

- **Who is present**: a peer is on the grid while any of its files covers ``t`` (audio or video).
  Each video file covering ``t`` is a tile (a peer publishing a camera and a screen has two); a
  present peer with no video has a tile with only its name. Tiles keep the order in which their
  peer first appeared (then peer and track names), so the grid is stable while people stay.
- **Grid**: ``n`` tiles on ``ceil(sqrt(n))`` columns and as many rows as needed, each cell the
  same size; a picture keeps its aspect ratio inside its cell (letterboxed), centred.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Span", "Tile", "Timeline", "TimelineError", "fit", "grid_cells"]

#: Files shorter than this (seconds) are left out: nothing a viewer could see or hear.
MIN_SPAN: Final = 0.001


class TimelineError(ValueError):
    """The folder holds no usable recording; the message says why."""


@dataclass(frozen=True, slots=True)
class Span:
    """One recorded file on the session's timeline (seconds from ``t0``)."""

    key: int  # index in the timeline's spans
    peer: str
    track: str
    kind: str  # "audio" | "video"
    start: float
    end: float
    path: str  # as given in the sidecar input (the composer resolves it)
    width: int = 0
    height: int = 0

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class Tile:
    """One cell of the grid at some time: where it is and what it shows."""

    peer: str
    span: int | None  # the video span shown, or None (a name only)
    x: int
    y: int
    width: int
    height: int


def grid_cells(n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """``n`` equal cells (x, y, w, h) filling ``width`` x ``height``, row by row; even sizes and
    offsets (4:2:0 chroma)."""
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cw, ch = (width // cols) & ~1, (height // rows) & ~1
    # Centre the grid as a whole (a last row with fewer cells stays left-aligned, like a page).
    ox, oy = ((width - cw * cols) // 2) & ~1, ((height - ch * rows) // 2) & ~1
    return [(ox + (i % cols) * cw, oy + (i // cols) * ch, cw, ch) for i in range(n)]


def fit(src_w: int, src_h: int, cell_w: int, cell_h: int) -> tuple[int, int, int, int]:
    """A ``src_w`` x ``src_h`` picture scaled into the cell keeping its aspect ratio, centred:
    (dx, dy, w, h) inside the cell, even sizes, at least 2x2."""
    if src_w <= 0 or src_h <= 0:
        return 0, 0, cell_w, cell_h
    scale = min(cell_w / src_w, cell_h / src_h)
    w = max(2, int(src_w * scale) & ~1)
    h = max(2, int(src_h * scale) & ~1)
    w, h = min(w, cell_w), min(h, cell_h)
    return ((cell_w - w) // 2) & ~1, ((cell_h - h) // 2) & ~1, w, h


class Timeline:
    """The session's files placed on one clock. Build it with :meth:`from_sidecars`."""

    def __init__(self, spans: list[Span], t0: float) -> None:
        if not spans:
            raise TimelineError("no recorded file with a known start and duration")
        self.spans = spans
        self.t0 = t0  # Unix seconds of the session's first sample
        self.duration = max(s.end for s in spans)
        first: dict[str, float] = {}
        for s in spans:
            first[s.peer] = min(first.get(s.peer, s.start), s.start)
        self._first = first
        # The grid only changes where a span starts or ends: precompute those instants.
        self.changes = sorted({s.start for s in spans} | {s.end for s in spans})

    @classmethod
    def from_sidecars(cls, files: Iterable[Mapping[str, Any]]) -> Timeline:
        """Each item: a sidecar (layout.py) plus ``path`` and ``duration`` (seconds, measured from
        the file when the sidecar has none, as after a crash). Files without a start, with a
        non-positive duration or a kind other than audio/video are left out."""
        usable: list[tuple[float, float, Mapping[str, Any]]] = []
        for info in files:
            try:
                start = float(info["start_wall"])
                duration = float(info["duration"])
            except (KeyError, TypeError, ValueError):
                continue
            if info.get("kind") not in ("audio", "video") or not math.isfinite(start):
                continue
            if not math.isfinite(duration) or duration < MIN_SPAN:
                continue
            usable.append((start, duration, info))
        if not usable:
            raise TimelineError("no recorded file with a known start and duration")
        t0 = min(start for start, _, _ in usable)
        usable.sort(key=lambda u: (u[0], str(u[2].get("peer", "")), str(u[2].get("track", ""))))
        spans = [
            Span(
                key=i,
                peer=str(info.get("peer", "")),
                track=str(info.get("track", "")),
                kind=str(info["kind"]),
                start=round(start - t0, 6),  # microseconds: no float dust at the grid's changes
                end=round(start - t0 + duration, 6),
                path=str(info.get("path", "")),
                width=int(info.get("width", 0) or 0),
                height=int(info.get("height", 0) or 0),
            )
            for i, (start, duration, info) in enumerate(usable)
        ]
        return cls(spans, t0)

    def changes_of_grid(self) -> list[tuple[float, list[str]]]:
        """Each instant the grid changes, with its tiles' peers (the first entry: at 0)."""
        out: list[tuple[float, list[str]]] = []
        last: tuple[tuple[str, int | None], ...] | None = None
        for t in self.changes:
            key = self.layout_key(t)
            if key != last and t < self.duration:
                out.append((t, [peer for peer, _ in key]))
            last = key
        return out

    def present(self, t: float) -> list[str]:
        """The peers with a file covering ``t``, in order of first appearance."""
        peers = {s.peer for s in self.spans if s.covers(t)}
        return sorted(peers, key=lambda p: (self._first[p], p))

    def grid(self, t: float, width: int, height: int) -> list[Tile]:
        """The tiles of the picture at ``t`` on a ``width`` x ``height`` canvas."""
        entries = self.layout_key(t)
        cells = grid_cells(len(entries), width, height)
        return [Tile(peer, key, x, y, w, h) for (peer, key), (x, y, w, h) in zip(entries, cells, strict=True)]

    def layout_key(self, t: float) -> tuple[tuple[str, int | None], ...]:
        """What decides the grid at ``t`` (equal keys: the same tiles in the same cells)."""
        out: list[tuple[str, int | None]] = []
        for peer in self.present(t):
            videos = [s.key for s in self.spans if s.peer == peer and s.kind == "video" and s.covers(t)]
            if videos:
                out.extend((peer, key) for key in videos)
            else:
                out.append((peer, None))
        return tuple(out)
