"""Audio mixer without decoding ("virtual mix-minus"): the N loudest voices of a room, forwarded.

A listener (an endpoint that sent :class:`~.controls.MixerConfig`) has N output slots, audio
LocalTracks the transport created (the SDK's ``audio_0``..``audio_2``). The mixer never
decodes: it forwards the packets of the N loudest sources, judged by the RFC 6464 audio-level
header extension (``MediaPacket.audio_level``), each slot's packets going out through that
slot's LocalTrack sink. When a slot changes source the LocalTrack's ``channel`` and ``source``
change and a ``LocalTrackStateChanged(ACTIVE, source)`` is emitted, so the transport's
per-viewer rewriter turns the slot into one continuous stream across source switches.

Structure: one stage per room per worker
----------------------------------------
:class:`MixerStage` exists once per (worker, room) while any endpoint of that worker in that
room has a mixer. It subscribes each source channel **once** (AUTO: every audio track of the
room, learnt from its own registry watch; MANUAL: the union of the sources its listeners
attached), measures every source's level, ranks them once per tick (100 ms) and then gives each
:class:`AudioMixer` (one per listener) its own top N, excluding the listener's own peer
(mix-minus). Per packet the stage does a counter update and calls the LocalTracks the source is
currently assigned to: no ranking, no allocation, no event.

Levels, hysteresis and voice activity
-------------------------------------
- Level: per tick, the mean loudness (``127 - audio_level``) of the packets received, smoothed
  with an exponential time constant of 300 ms. A tick without packets counts as silence.
- Eligible for a free slot: the source publishes, was heard within the last second, and is not
  digital silence. A slot is freed (``MixerSlotUnset``) when its source stops publishing, is
  detached (MANUAL), or sends nothing for 1 s (muted, DTX gap, gone).
- A source that is among the listener's top N but has no slot takes the slot of the quietest
  incumbent that is not in the top N. An incumbent that *spoke* (smoothed level at least
  -60 dBov) within the last 500 ms, or got its slot less than 500 ms ago, keeps it unless the
  newcomer is louder by 30 levels (atm0s' switching threshold): two voices of similar loudness
  alternating above and below the N-th place do not flap.
- Voice activity: when a slotted source's smoothed level is at least -40 dBov, a
  :class:`~.events.VoiceActivity` for each slot carrying it, at most every 500 ms per source.

Bounding inter-node traffic (bounded mode, a cluster node)
-----------------------------------------------------------
With ``MediaWorker(..., mixer_bound=True)`` (the cluster runtime sets it for every cluster
worker; standalone keeps the in-process hub and the unbounded stage) a stage imports remote
audio only as follows, however many people speak on other nodes:

1. Each worker's RoomView owns its room's stage for as long as the view exists (the room has an
   endpoint on that worker). The stage subscribes and measures the audio tracks published by
   *its own worker* (even with no listener) and, while there is any, publishes every tick their
   smoothed levels, a few bytes per source, on its levels channel (:func:`levels_channel`, one
   per room, node and worker, ``channel_kind = "levels"`` so the cluster hub counts it apart from
   media). The channel stops when the worker's last audio track in the room does, and with the
   view. The distributed hub carries it to another node only while a stage there subscribes it.
2. A stage subscribes the levels channel of every remote (node, worker) with audio some listener
   here may hear (any, with an AUTO listener; the sources MANUAL listeners attached otherwise),
   subscribes the audio of its own node as its listeners ask (no inter-node traffic), and
   imports remote audio only for
   - AUTO: the top N remote sources by reported level, N the largest slot count of the stage's
     AUTO listeners; N+1 only while some AUTO listener's own peer publishes audio on another node
     (a listener never hears itself, mix-minus, so its top N may reach one place further down);
   - MANUAL: per listener, the top N by reported level of the remote sources *it attached* (its
     own peer left out), N its slot count.
   The stage imports the union: at most ``N_auto (+1) + sum over MANUAL listeners of
   min(N_l, attached remote sources)``. MANUAL listeners that attach disjoint sources add up;
   ones attaching the same sources share their imports.
3. Hysteresis (per selection): an import is kept at least 500 ms; it is replaced only by a
   newcomer of the top N (N+1) louder by 6 levels, or by 30 levels (the slots' own margin) when a
   listener's slot carries it. A fresh import starts with the reported level, and takes a slot
   once its packets arrive (a source is eligible only once heard).

Per worker is per node: a cluster media node routes every session of a room to one worker
(runtime/cluster_node.py ``RoomAffinity``), so the stage above is the node's only one for the
room. Every node of a cluster must run bounded mode: a node that reports no levels has its audio
never imported.
"""

from __future__ import annotations

import math
import struct
from collections import deque

from ..channel import ChannelHub, Feedback, PublishHandle
from ..controls import MixerMode
from ..events import (
    EndpointEvent,
    LocalTrackStateChanged,
    MixerSlotSet,
    MixerSlotUnset,
    VoiceActivity,
)
from ..ids import SessionId, channel_id, session_node, session_worker
from ..model import LocalTrackState, MediaCodec, MediaPacket, TrackKind, TrackSource
from ..registry import BadEntry, Registry, decode_track, parse_key, room_prefix
from ..tracks import LocalTrack

TICK = 0.1  # ranking and slot decisions, seconds
LEVEL_TAU = 0.3  # level smoothing time constant, seconds
HOLD = 0.5  # a source that spoke this recently keeps its slot
SILENCE_TIMEOUT = 1.0  # no packet for this long: the slot is freed
SWITCH_MARGIN = 30.0  # levels by which a newcomer must beat a source that holds its slot
SPEAKING_DBOV = -60  # "spoke" for the hold above
VOICE_DBOV = -40  # voice activity threshold (atm0s: -40 dBov)
VOICE_INTERVAL = 0.5  # at most one voice activity event per source this often
MIN_LOUDNESS = 1.0  # below this a source is digital silence and takes no free slot
MAX_SLOTS = 8
MAX_MANUAL_SOURCES = 256

IMPORT_MARGIN = 6.0  # levels by which a remote newcomer must beat an imported source to replace it

_SPEAKING_LOUD = 127 + SPEAKING_DBOV
_VOICE_LOUD = 127 + VOICE_DBOV
_U16 = struct.Struct("!H")


def levels_channel(room: str, node: int, worker: int) -> int:
    """The channel on which one worker of one node reports its audio sources' levels."""
    return channel_id(room, "~levels", f"{node}.{worker}")


def encode_levels(levels: list[tuple[TrackSource, int]]) -> bytes:
    out = bytearray()
    for source, loud in levels:
        for name in (source.peer, source.track):
            data = name.encode()[:65535]
            out += _U16.pack(len(data)) + data
        out.append(max(0, min(127, loud)))
    return bytes(out)


def decode_levels(data: bytes) -> dict[TrackSource, int]:
    """Raises ValueError on a malformed summary."""
    out: dict[TrackSource, int] = {}
    pos = 0
    while pos < len(data):
        names = []
        for _ in range(2):
            (n,) = _U16.unpack_from(data, pos)
            pos += 2
            if pos + n > len(data):
                raise ValueError("truncated levels summary")
            names.append(data[pos : pos + n].decode())
            pos += n
        if pos >= len(data):
            raise ValueError("truncated levels summary")
        out[TrackSource(names[0], names[1])] = data[pos]
        pos += 1
    return out


class _Levels:
    """A remote worker's levels channel: the latest summary it sent."""

    __slots__ = ("channel", "levels", "received", "stage")
    channel_kind = "levels"  # counted apart from media by the cluster hub's stats

    def __init__(self, stage: MixerStage, channel: int) -> None:
        self.stage = stage
        self.channel = channel
        self.levels: dict[TrackSource, int] = {}
        self.received = -math.inf

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        try:
            self.levels = decode_levels(bytes(pkt.payload))
        except (ValueError, struct.error, UnicodeDecodeError):
            self.stage.bad_levels += 1
            return
        self.received = self.stage._now

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        if not live:
            self.levels = {}


class _LevelsPublisher:
    __slots__ = ()
    channel_kind = "levels"

    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        pass


class _Imports:
    """A set of imported remote sources kept to the top ``limit`` by reported level, with hold
    and margins (bounded mode): the stage's for its AUTO listeners, one per MANUAL listener."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: dict[TrackSource, float] = {}  # imported source -> since when

    def choose(
        self, now: float, reported: dict[TrackSource, int], limit: int, sources: dict[TrackSource, _Source]
    ) -> list[TrackSource]:
        """``reported``: the eligible remote sources and their levels. Returns the sources that
        came in or went out."""
        imports = self.since
        changed: list[TrackSource] = []
        for source in list(imports):
            if limit == 0 or (source not in reported and now - imports[source] >= HOLD):
                del imports[source]
                changed.append(source)
        if len(imports) > limit:
            # The limit shrank (a listener with more slots left): the bound holds at once; the
            # quietest imports that no slot carries go first.
            def keep(source: TrackSource) -> tuple[bool, int]:
                src = sources.get(source)
                return (src is not None and bool(src.outputs), reported.get(source, 0))

            for source in sorted(imports, key=keep)[: len(imports) - limit]:
                del imports[source]
                changed.append(source)
        top = sorted(reported, key=lambda s: reported[s], reverse=True)[:limit]
        for source in top:
            if source in imports:
                continue
            if len(imports) < limit:
                imports[source] = now
                changed.append(source)
                continue
            # The quietest import outside the top that has had its hold; one a listener's slot
            # carries goes last and only for a newcomer louder by the slots' own margin.
            victim: TrackSource | None = None
            victim_key = (True, math.inf)
            for cur, since in imports.items():
                if cur in top or now - since < HOLD:
                    continue
                src = sources.get(cur)
                key = (src is not None and bool(src.outputs), float(reported.get(cur, 0)))
                if key < victim_key:
                    victim, victim_key = cur, key
            margin = SWITCH_MARGIN if victim_key[0] else IMPORT_MARGIN
            if victim is not None and reported[source] >= victim_key[1] + margin:
                del imports[victim]
                imports[source] = now
                changed.extend((victim, source))
        return changed


class _Source:
    """One source channel, subscribed once per stage, shared by all its listeners."""

    __slots__ = (
        "_stage",
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

    def __init__(self, stage: MixerStage, source: TrackSource, channel: int) -> None:
        self._stage = stage
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
        self._stage.on_source_live(now, self, live)


class AudioMixer:
    """One listener's mixer: its output slots and (MANUAL) its chosen sources."""

    __slots__ = ("_events", "_since", "manual", "mode", "outputs", "peer", "picks", "slots", "stage")

    def __init__(
        self,
        peer: str,
        mode: MixerMode,
        outputs: list[LocalTrack],
        sources: list[TrackSource],
        events: deque[EndpointEvent],
        stage: MixerStage,
    ) -> None:
        self.peer = peer
        self.mode = mode
        self.outputs = outputs
        self.slots: list[_Source | None] = [None] * len(outputs)
        self._since: list[float] = [0.0] * len(outputs)  # when each slot got its source
        self.manual: set[TrackSource] = set(sources) if mode is MixerMode.MANUAL else set()
        self._events = events
        self.stage = stage
        # Bounded mode, MANUAL: the remote sources of ``manual`` imported for this listener.
        self.picks = _Imports()

    def is_output(self, local_track: str) -> bool:
        return any(out.name == local_track for out in self.outputs)

    def _allowed(self, src: _Source) -> bool:
        return src.source.peer != self.peer and (self.mode is MixerMode.AUTO or src.source in self.manual)

    # ---- slots ---------------------------------------------------------------------------

    def _set(self, now: float, slot: int, src: _Source) -> None:
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

    def release(self, src: _Source) -> None:
        """``src`` stops publishing or is dropped: free its slots."""
        for slot, cur in enumerate(self.slots):
            if cur is src:
                self._unset(slot)

    def update(self, now: float, ranked: list[_Source]) -> None:
        """One tick: keep, free and fill slots from the stage's ranking (loudest first)."""
        slots = self.slots
        for slot, cur in enumerate(slots):
            if cur is not None and (not cur.live or now - cur.last_heard > SILENCE_TIMEOUT or not self._allowed(cur)):
                self._unset(slot)
        wanted: list[_Source] = []
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


class MixerStage:
    """The mixer sources of one room on one worker, shared by its listeners."""

    __slots__ = (
        "_hub",
        "_last_tick",
        "_levels",
        "_levels_out",
        "_live",
        "_manual_refs",
        "_next_tick",
        "_now",
        "_registry",
        "_reported",
        "_room_audio",
        "auto_imports",
        "auto_listeners",
        "bad_entries",
        "bad_levels",
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
        """``node`` set: bounded mode (a cluster node; the stage is owned by its RoomView)."""
        self.room = room
        self.prefix = room_prefix(room)
        self.sources: dict[TrackSource, _Source] = {}
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
        # Registry callbacks carry no time: they use the latest time the stage was given.
        self._now = -math.inf
        # Bounded mode.
        self.node = node
        self.worker = worker
        self.bad_levels = 0
        self.auto_imports = _Imports()  # remote sources imported for the AUTO listeners
        self._levels: dict[tuple[int, int], _Levels] = {}  # remote (node, worker) -> its summary
        self._levels_out: PublishHandle | None = None
        self._reported: dict[TrackSource, int] = {}  # remote levels, from the latest tick

    # ---- bounded mode: lifetime of the view ----------------------------------------------

    def open(self) -> None:
        """Bounded mode: watch the room; report this worker's audio levels while it has any."""
        self._registry.watch(self.prefix, self)

    def close(self) -> None:
        """The view is gone (the room emptied on this worker): no watch, channel or summary left."""
        self._registry.unwatch(self.prefix, self)
        for src in list(self.sources.values()):
            self._drop(src)
        self.auto_imports.since.clear()
        for listener in self.listeners:
            listener.picks.since.clear()
        self._room_audio.clear()
        self._refresh_levels()

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

    def _refresh_levels(self) -> None:
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
        if local and self._levels_out is None:
            assert self.node is not None
            channel = levels_channel(self.room, self.node, self.worker)
            self._levels_out = self._hub.start_publish(self._now, channel, _LevelsPublisher())
        elif not local and self._levels_out is not None:
            self._levels_out.stop(self._now)
            self._levels_out = None
        for key in [k for k in self._levels if k not in wanted]:
            lv = self._levels.pop(key)
            self._hub.unsubscribe(self._now, lv.channel, lv)
        for key in wanted - self._levels.keys():
            lv = self._levels[key] = _Levels(self, levels_channel(self.room, key[0], key[1]))
            self._hub.subscribe(self._now, lv.channel, lv)
        if self._levels and self._next_tick is None:
            self._last_tick = self._now
            self._next_tick = self._now + TICK

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
            self._refresh(source)

    def _send_levels(self) -> None:
        handle = self._levels_out
        if handle is None:
            return
        mine = [
            (src.source, round(src.loud))
            for src in self.sources.values()
            if src.live and self._now - src.last_heard <= SILENCE_TIMEOUT and self._where(src.source) == 0
        ]
        handle.send(MediaPacket(MediaCodec.OPUS, 0, 0, 0, False, False, encode_levels(mine)))

    def _clock(self, now: float) -> None:
        if now > self._now:
            self._now = now

    # ---- listeners -----------------------------------------------------------------------

    def add(self, now: float, listener: AudioMixer) -> None:
        self._clock(now)
        if not self.listeners and self.node is None:
            self._registry.watch(self.prefix, self)
        self.listeners.append(listener)
        if listener.mode is MixerMode.AUTO:
            self.auto_listeners += 1
            if self.auto_listeners == 1:
                for source in list(self._room_audio):
                    self._refresh(source)
                if self.node is not None:
                    self._refresh_levels()
        for source in listener.manual:
            self.add_manual(now, source)

    def remove(self, now: float, listener: AudioMixer) -> None:
        """Drop a listener; the last one tears the stage down (no subscription, no watch)."""
        self._clock(now)
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
                    self._refresh(source)
                if self.node is not None:
                    self._refresh_levels()
        if not self.listeners and self.node is None:
            self._registry.unwatch(self.prefix, self)
            for src in list(self.sources.values()):
                self._drop(src)
            self._room_audio.clear()

    def add_manual(self, now: float, source: TrackSource) -> None:
        self._clock(now)
        self._manual_refs[source] = self._manual_refs.get(source, 0) + 1
        self._refresh(source)
        if self.node is not None:
            self._refresh_levels()

    def remove_manual(self, now: float, source: TrackSource) -> None:
        self._clock(now)
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
        self._refresh(source)
        if self.node is not None:
            self._refresh_levels()

    # ---- sources -------------------------------------------------------------------------

    def _refresh(self, source: TrackSource) -> None:
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
            src = _Source(self, source, channel_id(self.room, source.peer, source.track))
            self.sources[source] = src
            self._hub.subscribe(self._now, src.channel, src)
        elif not wanted and src is not None:
            self._drop(src)

    def _drop(self, src: _Source) -> None:
        if src.live:
            self.on_source_live(self._now, src, False)
        del self.sources[src.source]
        self._hub.unsubscribe(self._now, src.channel, src)

    def on_source_live(self, now: float, src: _Source, live: bool) -> None:
        self._clock(now)
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

    def on_registry_put(self, key: str, value: bytes) -> None:
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
            self._refresh(source)
            if self.node is not None:
                self._refresh_levels()

    def on_registry_delete(self, key: str) -> None:
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
            self._refresh(source)
        if self.node is not None:
            self._refresh_levels()

    # ---- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._next_tick if self._live > 0 or self._levels else None

    def handle_timeout(self, now: float) -> None:
        """Called by every listener's endpoint; runs once per tick."""
        self._clock(now)
        if (self._live == 0 and not self._levels) or self._next_tick is None or now < self._next_tick:
            return
        dt = now - self._last_tick
        self._last_tick = now
        self._next_tick = now + TICK
        alpha = 1.0 - math.exp(-dt / LEVEL_TAU) if dt < 60 * LEVEL_TAU else 1.0
        ranked: list[_Source] = []
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
            self._send_levels()
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
