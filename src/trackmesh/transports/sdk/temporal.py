"""The temporal layer cap of one SDK video receiver: its config's min/max temporal and its share
of the viewer's bandwidth estimate.

The receiver config (``Receiver.Config``) bounds both layer kinds; the spatial cap comes from
:func:`trackmesh.core.bitrate.allocate` (never below ``min_spatial``). Temporal layers are the
finer step below that: while the share carries the forwarded spatial layer with every temporal
layer up to ``max_temporal`` (its measured rate times :data:`HEADROOM`), the cap is
``max_temporal`` as configured. When it does not (in practice: the viewer is already at its
lowest allowed spatial layer), the cap is the highest temporal layer in
``[min_temporal, max_temporal]`` that fits, so frame rate is given up before the stream stalls.

``min_temporal`` is a floor, like ``min_spatial``: when the share cannot carry even the
temporal layers up to ``min_temporal``, those are forwarded anyway (the forwarder never goes
below the floor); the viewer's link is then congested and its estimate, the publisher hint
and, for a viewer whose estimate is our own, probing (below) are what change things.

A viewer whose estimate comes from our transport-cc feedback is capped near what it is sent,
so with fewer temporal layers forwarded its estimate would never grow back to carry them: while
the cap is below what is configured, the caller asks the estimator to probe for the next
temporal layer's rate (:func:`probe_target`), as the forwarder does for spatial layers.

Rates: those of the spatial layer being forwarded, by temporal layer, cumulative
(:attr:`~trackmesh.transports.webrtc.media_out.OutboundTrack.temporal_rates`); during a
spatial switch they are the old layer's until the next measurement window.
"""

from __future__ import annotations

from collections.abc import Sequence

from trackmesh.core.bitrate import HEADROOM

__all__ = ["probe_target", "temporal_cap"]

_SLACK = 1.001


def temporal_cap(min_t: int | None, max_t: int | None, share_bps: float | None, rates: Sequence[float]) -> int | None:
    """The temporal cap (None: none) for configured ``min_t``/``max_t``, the receiver's share
    of the estimate (None: no estimate yet) and the cumulative ``rates`` by temporal layer
    (empty: the stream has no temporal layers, or nothing measured yet)."""
    if share_bps is None or not rates:
        return max_t
    # A receiver whose need is met gets exactly it (layer rate x HEADROOM), as an int.
    budget = share_bps * _SLACK
    top = len(rates) - 1
    hi = top if max_t is None else min(max_t, top)
    if rates[hi] * HEADROOM <= budget:
        return max_t
    lo = min(min_t or 0, hi)
    fits = [t for t in range(lo, hi + 1) if rates[t] * HEADROOM <= budget]
    return max(fits) if fits else lo


def probe_target(cap: int | None, max_t: int | None, rates: Sequence[float]) -> float | None:
    """The bitrate to probe for when ``cap`` is below what is configured: the next temporal
    layer's cumulative rate with headroom; None when there is nothing above the cap."""
    if cap is None or not rates:
        return None
    top = len(rates) - 1 if max_t is None else min(max_t, len(rates) - 1)
    if cap >= top:
        return None
    return rates[cap + 1] * HEADROOM
