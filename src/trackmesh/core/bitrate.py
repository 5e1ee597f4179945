"""Per-viewer bitrate allocation (sans-IO, pure functions).

A viewer's connection has one bandwidth estimate (transport-wide CC, in bits per second) and
several receivers, each fed by one source. :func:`allocate` splits the estimate across them:

1. Audio receivers first: each is given what it measured (at least :data:`AUDIO_RESERVE_BPS`),
   taken off the top. Audio has no layers to drop and is tiny next to video.
2. The rest is shared by the video receivers **by priority** (weights; priority 0 counts as 1),
   water-filling: a receiver whose *need* is below its weighted share gets only its need and
   the remainder is shared again by the others. The need of a receiver is what its highest
   allowed layer costs (the rate of layer ``max_spatial`` times :data:`HEADROOM`: one layer
   is forwarded), known only when that layer is being received; otherwise it is unbounded
   (the source may have more to give than we see, e.g. a simulcast publisher that dropped its
   top layers).
3. Each video receiver's **spatial cap** is the highest layer within ``[min_spatial,
   max_spatial]`` whose rate (times :data:`HEADROOM`) fits its allocation; never below
   ``min_spatial``; with no layer that fits, ``min_spatial`` or layer 0.
4. The **hint** for the source's publisher (a core ``SetLocalBitrate``; the core keeps the
   most demanding viewer's hint per track and sends the publisher a ``BitrateTarget``, REMB on
   WebRTC) is the allocation times :data:`PROBE_HEADROOM`, at least :data:`MIN_VIDEO_HINT_BPS`;
   for a receiver whose need is known and met, the layers ``0..max_spatial`` summed instead of
   the allocation (a simulcast publisher sends every layer below the one forwarded).
   The headroom exists because an estimate measured on an application-limited path can only
   grow to about 1.5x what is delivered: a publisher capped at exactly the viewer's estimate
   would keep the estimate, and itself, where they started.

Without an estimate (the viewer has not reported yet) nothing is capped by bandwidth: the
spatial cap is the receiver's ``max_spatial`` and no hint is sent.

Temporal layers are not allocated here (see docs/sdk-protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import TrackKind

#: A layer is chosen only if its bitrate times this fits (as the forwarder's own check).
HEADROOM = 1.15
#: Publisher hint = allocation x this (see the module docstring).
PROBE_HEADROOM = 1.5
#: A publisher is never asked for less than this for video by one viewer's hint.
MIN_VIDEO_HINT_BPS = 200_000
#: Kept for each audio receiver before video is shared.
AUDIO_RESERVE_BPS = 40_000


@dataclass(frozen=True, slots=True)
class ReceiverDemand:
    """One receiver of a viewer as the allocator sees it."""

    name: str
    kind: TrackKind
    priority: int = 1
    #: Bits per second of each spatial layer of the source as received (0 = not received).
    layer_rates: Sequence[float] = ()
    min_spatial: int | None = None
    max_spatial: int | None = None
    #: Measured bits per second (audio).
    rate_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class Allocation:
    name: str
    #: This receiver's share of the estimate (None: no estimate yet).
    bitrate_bps: int | None
    #: The highest spatial layer it may get (None: no cap).
    max_spatial: int | None
    #: What to ask of the source's publisher on this viewer's behalf (None: nothing).
    hint_bps: int | None


def _cap_index(d: ReceiverDemand) -> int:
    """The highest layer index the config allows among the measured ones."""
    top = len(d.layer_rates) - 1
    return top if d.max_spatial is None else min(d.max_spatial, top)


def _need(d: ReceiverDemand) -> float | None:
    """What this viewer receives at its highest allowed layer, or None when unknown (unbounded): known only
    when the receiver has a ``max_spatial`` and that layer is being received."""
    if d.max_spatial is None or d.max_spatial >= len(d.layer_rates):
        return None
    rate = d.layer_rates[d.max_spatial]
    return rate * HEADROOM if rate > 0 else None


def _layer_for(d: ReceiverDemand, budget: float) -> int | None:
    lo, hi = d.min_spatial or 0, _cap_index(d)
    present = [i for i in range(lo, hi + 1) if d.layer_rates[i] > 0]
    if not present:
        return d.max_spatial  # nothing measured yet: only the configured cap
    fits = [i for i in present if d.layer_rates[i] * HEADROOM <= budget]
    if not fits:
        return lo
    best = max(fits)
    # The best measured layer fits: layers above it that are not received yet stay allowed (up to the config).
    return d.max_spatial if best == max(present) else best


def _hint(d: ReceiverDemand, share: float) -> int:
    """What the publisher is asked to send for this viewer: every layer up to the one it can take."""
    base = share
    need = _need(d)
    if need is not None and d.max_spatial is not None and share >= need * 0.999:
        base = sum(d.layer_rates[: d.max_spatial + 1]) * HEADROOM
    return max(MIN_VIDEO_HINT_BPS, int(base * PROBE_HEADROOM))


def split(budget: float, weights: Sequence[float], needs: Sequence[float | None]) -> list[float]:
    """Water-filling: ``budget`` shared by ``weights``; an entry never gets more than its need."""
    out = [0.0] * len(weights)
    active = list(range(len(weights)))
    while active and budget > 0:
        total = sum(weights[i] for i in active)
        capped = [i for i in active if (n := needs[i]) is not None and n - out[i] <= budget * weights[i] / total]
        if not capped:
            for i in active:
                out[i] += budget * weights[i] / total
            break
        for i in capped:
            n = needs[i]
            assert n is not None
            budget -= n - out[i]
            out[i] = n
            active.remove(i)
    return out


def allocate(estimate_bps: float | None, receivers: Sequence[ReceiverDemand]) -> dict[str, Allocation]:
    """Split one viewer's estimate across its receivers (see the module docstring)."""
    result: dict[str, Allocation] = {}
    video = [d for d in receivers if d.kind is TrackKind.VIDEO]
    audio = [d for d in receivers if d.kind is not TrackKind.VIDEO]
    if estimate_bps is None:
        for d in receivers:
            result[d.name] = Allocation(d.name, None, d.max_spatial if d.kind is TrackKind.VIDEO else None, None)
        return result
    budget = float(estimate_bps)
    for d in audio:
        take = min(budget, max(d.rate_bps, AUDIO_RESERVE_BPS))
        budget -= take
        result[d.name] = Allocation(d.name, int(take), None, None)
    shares = split(max(budget, 0.0), [max(d.priority, 1) for d in video], [_need(d) for d in video])
    for d, share in zip(video, shares, strict=True):
        result[d.name] = Allocation(d.name, int(share), _layer_for(d, share), _hint(d, share))
    return result
