"""One listener's mixer: its output slots, filled from the stage's ranking with hysteresis, and
(MANUAL) the sources it chose. See docs/mixer.md, "Levels, hysteresis and voice activity"."""

from __future__ import annotations

from collections import deque

from ..controls import MixerMode
from ..events import EndpointEvent, LocalTrackStateChanged, MixerSlotSet, MixerSlotUnset, VoiceActivity
from ..model import LocalTrackState, TrackSource
from ..tracks import LocalTrack
from . import HOLD, SILENCE_TIMEOUT, SWITCH_MARGIN
from .imports import Imports
from .source import Source

__all__ = ["AudioMixer"]


class AudioMixer:
    """One listener's mixer: its output slots and (MANUAL) its chosen sources."""

    __slots__ = ("_events", "_since", "manual", "mode", "outputs", "peer", "picks", "slots")

    def __init__(
        self,
        peer: str,
        mode: MixerMode,
        outputs: list[LocalTrack],
        sources: list[TrackSource],
        events: deque[EndpointEvent],
    ) -> None:
        self.peer = peer
        self.mode = mode
        self.outputs = outputs
        self.slots: list[Source | None] = [None] * len(outputs)
        self._since: list[float] = [0.0] * len(outputs)  # when each slot got its source
        self.manual: set[TrackSource] = set(sources) if mode is MixerMode.MANUAL else set()
        self._events = events
        # Bounded mode, MANUAL: the remote sources of ``manual`` imported for this listener.
        self.picks = Imports()

    def is_output(self, local_track: str) -> bool:
        return any(out.name == local_track for out in self.outputs)

    def _allowed(self, src: Source) -> bool:
        return src.source.peer != self.peer and (self.mode is MixerMode.AUTO or src.source in self.manual)

    # ---- slots ---------------------------------------------------------------------------

    def _set(self, now: float, slot: int, src: Source) -> None:
        out = self.outputs[slot]
        self._since[slot] = now
        old = self.slots[slot]
        if old is not None:
            old.outputs.remove(out)
        self.slots[slot] = src
        src.outputs.append(out)
        out.source = src.source
        out.channel = src.channel
        out.state = LocalTrackState.ACTIVE
        self._events.append(MixerSlotSet(slot, src.source))
        self._events.append(LocalTrackStateChanged(out.name, LocalTrackState.ACTIVE, src.source))

    def _unset(self, slot: int, announce: bool = True) -> None:
        out = self.outputs[slot]
        old = self.slots[slot]
        if old is None:
            return
        old.outputs.remove(out)
        self.slots[slot] = None
        out.source = None
        out.channel = None
        out.state = LocalTrackState.INACTIVE
        if announce:
            self._events.append(MixerSlotUnset(slot))
        self._events.append(LocalTrackStateChanged(out.name, LocalTrackState.INACTIVE, None))

    def release(self, src: Source) -> None:
        """``src`` stops publishing or is dropped: free its slots."""
        for slot, cur in enumerate(self.slots):
            if cur is src:
                self._unset(slot)

    def update(self, now: float, ranked: list[Source]) -> None:
        """One tick: keep, free and fill slots from the stage's ranking (loudest first)."""
        slots = self.slots
        for slot, cur in enumerate(slots):
            if cur is not None and (not cur.live or now - cur.last_heard > SILENCE_TIMEOUT or not self._allowed(cur)):
                self._unset(slot)
        wanted: list[Source] = []
        for src in ranked:
            if self._allowed(src):
                wanted.append(src)
                if len(wanted) == len(slots):
                    break
        for src in wanted:
            if src in slots:
                continue
            victim = -1
            for slot, cur in enumerate(slots):
                if cur is None:
                    victim = slot
                    break
                if cur in wanted:
                    continue
                held = now - cur.last_spoke < HOLD or now - self._since[slot] < HOLD
                if held and src.loud < cur.loud + SWITCH_MARGIN:
                    continue
                best = slots[victim] if victim >= 0 else None
                if best is None or (cur.loud, cur.last_spoke) < (best.loud, best.last_spoke):
                    victim = slot
            if victim >= 0:
                self._set(now, victim, src)

    def emit_voice(self) -> None:
        for slot, cur in enumerate(self.slots):
            if cur is not None and cur.voice_due:
                self._events.append(VoiceActivity(self.outputs[slot].name, cur.source, cur.audio_level))

    def close(self) -> None:
        """The listener leaves: its outputs go INACTIVE (no slot events: the client is gone or
        reconfigures on its next join)."""
        for slot in range(len(self.slots)):
            self._unset(slot, announce=False)
