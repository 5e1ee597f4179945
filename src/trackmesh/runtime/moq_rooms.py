"""Rooms as MoQ (docs/moq.md "Watch a room over MoQ"): the tracks of the rooms hosted by the node's
in-process media worker, published on its MoQ relay.

- Each room is the namespace ``("trackmesh", "<room>")``; each of its tracks the MoQ track
  ``"<peer>/<track>"`` in LOC packaging (transports/moq/rtp_to_loc.py: one frame per object, a
  group per video key frame); ``catalog`` is its MSF catalog (transports/moq/catalog.py), a new
  group whenever a track comes, goes or its codec or size becomes known.
- Nothing runs for a room until a MoQ subscriber asks for one of its tracks: the relay asks this
  service (a :class:`~trackmesh.transports.moq.local_publisher.LocalPublisher` of the prefix
  ``("trackmesh",)``), which then watches the room's registry prefix and taps each published track
  on the worker's channel hub (the path every viewer takes, so a WebRTC, WHIP, RTMP or SIP
  publisher is watched alike). A tap nobody subscribes to only learns its codec and size for the
  catalog, then stops depacketizing. The room is let go when its last MoQ subscriber leaves.
- A subscriber's SUBSCRIBE (the first or any later one) asks the publisher for a key frame through
  the track's feedback (the PLI a WebRTC viewer sends), so it starts on a fresh group; so does a
  loss, until a key frame comes.
- Key-frame requests are sent on the next loop turn, never from inside the hub's packet delivery.

Which rooms are served is the node's ``moq_room_here``: a cluster media node serves every room of
the cluster, whichever worker or node hosts it (worker 0's registry and hub are a cluster member's, so
a room track of worker 1 comes over its cluster channel, as one of another node does). A standalone
node's workers share no channels: a room hosted by another worker is watched through ``remote``, the
registry and hub of that worker reached over its pipe (runtime/moq_workers.py); without it, such a
room answers ``DOES_NOT_EXIST`` with that reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from trackmesh.core.channel import ChannelSubscriber, Feedback, FeedbackKind
from trackmesh.core.ids import channel_id
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind
from trackmesh.core.registry import BadEntry, RegistryWatcher, decode_track, parse_key, room_prefix
from trackmesh.transports.moq.catalog import CATALOG_TRACK, CatalogTrack, codec_string, encode_catalog
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode
from trackmesh.transports.moq.local_publisher import LocalPublisher, LocalTrack
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.rtp_to_loc import RtpToLoc, clock_rate

from .worker import WorkerRuntime

__all__ = ["ROOMS_PREFIX", "MoqRooms", "RoomSource"]

log = logging.getLogger("trackmesh.moq")

ROOMS_PREFIX = (b"trackmesh",)
#: Feedback origins of the MoQ taps (unique in the cluster: above every endpoint's session ids).
_ORIGINS = itertools.count(0x4D4F5100000000)
_CODEC_NAMES = {c: c.name.lower() for c in MediaCodec}
PRIORITY_CATALOG, PRIORITY_AUDIO, PRIORITY_VIDEO = 0, 64, 128


class RoomSource(Protocol):
    """Where a room's tracks are seen: the registry and channel hub of the worker hosting it."""

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None: ...
    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None: ...
    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None: ...
    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None: ...
    def feedback(self, now: float, channel: int, fb: Feedback) -> None: ...


class _CoreSource:
    """The in-process worker's own registry and hub."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None:
        self.runtime.core.registry.watch(now, prefix, watcher)

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None:
        self.runtime.core.registry.unwatch(prefix, watcher)

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.runtime.core.hub.subscribe(now, channel, subscriber)

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.runtime.core.hub.unsubscribe(now, channel, subscriber)

    def feedback(self, now: float, channel: int, fb: Feedback) -> None:
        self.runtime.core.hub.feedback(now, channel, fb)


class _Tap:
    """One room track on the worker's hub: the RTP-to-LOC bridge and the MoQ tracks it feeds."""

    __slots__ = ("bridge", "channel", "key", "locals", "name", "origin", "room", "video")

    def __init__(self, room: _Room, key: str, name: str, channel: int, video: bool) -> None:
        self.room = room
        self.key = key
        self.name = name
        self.channel = channel
        self.video = video
        self.bridge = RtpToLoc(video)
        self.locals: list[LocalTrack] = []
        self.origin = next(_ORIGINS)

    def described(self) -> bool:
        """Whether the catalog has all it can say of this track (codec, and a video size)."""
        b = self.bridge
        if not b.codec:
            return False
        if self.video:
            return b.width > 0 or (b.group >= 0 and b.codec not in ("vp8", "vp9", "h264"))
        return b.channels > 0

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        if pkt.alternate_of is not None:
            return  # an alternate rendition (RTMP's H.264 of HEVC/AV1/VP9): the original is carried
        if pkt.replay:
            return  # copies of packets already carried (a key-frame cache's replay, for waiting viewers)
        bridge = self.bridge
        if not self.locals and self.described():
            return  # nobody watches: the catalog knows what it needs
        was = (bridge.codec, bridge.codec_string, bridge.width, bridge.height, bridge.channels)
        bridge.push(pkt.payload, pkt.seq, pkt.ts, pkt.marker, _CODEC_NAMES.get(pkt.codec, ""), pkt.arrival)
        while (obj := bridge.poll()) is not None:
            for local in self.locals:
                local.publish(obj.group, obj.object_id, obj.payload, obj.extensions)
        service = self.room.service
        if bridge.keyframe_wanted and (self.locals or self.room.catalogs):
            service.want_keyframe(self)
        if was != (bridge.codec, bridge.codec_string, bridge.width, bridge.height, bridge.channels):
            service.catalog_changed(self.room)

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass  # a silent source just stops feeding; the track ends when its registry entry goes

    def catalog_entry(self, render_group: int) -> CatalogTrack:
        b = self.bridge
        peer = self.name.partition("/")[0]
        return CatalogTrack(
            self.name,
            self.video,
            render_group,
            peer,
            b.codec_string or codec_string(b.codec),
            b.width,
            b.height,
            0 if self.video or not b.codec else clock_rate(b.codec),
            0 if self.video else b.channels,
        )


@dataclass(eq=False)
class _Room:
    service: MoqRooms
    name: str
    source: RoomSource
    taps: dict[str, _Tap] = field(default_factory=dict)  # registry key -> tap
    catalogs: list[LocalTrack] = field(default_factory=list)
    catalog_group: int = -1
    catalog_dirty: bool = False
    #: Whether the room's tracks are known: at once for the in-process worker's registry; for another
    #: worker's, once its answer to the watch has come (SUBSCRIBEs wait in ``pending`` until then).
    ready: bool = True
    pending: list[LocalTrack] = field(default_factory=list)

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.service.on_put(self, now, key, value)

    def on_registry_delete(self, now: float, key: str) -> None:
        self.service.on_delete(self, now, key)

    def on_watch_ready(self) -> None:
        """Another worker's registry has delivered what the room has."""
        self.service.on_ready(self)

    def tap(self, name: str) -> _Tap | None:
        found = [t for t in self.taps.values() if t.name == name]
        return found[-1] if found else None  # the newest publication of that name

    def idle(self) -> bool:
        return not self.catalogs and not self.pending and not any(t.locals for t in self.taps.values())


class MoqRooms:
    """The rooms of ``runtime`` (the in-process worker) on ``relay`` (the node's MoQ relay)."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        relay: Relay,
        hosted_here: Callable[[str], bool],
        remote: Callable[[str], RoomSource | None] | None = None,
        remote_metrics: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.relay = relay
        self.hosted_here = hosted_here
        self.remote = remote  # the source of a room another worker hosts (standalone --workers N)
        self.remote_metrics = remote_metrics
        self._local = _CoreSource(runtime)
        self.publisher = LocalPublisher(relay, ROOMS_PREFIX, self._subscribe, self._cancel)
        self.rooms: dict[str, _Room] = {}
        self._keyframes: dict[int, _Tap] = {}
        self._asked: dict[int, _Tap] = {}  # taps a new subscriber attached to
        self._catalogs: set[str] = set()
        self._scheduled = False
        self.counters = {"subscribes": 0, "refused": 0, "keyframe_requests": 0, "catalog_updates": 0}

    def metrics(self) -> dict[str, int]:
        out = {f"rooms_{k}_total": v for k, v in self.counters.items()}
        out["rooms"] = len(self.rooms)
        out["room_tracks_watched"] = sum(1 for r in self.rooms.values() for t in r.taps.values() if t.locals)
        if self.remote_metrics is not None:
            out |= self.remote_metrics()
        return out

    # -- the relay asks for a track --------------------------------------------------------------

    def _refuse(self, local: LocalTrack, reason: str) -> None:
        self.counters["refused"] += 1
        local.refuse(RequestErrorCode.DOES_NOT_EXIST, reason)

    def _subscribe(self, local: LocalTrack) -> None:
        now = self.runtime.now()
        self.counters["subscribes"] += 1
        ns = local.namespace
        if len(ns) != 2 or not ns[1]:
            self._refuse(local, 'a room\'s namespace is ("trackmesh", "<room>")')
            return
        try:
            room_name = ns[1].decode()
            local.name.decode()
        except UnicodeDecodeError:
            self._refuse(local, "room and track names are UTF-8")
            return
        source: RoomSource = self._local
        if not self.hosted_here(room_name):
            remote = self.remote(room_name) if self.remote is not None else None
            if remote is None:
                self._refuse(local, "this room is hosted by another worker, which MoQ cannot reach")
                return
            source = remote
        room = self._room(now, room_name, source)
        if local.name == CATALOG_TRACK:
            room.catalogs.append(local)
            local.accept(PRIORITY_CATALOG)
            self._publish_catalog(room, [local])
            return
        if not room.ready:
            room.pending.append(local)
            return
        self._attach_track(room, local)

    def on_ready(self, room: _Room) -> None:
        room.ready = True
        pending, room.pending = room.pending, []
        for local in pending:
            if not local.closed:
                self._attach_track(room, local)
        self._maybe_release(room)

    def _attach_track(self, room: _Room, local: LocalTrack) -> None:
        name = local.name.decode()
        tap = room.tap(name)
        if tap is None:
            self._refuse(local, f"no track {name!r} in room {room.name!r} (names are <peer>/<track>)")
            self._maybe_release(room)
            return
        tap.locals.append(local)
        local.owner = tap
        local.on_attach = lambda: self._attached(tap)
        local.accept(PRIORITY_VIDEO if tap.video else PRIORITY_AUDIO)

    def _attached(self, tap: _Tap) -> None:
        tap.bridge.request_keyframe(self.runtime.now())
        self._asked[id(tap)] = tap  # asked on the next turn even if a key frame comes first
        self.want_keyframe(tap)

    def _cancel(self, local: LocalTrack) -> None:
        for room in list(self.rooms.values()):
            if local in room.catalogs:
                room.catalogs.remove(local)
            if local in room.pending:
                room.pending.remove(local)
            for tap in room.taps.values():
                if local in tap.locals:
                    tap.locals.remove(local)
            self._maybe_release(room)

    # -- rooms -----------------------------------------------------------------------------------

    def _room(self, now: float, name: str, source: RoomSource) -> _Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = _Room(self, name, source, ready=source is self._local)
            source.watch(now, room_prefix(name), room)  # delivers what exists (a worker's: soon after)
            log.info("room on MoQ", extra={"fields": {"room": name, "tracks": len(room.taps)}})
        return room

    def _maybe_release(self, room: _Room) -> None:
        if not room.idle() or self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        now = self.runtime.now()
        room.source.unwatch(room_prefix(room.name), room)
        for tap in room.taps.values():
            room.source.unsubscribe(now, tap.channel, tap)
        room.taps.clear()
        log.info("room off MoQ", extra={"fields": {"room": room.name}})

    def on_put(self, room: _Room, now: float, key: str, value: bytes) -> None:
        try:
            entry = parse_key(key)
        except BadEntry:
            return
        if entry.track is None or key in room.taps:
            return
        try:
            info = decode_track(entry, value)
        except BadEntry:
            return
        name = f"{entry.peer}/{entry.track}"
        tap = _Tap(room, key, name, channel_id(room.name, entry.peer, entry.track), info.kind is TrackKind.VIDEO)
        room.taps[key] = tap
        room.source.subscribe(now, tap.channel, tap)
        self.catalog_changed(room)

    def on_delete(self, room: _Room, now: float, key: str) -> None:
        tap = room.taps.pop(key, None)
        if tap is None:
            return
        room.source.unsubscribe(now, tap.channel, tap)
        for local in list(tap.locals):
            local.end(now, "the track was unpublished", PublishDoneCode.TRACK_ENDED)
        tap.locals.clear()
        self._keyframes.pop(id(tap), None)
        self._asked.pop(id(tap), None)
        self.catalog_changed(room)
        self._maybe_release(room)  # its only watched track ended and no catalog is watched

    # -- catalog ---------------------------------------------------------------------------------

    def catalog_changed(self, room: _Room) -> None:
        if room.catalogs:
            self._catalogs.add(room.name)
            self._schedule()

    def _publish_catalog(self, room: _Room, targets: list[LocalTrack]) -> None:
        peers: dict[str, int] = {}
        entries = []
        for tap in sorted(room.taps.values(), key=lambda t: t.name):
            group = peers.setdefault(tap.name.partition("/")[0], len(peers) + 1)
            entries.append(tap.catalog_entry(group))
        payload = encode_catalog(entries)
        room.catalog_group += 1
        for local in targets:
            local.publish(room.catalog_group, 0, payload, None)
            local.end_group()
        self.counters["catalog_updates"] += 1

    # -- key frames, on the next loop turn -------------------------------------------------------

    def want_keyframe(self, tap: _Tap) -> None:
        self._keyframes[id(tap)] = tap
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        now = self.runtime.now()
        taps, self._keyframes = list(self._keyframes.values()), {}
        asked, self._asked = self._asked, {}
        sent = False
        for tap in taps:
            # A new subscriber's request, a watched track waiting for a key frame, or one the
            # catalog cannot describe without a key frame.
            if id(tap) in asked:
                tap.bridge.take_keyframe_request(now)  # its retries are paced from now
                send = True
            else:
                send = bool(tap.locals or not tap.described()) and tap.bridge.take_keyframe_request(now)
            if send:
                tap.room.source.feedback(now, tap.channel, Feedback(FeedbackKind.KEYFRAME, tap.origin))
                self.counters["keyframe_requests"] += 1
                sent = True
        names, self._catalogs = self._catalogs, set()
        for name in names:
            room = self.rooms.get(name)
            if room is not None and room.catalogs:
                self._publish_catalog(room, room.catalogs)
        if sent:
            self.runtime.flush(now)  # the publisher's PLI goes out now, not at the next input

    def close(self, now: float) -> None:
        for room in list(self.rooms.values()):
            for tap in list(room.taps.values()):
                for local in list(tap.locals):
                    local.end(now, "node stopping", PublishDoneCode.GOING_AWAY)
                tap.locals.clear()
            for local in list(room.catalogs):
                local.end(now, "node stopping", PublishDoneCode.GOING_AWAY)
            room.catalogs.clear()
            for local in room.pending:
                local.refuse(RequestErrorCode.DOES_NOT_EXIST, "node stopping")
            room.pending.clear()
            self._maybe_release(room)
        self.publisher.close()
