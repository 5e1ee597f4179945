"""One audio source of a mixer stage: its channel, subscribed once per stage, its level
accounting and the listeners' slots currently carrying it."""

from __future__ import annotations

import math
from typing import Protocol

from ..model import MediaPacket, TrackSource
from ..tracks import LocalTrack

__all__ = ["Source", "SourceOwner"]


class SourceOwner(Protocol):
    """Who is told when a source's channel goes live or silent (the stage)."""

    def on_source_live(self, now: float, src: Source, live: bool) -> None: ...


class Source:
    """One source channel, subscribed once per stage, shared by all its listeners."""

    __slots__ = (
        "_owner",
        "channel",
        "count",
        "heard",
        "last_heard",
        "last_spoke",
        "last_voice",
        "live",
        "loud",
        "outputs",
        "packets",
        "source",
        "total",
        "voice_due",
    )

    def __init__(self, owner: SourceOwner, source: TrackSource, channel: int) -> None:
        self._owner = owner
        self.source = source
        self.channel = channel
        self.live = False
        self.outputs: list[LocalTrack] = []  # the slots carrying this source, of any listener
        self.packets = 0
        self.total = 0  # sum of loudness (127 - level) in the current tick
        self.count = 0  # packets with a level in the current tick
        self.heard = False
        self.loud = 0.0  # smoothed loudness, 0 (silent) .. 127 (0 dBov)
        self.last_heard = -math.inf
        self.last_spoke = -math.inf
        self.last_voice = -math.inf
        self.voice_due = False

    @property
    def audio_level(self) -> int:
        """The smoothed level in dBov (-127..0)."""
        return round(self.loud) - 127

    def reset_level(self) -> None:
        self.total = self.count = 0
        self.heard = False
        self.loud = 0.0
        self.last_heard = self.last_spoke = -math.inf

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        """Hot path: account the level, forward to the slots carrying this source."""
        self.packets += 1
        self.heard = True
        level = pkt.audio_level
        if level is not None and 0 <= level <= 127:
            self.total += 127 - level
            self.count += 1
        for out in self.outputs:
            out.on_channel_packet(channel, pkt)

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        self._owner.on_source_live(now, self, live)
