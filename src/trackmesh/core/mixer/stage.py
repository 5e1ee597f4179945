"""MixerStage: the mixer sources of one room on one worker, shared by its listeners.

It watches the room's registry entries for audio tracks (AUTO: every one; MANUAL: the union of
what its listeners attached), subscribes each source channel once, ranks the sources once per
tick and hands each listener its own top N. In bounded mode (a cluster node, ``node`` set) it
also reports this worker's levels and imports remote audio only for the bounded selections
(docs/mixer.md).
"""

from __future__ import annotations

import math

from ..channel import ChannelHub, MessageHub, MessageSender
from ..controls import MixerMode
from ..ids import SessionId, channel_id, session_node, session_worker
from ..model import TrackKind, TrackSource
from ..registry import BadEntry, Registry, decode_track, parse_key, room_prefix
from . import LEVEL_TAU, MIN_LOUDNESS, SILENCE_TIMEOUT, SPEAKING_DBOV, TICK, VOICE_DBOV, VOICE_INTERVAL
from .imports import Imports
from .levels import LEVELS, RemoteLevels, encode_levels, levels_channel
from .listener import AudioMixer
from .source import Source

__all__ = ["MixerStage"]

_SPEAKING_LOUD = 127 + SPEAKING_DBOV
_VOICE_LOUD = 127 + VOICE_DBOV


class MixerStage:
    """The mixer sources of one room on one worker, shared by its listeners."""

    __slots__ = (
        "_bad_levels",
        "_hub",
        "_last_tick",
        "_levels",
        "_levels_out",
        "_live",
        "_manual_refs",
        "_messages",
        "_next_tick",
        "_registry",
        "_reported",
        "_room_audio",
        "auto_imports",
        "auto_listeners",
        "bad_entries",
        "listeners",
        "node",
        "prefix",
        "room",
        "sources",
        "worker",
    )

    def __init__(
        self, room: str, registry: Registry, hub: ChannelHub, node: int | None = None, worker: int = 0
    ) -> None:
        """``node`` set: bounded mode (a cluster node; the stage is owned by its RoomView). Bounded mode
        needs the hub's message path (:class:`~trackmesh.core.channel.MessageHub`) for the levels."""
        self.room = room
        self.prefix = room_prefix(room)
        self.sources: dict[TrackSource, Source] = {}
        self.listeners: list[AudioMixer] = []
        self.auto_listeners = 0
        self.bad_entries = 0
        self._registry = registry
        self._hub = hub
        self._room_audio: dict[TrackSource, set[SessionId]] = {}
        self._manual_refs: dict[TrackSource, int] = {}
        self._live = 0
        self._next_tick: float | None = None
        self._last_tick = -math.inf
        # Bounded mode.
        self.node = node
        self.worker = worker
        self._messages: MessageHub | None = hub if isinstance(hub, MessageHub) else None
        if node is not None and self._messages is None:
            raise ValueError("bounded mixer mode needs a channel hub with the message path (MessageHub)")
        self._bad_levels = 0  # malformed summaries of remote levels channels no longer subscribed
        self.auto_imports = Imports()  # remote sources imported for the AUTO listeners
        self._levels: dict[tuple[int, int], RemoteLevels] = {}  # remote (node, worker) -> its summary
        self._levels_out: MessageSender | None = None
        self._reported: dict[TrackSource, int] = {}  # remote levels, from the latest tick

    # ---- bounded mode: lifetime of the view ----------------------------------------------

    def open(self, now: float) -> None:
        """Bounded mode: watch the room; report this worker's audio levels while it has any."""
        self._registry.watch(now, self.prefix, self)

    def close(self, now: float) -> None:
        """The view is gone (the room emptied on this worker): no watch, channel or summary left."""
        self._registry.unwatch(self.prefix, self)
        for src in list(self.sources.values()):
            self._drop(now, src)
        self.auto_imports.since.clear()
        for listener in self.listeners:
            listener.picks.since.clear()
        self._room_audio.clear()
        self._refresh_levels(now)

    @property
    def bad_levels(self) -> int:
        """Malformed levels summaries received (dropped)."""
        return self._bad_levels + sum(lv.bad for lv in self._levels.values())

    @property
    def imported(self) -> int:
        """Remote audio sources this stage subscribes (bounded mode; the per-room metric)."""
        return sum(1 for source in self.sources if self._where(source) == 2)

    def _is_imported(self, source: TrackSource) -> bool:
        if self.auto_listeners > 0 and source in self.auto_imports.since:
            return True
        return any(source in lis.picks.since for lis in self.listeners if lis.mode is MixerMode.MANUAL)

    def _where(self, source: TrackSource) -> int:
        """0: published by this worker, 1: by another worker of this node, 2: on another node."""
        where = 2
        for session in self._room_audio.get(source, ()):
            if session_node(session) == self.node:
                if session_worker(session) == self.worker:
                    return 0
                where = 1
        return where

    def _refresh_levels(self, now: float) -> None:
        """Publish this worker's levels channel while it has audio in the room; subscribe the
        levels channel of each remote worker that has audio some listener here may hear."""
        local = False
        wanted: set[tuple[int, int]] = set()
        for source, sessions in self._room_audio.items():
            heard = self.auto_listeners > 0 or source in self._manual_refs
            for session in sessions:
                if session_node(session) != self.node:
                    if heard:
                        wanted.add((session_node(session), session_worker(session)))
                elif session_worker(session) == self.worker:
                    local = True
        messages = self._messages
        assert messages is not None and self.node is not None  # bounded mode
        if local and self._levels_out is None:
            channel = levels_channel(self.room, self.node, self.worker)
            self._levels_out = messages.open_messages(now, channel, LEVELS)
        elif not local and self._levels_out is not None:
            # An empty summary: the listening stages forget this worker's levels at once.
            self._levels_out.send(now, self._sender, b"")
            self._levels_out.close(now)
            self._levels_out = None
        for key in [k for k in self._levels if k not in wanted]:
            lv = self._levels.pop(key)
            self._bad_levels += lv.bad
            messages.unsubscribe_messages(now, lv.channel, lv)
        for key in wanted - self._levels.keys():
            lv = self._levels[key] = RemoteLevels(levels_channel(self.room, key[0], key[1]))
            messages.subscribe_messages(now, lv.channel, lv)
        if self._levels and self._next_tick is None:
            self._last_tick = now
            self._next_tick = now + TICK

    def _choose_imports(self, now: float) -> None:
        """Keep the imported remote sources to the top N by reported level, with hysteresis: for
        the AUTO listeners together (N: their largest slot count, +1 while one of their own peers
        is among the remote sources, which that listener skips), and for each MANUAL listener
        among the sources it attached, its own peer left out (N: its slot count). The stage
        imports the union."""
        reported: dict[TrackSource, int] = {}
        for lv in self._levels.values():
            if now - lv.received <= SILENCE_TIMEOUT:
                for source, loud in lv.levels.items():
                    if loud >= MIN_LOUDNESS and source in self._room_audio and self._where(source) == 2:
                        reported[source] = max(loud, reported.get(source, 0))
        self._reported = reported
        auto = [lis for lis in self.listeners if lis.mode is MixerMode.AUTO]
        limit = 0
        if auto:
            peers = {lis.peer for lis in auto}
            limit = max(len(lis.outputs) for lis in auto) + (1 if any(s.peer in peers for s in reported) else 0)
        changed = self.auto_imports.choose(now, reported, limit, self.sources)
        for lis in self.listeners:
            if lis.mode is MixerMode.MANUAL:
                mine = {s: v for s, v in reported.items() if s in lis.manual and s.peer != lis.peer}
                changed += lis.picks.choose(now, mine, len(lis.outputs), self.sources)
        for source in dict.fromkeys(changed):
            self._refresh(now, source)

    @property
    def _sender(self) -> str:
        """This worker, as the sender of its levels summaries."""
        return f"{self.node}.{self.worker}"

    def _send_levels(self, now: float) -> None:
        handle = self._levels_out
        if handle is None:
            return
        mine = [
            (src.source, round(src.loud))
            for src in self.sources.values()
            if src.live and now - src.last_heard <= SILENCE_TIMEOUT and self._where(src.source) == 0
        ]
        handle.send(now, self._sender, encode_levels(mine))

    # ---- listeners -----------------------------------------------------------------------

    def add(self, now: float, listener: AudioMixer) -> None:
        if not self.listeners and self.node is None:
            self._registry.watch(now, self.prefix, self)
        self.listeners.append(listener)
        if listener.mode is MixerMode.AUTO:
            self.auto_listeners += 1
            if self.auto_listeners == 1:
                for source in list(self._room_audio):
                    self._refresh(now, source)
                if self.node is not None:
                    self._refresh_levels(now)
        for source in listener.manual:
            self.add_manual(now, source)

    def remove(self, now: float, listener: AudioMixer) -> None:
        """Drop a listener; the last one tears the stage down (no subscription, no watch)."""
        listener.close()
        self.listeners.remove(listener)
        listener.picks.since.clear()
        for source in listener.manual:
            self.remove_manual(now, source)
        if listener.mode is MixerMode.AUTO:
            self.auto_listeners -= 1
            if self.auto_listeners == 0:
                self.auto_imports.since.clear()
                for source in list(self.sources):
                    self._refresh(now, source)
                if self.node is not None:
                    self._refresh_levels(now)
        if not self.listeners and self.node is None:
            self._registry.unwatch(self.prefix, self)
            for src in list(self.sources.values()):
                self._drop(now, src)
            self._room_audio.clear()

    def add_manual(self, now: float, source: TrackSource) -> None:
        self._manual_refs[source] = self._manual_refs.get(source, 0) + 1
        self._refresh(now, source)
        if self.node is not None:
            self._refresh_levels(now)

    def remove_manual(self, now: float, source: TrackSource) -> None:
        refs = self._manual_refs.get(source, 0) - 1
        if refs > 0:
            self._manual_refs[source] = refs
        else:
            self._manual_refs.pop(source, None)
        src = self.sources.get(source)
        for listener in self.listeners:
            if listener.mode is MixerMode.MANUAL and source not in listener.manual:
                listener.picks.since.pop(source, None)
                if src is not None:
                    listener.release(src)
        self._refresh(now, source)
        if self.node is not None:
            self._refresh_levels(now)

    # ---- sources -------------------------------------------------------------------------

    def _refresh(self, now: float, source: TrackSource) -> None:
        if self.node is None:
            wanted = (self.auto_listeners > 0 and source in self._room_audio) or source in self._manual_refs
        elif source not in self._room_audio:
            wanted = False
        else:
            where = self._where(source)
            if where == 0:
                wanted = True  # measured and reported even without a local listener
            elif where == 1:  # another worker of this node: no inter-node traffic
                wanted = self.auto_listeners > 0 or source in self._manual_refs
            else:  # another node: only the bounded selections
                wanted = self._is_imported(source)
        src = self.sources.get(source)
        if wanted and src is None:
            src = Source(self, source, channel_id(self.room, source.peer, source.track))
            self.sources[source] = src
            self._hub.subscribe(now, src.channel, src)
        elif not wanted and src is not None:
            self._drop(now, src)

    def _drop(self, now: float, src: Source) -> None:
        if src.live:
            self.on_source_live(now, src, False)
        del self.sources[src.source]
        self._hub.unsubscribe(now, src.channel, src)

    def on_source_live(self, now: float, src: Source, live: bool) -> None:
        if live == src.live:
            return
        src.live = live
        src.reset_level()
        if live and src.source in self._reported:
            src.loud = float(self._reported[src.source])  # ranks at once when its packets arrive
        if live:
            self._live += 1
            if self._live == 1:
                self._last_tick = now
                self._next_tick = now + TICK
        else:
            self._live -= 1
            for listener in self.listeners:
                listener.release(src)

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        try:
            parsed = parse_key(key)
            if parsed.track is None:
                return
            info = decode_track(parsed, value)
        except BadEntry:
            self.bad_entries += 1
            return
        if info.kind is TrackKind.AUDIO:
            source = TrackSource(parsed.peer, parsed.track)
            self._room_audio.setdefault(source, set()).add(parsed.session)
            self._refresh(now, source)
            if self.node is not None:
                self._refresh_levels(now)

    def on_registry_delete(self, now: float, key: str) -> None:
        try:
            parsed = parse_key(key)
        except BadEntry:
            self.bad_entries += 1
            return
        if parsed.track is None:
            return
        source = TrackSource(parsed.peer, parsed.track)
        sessions = self._room_audio.get(source)
        if sessions is None or parsed.session not in sessions:
            return
        sessions.discard(parsed.session)
        if not sessions:
            del self._room_audio[source]
            self.auto_imports.since.pop(source, None)
            for listener in self.listeners:
                listener.picks.since.pop(source, None)
            self._refresh(now, source)
        if self.node is not None:
            self._refresh_levels(now)

    # ---- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._next_tick if self._live > 0 or self._levels else None

    def handle_timeout(self, now: float) -> None:
        """Called by every listener's endpoint; runs once per tick."""
        if (self._live == 0 and not self._levels) or self._next_tick is None or now < self._next_tick:
            return
        dt = now - self._last_tick
        self._last_tick = now
        self._next_tick = now + TICK
        alpha = 1.0 - math.exp(-dt / LEVEL_TAU) if dt < 60 * LEVEL_TAU else 1.0
        ranked: list[Source] = []
        for src in self.sources.values():
            if not src.live:
                continue
            window = src.total / src.count if src.count else 0.0
            src.total = src.count = 0
            if src.heard:
                src.heard = False
                src.last_heard = now
            src.loud += alpha * (window - src.loud)
            if src.loud >= _SPEAKING_LOUD:
                src.last_spoke = now
            if now - src.last_heard <= SILENCE_TIMEOUT and src.loud >= MIN_LOUDNESS:
                ranked.append(src)
        ranked.sort(key=lambda s: s.loud, reverse=True)
        for listener in self.listeners:
            listener.update(now, ranked)
        if self.node is not None:
            self._send_levels(now)
            self._choose_imports(now)
        voice = False
        for src in self.sources.values():
            due = bool(src.outputs) and src.loud >= _VOICE_LOUD and now >= src.last_voice + VOICE_INTERVAL
            src.voice_due = due
            if due:
                src.last_voice = now
                voice = True
        if voice:
            for listener in self.listeners:
                listener.emit_voice()
