"""The compose timeline and grid (recording/timeline.py) and the name font (recording/font.py):
sans-IO, in memory."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.recording.font import render_label
from trackmesh.recording.timeline import Timeline, fit, grid_cells

T0 = 1_796_000_000.0


def side(peer: str, kind: str, start: float, duration: float | None, track: str = "") -> dict[str, Any]:
    info: dict[str, Any] = {"peer": peer, "kind": kind, "track": track or f"{kind}_main", "start_wall": T0 + start}
    if duration is not None:
        info["duration"] = duration
    return info


def test_the_grid_follows_who_is_present_and_keeps_the_order_of_arrival() -> None:
    tl = Timeline.from_sidecars([
        side("bob", "video", 1.0, 5.0), side("bob", "audio", 1.0, 5.0),
        side("alice", "video", 0.0, 10.0), side("alice", "audio", 0.0, 10.0),
        side("carol", "audio", 2.0, 2.0),  # audio only: a tile with her name
        side("alice", "video", 3.0, 1.0, track="screen"),  # a second video of alice's
        side("dave", "video", 4.0, None), side("erin", "data", 0.0, 3.0),  # unusable: left out
    ])  # fmt: skip
    assert tl.t0 == T0 and tl.duration == 10.0
    assert [(p, s is not None) for p, s in tl.layout_key(0.5)] == [("alice", True)]
    assert [(p, s is not None) for p, s in tl.layout_key(3.5)] == [
        ("alice", True), ("alice", True), ("bob", True), ("carol", False)
    ]  # fmt: skip
    assert tl.changes_of_grid() == [
        (0.0, ["alice"]), (1.0, ["alice", "bob"]), (2.0, ["alice", "bob", "carol"]),
        (3.0, ["alice", "alice", "bob", "carol"]), (4.0, ["alice", "bob"]), (6.0, ["alice"]),
    ]  # fmt: skip
    tiles = tl.grid(3.5, 1280, 720)
    assert [(t.x, t.y, t.width, t.height) for t in tiles] == [(0, 0, 640, 360), (640, 0, 640, 360),
                                                              (0, 360, 640, 360), (640, 360, 640, 360)]  # fmt: skip
    assert tiles[3].span is None and tiles[3].peer == "carol"


@given(st.integers(1, 40), st.integers(32, 2000).map(lambda v: v * 2), st.integers(32, 1200).map(lambda v: v * 2))
def test_cells_fill_the_canvas_without_overlap(n: int, width: int, height: int) -> None:
    cells = grid_cells(n, width, height)
    assert len(cells) == n
    for x, y, w, h in cells:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0
        assert x % 2 == y % 2 == w % 2 == h % 2 == 0
    for (x1, y1, w1, h1), (x2, y2, w2, h2) in itertools.combinations(cells, 2):
        assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


@given(st.integers(1, 4000), st.integers(1, 4000), st.integers(2, 1000).map(lambda v: v * 2),
       st.integers(2, 1000).map(lambda v: v * 2))  # fmt: skip
def test_a_picture_fits_its_cell_keeping_its_shape(sw: int, sh: int, cw: int, ch: int) -> None:
    dx, dy, w, h = fit(sw, sh, cw, ch)
    assert dx >= 0 and dy >= 0 and dx + w <= cw and dy + h <= ch and w % 2 == h % 2 == 0
    scale = min(cw / sw, ch / sh)  # the largest that fits: one side touches the cell's
    assert abs(w - max(2.0, sw * scale)) <= 2 and abs(h - max(2.0, sh * scale)) <= 2
    assert abs(dx - (cw - w) / 2) <= 1 and abs(dy - (ch - h) / 2) <= 1  # centred


@given(st.text(max_size=40), st.integers(1, 6), st.integers(2, 800))
def test_labels_are_any_text_within_their_width(text: str, scale: int, max_width: int) -> None:
    width, height, luma = render_label(text, scale, max_width)
    assert 2 <= width <= max(2, max_width) and width % 2 == 0 and height % 2 == 0
    assert len(luma) == width * height


def test_a_label_draws_letters() -> None:
    width, height, luma = render_label("Al", 1, 100)
    assert (width, height) == (2 + 2 * 6 - 1 + 1, 10)
    rows = [luma[r * width : (r + 1) * width] for r in range(height)]
    assert rows[0] == bytes([16]) * width  # the band's margin
    assert rows[1][1:6] == bytes([16, 235, 235, 235, 16])  # the top of the A
