"""Per-viewer bitrate allocation (core.bitrate): priority split, water-filling, layer caps, hints."""

from __future__ import annotations

import random
from typing import Any

import pytest

from trackmesh.core.bitrate import (
    AUDIO_RESERVE_BPS,
    HEADROOM,
    MIN_VIDEO_HINT_BPS,
    PROBE_HEADROOM,
    ReceiverDemand,
    allocate,
    split,
)
from trackmesh.core.model import TrackKind

V, A = TrackKind.VIDEO, TrackKind.AUDIO
SIMULCAST = (150_000.0, 500_000.0, 1_500_000.0)


def video(name: str, priority: int = 1, rates: tuple[float, ...] = SIMULCAST, **kw: Any) -> ReceiverDemand:
    return ReceiverDemand(name, V, priority=priority, layer_rates=rates, **kw)


def test_split_by_priority_and_water_filling() -> None:
    assert split(900, [2, 1], [None, None]) == pytest.approx([600, 300])
    # The second needs only 100: the first gets the rest.
    assert split(900, [1, 1], [None, 100]) == pytest.approx([800, 100])
    # Both satisfied: the leftover is not handed out.
    assert split(900, [1, 1], [200, 100]) == pytest.approx([200, 100])
    # Cascade: capping one raises the others' shares past another's need.
    assert split(1000, [1, 1, 1], [300, 320, None]) == pytest.approx([300, 320, 380])


@pytest.mark.parametrize("seed", range(20))
def test_split_properties(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    weights = [rng.randint(1, 5) for _ in range(n)]
    needs = [rng.choice([None, rng.uniform(0, 2000)]) for _ in range(n)]
    budget = rng.uniform(0, 5000)
    out = split(budget, weights, needs)
    assert sum(out) <= budget + 1e-6
    for got, need in zip(out, needs, strict=True):
        assert got >= 0 and (need is None or got <= need + 1e-6)
    # Nothing is left over while someone still wants more.
    if any(need is None or got < need - 1e-6 for got, need in zip(out, needs, strict=True)):
        assert sum(out) == pytest.approx(budget)


def test_priority_split_picks_layers() -> None:
    allocs = allocate(1_200_000, [video("hi", priority=2, max_spatial=2), video("lo", max_spatial=2)])
    assert allocs["hi"].bitrate_bps == 800_000 and allocs["lo"].bitrate_bps == 400_000
    assert allocs["hi"].max_spatial == 1  # 500k x 1.15 fits 800k, 1.5M does not
    assert allocs["lo"].max_spatial == 0
    assert allocs["hi"].hint_bps == int(800_000 * PROBE_HEADROOM)
    # Plenty: both get their top layer, i.e. the configured cap.
    allocs = allocate(10_000_000, [video("hi", priority=2, max_spatial=2), video("lo", max_spatial=2)])
    assert allocs["hi"].max_spatial == allocs["lo"].max_spatial == 2


def test_config_caps_need_and_hint() -> None:
    # "lo" is capped at spatial 0 by its config: it needs only layer 0, "hi" takes the rest.
    allocs = allocate(1_500_000, [video("hi", max_spatial=2), video("lo", max_spatial=0)])
    need = SIMULCAST[0] * HEADROOM
    assert allocs["lo"].bitrate_bps == int(need) and allocs["lo"].max_spatial == 0
    assert allocs["hi"].bitrate_bps == int(1_500_000 - need) and allocs["hi"].max_spatial == 1
    # With more, "hi" is satisfied too (its need: layer 2) and the rest is not handed out.
    allocs = allocate(3_000_000, [video("hi", max_spatial=2), video("lo", max_spatial=0)])
    assert allocs["hi"].bitrate_bps == int(SIMULCAST[2] * HEADROOM) and allocs["hi"].max_spatial == 2
    assert allocs["hi"].hint_bps == int(sum(SIMULCAST) * HEADROOM * PROBE_HEADROOM)
    assert allocs["lo"].hint_bps == max(MIN_VIDEO_HINT_BPS, int(SIMULCAST[0] * HEADROOM * PROBE_HEADROOM))
    # A receiver capped at 1 needs layer 1; its publisher is asked for layers 0 and 1.
    allocs = allocate(5_000_000, [video("mid", max_spatial=1)])
    assert allocs["mid"].bitrate_bps == int(SIMULCAST[1] * HEADROOM)
    assert allocs["mid"].hint_bps == int((SIMULCAST[0] + SIMULCAST[1]) * HEADROOM * PROBE_HEADROOM)


def test_min_spatial_floor_and_unknowns() -> None:
    allocs = allocate(100_000, [video("a", min_spatial=1, max_spatial=2), video("b", max_spatial=2)])
    assert allocs["a"].max_spatial == 1  # nothing fits: never below min_spatial
    assert allocs["b"].max_spatial == 0
    assert allocs["b"].hint_bps == MIN_VIDEO_HINT_BPS
    # No estimate: only the configured caps, no hints.
    allocs = allocate(None, [video("a", max_spatial=1), video("b"), ReceiverDemand("m", A)])
    assert [(x.max_spatial, x.hint_bps, x.bitrate_bps) for x in allocs.values()] == [
        (1, None, None),
        (None, None, None),
        (None, None, None),
    ]
    # Nothing measured yet: the configured cap; an unbounded share.
    allocs = allocate(1_000_000, [video("new", rates=(0.0, 0.0, 0.0, 0.0), max_spatial=2)])
    assert allocs["new"].max_spatial == 2 and allocs["new"].bitrate_bps == 1_000_000
    # A non-simulcast source (layer 0 only) under max_spatial 2: its layer fits, the cap stays the config's.
    allocs = allocate(1_000_000, [video("one", rates=(400_000.0, 0.0, 0.0, 0.0), max_spatial=2)])
    assert allocs["one"].max_spatial == 2


def test_audio_reserved_first() -> None:
    allocs = allocate(
        1_000_000, [ReceiverDemand("a0", A), ReceiverDemand("a1", A, rate_bps=60_000), video("v", max_spatial=2)]
    )
    assert allocs["a0"].bitrate_bps == AUDIO_RESERVE_BPS and allocs["a1"].bitrate_bps == 60_000
    assert allocs["v"].bitrate_bps == 1_000_000 - AUDIO_RESERVE_BPS - 60_000
    assert allocs["a0"].hint_bps is None and allocs["a0"].max_spatial is None
