"""Track-level facts for the event log (connector): a published track stopped or resumed sending
(muted / unmuted) and the simulcast/SVC layer a subscriber receives changed (atm0s #341).

Sans-IO: the runtime samples its tracks about once a second (``SAMPLE_EVERY``) - a packet counter
per published track, the forwarded (spatial, temporal) layer per subscribed video track - and
this decides what is worth an event. Nothing here runs per packet.

- **Muted**: a track that has sent media and then sends no packet for ``mute_after`` seconds is
  muted (the publisher stopped the sender, replaced its track with none, or lost its network);
  its next packet unmutes it. WebRTC carries no mute signal of its own (WHIP has none, and a
  browser's ``track.enabled = false`` still sends silence or black frames, which is not muted
  here).
- **Layer**: reported when the forwarded layer differs from the last one reported and has held
  for ``layer_settle`` seconds; the first layer a subscriber settles on is the baseline, not an
  event.
- **Rate limit**: at most one report per track every ``min_interval`` seconds; a state that flaps
  faster is reported as where it settled, once, not as every flap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from .ids import SessionId

SAMPLE_EVERY = 1.0
MUTE_AFTER = 3.0
LAYER_SETTLE = 2.0
MIN_INTERVAL = 5.0

V = TypeVar("V")


@dataclass(slots=True)
class _Reported(Generic[V]):
    """One watched value: what it is now (since when) and what was last reported (when)."""

    current: V
    since: float
    reported: V
    reported_at: float

    def observe(self, now: float, value: V) -> None:
        if value != self.current:
            self.current = value
            self.since = now

    def due(self, now: float, settle: float, min_interval: float) -> bool:
        if self.current == self.reported or now - self.since < settle or now - self.reported_at < min_interval:
            return False
        self.reported = self.current
        self.reported_at = now
        return True


@dataclass(slots=True)
class _Flow:
    packets: int
    moved_at: float
    state: _Reported[bool]  # muted


class TrackWatch:
    __slots__ = ("_flows", "_layers", "layer_settle", "min_interval", "mute_after")

    def __init__(
        self, mute_after: float = MUTE_AFTER, layer_settle: float = LAYER_SETTLE, min_interval: float = MIN_INTERVAL
    ) -> None:
        self.mute_after = mute_after
        self.layer_settle = layer_settle
        self.min_interval = min_interval
        self._flows: dict[SessionId, dict[str, _Flow]] = {}
        self._layers: dict[SessionId, dict[str, _Reported[tuple[int, int]]]] = {}

    def published(self, now: float, session: SessionId, track: str, packets: int) -> bool | None:
        """A published track's packet count at ``now``: True (muted) or False (unmuted) when that
        is to be reported, else None."""
        flows = self._flows.setdefault(session, {})
        flow = flows.get(track)
        if flow is None:
            # Not muted until it has sent something: a track waiting for ICE is not muted.
            flows[track] = _Flow(packets, now, _Reported(False, now, False, -self.min_interval))
            return None
        if packets != flow.packets:
            flow.packets = packets
            flow.moved_at = now
        muted = packets > 0 and now - flow.moved_at >= self.mute_after
        flow.state.observe(now, muted)
        return flow.state.current if flow.state.due(now, 0.0, self.min_interval) else None

    def forwarded(self, now: float, session: SessionId, track: str, layer: tuple[int, int]) -> tuple[int, int] | None:
        """The layer a subscribed track forwards at ``now``: the new layer when a change is to be
        reported, else None."""
        layers = self._layers.setdefault(session, {})
        watched = layers.get(track)
        if watched is None:
            layers[track] = _Reported(layer, now, layer, -self.min_interval)
            return None
        watched.observe(now, layer)
        return watched.current if watched.due(now, self.layer_settle, self.min_interval) else None

    def keep(self, session: SessionId, published: set[str], forwarded: set[str]) -> None:
        """Forget the tracks of ``session`` that are gone (unpublished, unsubscribed)."""
        flows = self._flows.get(session)
        if flows is not None:
            for track in [t for t in flows if t not in published]:
                del flows[track]
        layers = self._layers.get(session)
        if layers is not None:
            for track in [t for t in layers if t not in forwarded]:
                del layers[track]

    def forget(self, session: SessionId) -> None:
        self._flows.pop(session, None)
        self._layers.pop(session, None)

    def __len__(self) -> int:
        """Tracks watched (memory stays bounded by the live tracks)."""
        return sum(map(len, self._flows.values())) + sum(map(len, self._layers.values()))
