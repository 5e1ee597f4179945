"""Recording inside a media worker: which tracks are recorded, and the taps that feed the writer.

A room is recorded when the API starts it (``record.start``: every peer, or the ones named) or
when a peer joins with a token that says ``record: true`` (that peer only, as atm0s does). The
worker watches the room's registry prefix; every track a recorded peer publishes **on this
worker** gets a tap: a channel subscriber (the same path a viewer takes, so every transport's
tracks are recorded alike) whose per-packet work is one append to the writer's bounded queue
(:mod:`trackmesh.recording.writer`: depacketizing and muxing run on its thread). A track published
on another worker or node is recorded there: the node that ingests a track records it.

The tap also takes the publisher's sender reports (``RemoteTrack.clock_sink``), which the writer
uses to put every track of the room on one clock.

The API's start and stop are cluster-wide: ``record.start`` / ``record.stop`` put this worker's
decision entry in the registry (``rec/<room>/d/<member>``, :mod:`trackmesh.recording.decision`
decides), and every worker (of every media node) watches ``rec/``: when a room's effective
decision is a start, the worker records the room's tracks published on it (now and later) into
the decision's session, and says so under ``rec/<room>/n/<member>`` while it has tracks; when it
ends, the worker finalises them. Standalone takes the same path on its in-process registry.

Worker calls (from ``http/record_http.py``): ``record.start {room, app, peers?}``,
``record.stop {room}``, ``record.status {room?}``. At worker shutdown every file is finalised
(trailer written) within ``--shutdown-timeout`` (10 s by default).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackmesh.connector import events as ev
from trackmesh.connector.source import EventSource
from trackmesh.core.channel import ChannelHub, Feedback, FeedbackKind
from trackmesh.core.ids import channel_id
from trackmesh.core.model import MediaPacket, TrackKind
from trackmesh.core.registry import BadEntry, decode_track, parse_key, room_key, room_prefix, split_room_key
from trackmesh.core.tracks import RemoteTrack
from trackmesh.recording.decision import ROOT, Decision, Recorder, RoomDecisions, decision_key, recorder_key
from trackmesh.recording.layout import DEFAULT_APP, mark_interrupted, new_session, seg
from trackmesh.recording.upload import S3Target, Uploader, parse_s3_url
from trackmesh.recording.writer import RecordingWriter, TrackMeta
from trackmesh.rpc import RpcError

from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.recording")


class _Tap:
    """One recorded track: a channel subscriber whose only work is a queue append (and, when the
    recording thread raised ``keyframe_wanted``, one key-frame request to the publisher)."""

    __slots__ = ("channel", "hub", "key", "keyframe_wanted", "origin", "remote", "writer")

    def __init__(
        self, key: str, channel: int, writer: RecordingWriter, remote: RemoteTrack | None, hub: ChannelHub
    ) -> None:
        self.key = key
        self.channel = channel
        self.writer = writer
        self.remote = remote
        self.hub = hub
        self.origin = secrets.randbits(63)
        # Set by the recording thread (a plain attribute write), acted on here, on the worker's loop.
        self.keyframe_wanted = False

    def want_keyframe(self) -> None:
        self.keyframe_wanted = True

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        if pkt.alternate_of is not None:
            return  # an alternate rendition for viewers without the codec: the original is recorded
        self.writer.packet(self.key, pkt)
        if self.keyframe_wanted:
            self.keyframe_wanted = False
            # The recording waits for a key frame (it started mid-stream, or lost a packet): ask
            # the publisher, through the same merged, rate-limited path as a viewer's PLI.
            self.hub.feedback(pkt.arrival, channel, Feedback(FeedbackKind.KEYFRAME, self.origin))

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass  # a silent source just stops feeding; the track's file ends when its entry goes

    def on_clock(self, now: float, spatial: int, rtp_ts: int, ntp64: int) -> None:
        self.writer.sender_report(self.key, now, spatial, rtp_ts, ntp64)


@dataclass(eq=False)
class _RoomRecording:
    """One room's recording session on this worker (a registry watcher of the room)."""

    service: RecordingService
    app: str
    room: str
    session: str
    started_at: float
    all_peers: bool = False
    by_api: bool = False
    api_session: str = ""  # the cluster decision's session this recording follows (by_api)
    peers: set[str] = field(default_factory=set)
    taps: dict[str, _Tap] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)  # registry keys of recorded peers still in the room
    announced: set[str] = field(default_factory=set)  # peers whose Record.PeerJoined was sent

    @property
    def key(self) -> str:
        """The room's identity in the core (registry.room_key): per app."""
        return room_key(self.app, self.room)

    @property
    def path(self) -> str:
        """The session's folder under --record-dir (and the S3 prefix), as /api/record/list shows it."""
        return f"{seg(self.app or DEFAULT_APP)}/{seg(self.room)}/{self.session}"

    def wants(self, peer: str) -> bool:
        return self.all_peers or peer in self.peers

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.service.on_put(self, now, key, value)

    def on_registry_delete(self, now: float, key: str) -> None:
        self.service.on_delete(self, now, key)


class _DecisionWatcher:
    """The registry's ``rec/`` entries, into the service's :class:`RoomDecisions`."""

    __slots__ = ("service",)

    def __init__(self, service: RecordingService) -> None:
        self.service = service

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.service.on_decision_entry(now, self.service.decisions.on_put(key, value), key)

    def on_registry_delete(self, now: float, key: str) -> None:
        self.service.on_decision_entry(now, self.service.decisions.on_delete(key), key)


class RecordingService:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        config = runtime.config
        self.root = Path(config.record_dir)
        self.uploader: Uploader | None = None
        if config.record_s3:
            bucket, prefix = parse_s3_url(config.record_s3)
            target = S3Target(bucket, prefix, config.record_s3_endpoint)
            self.uploader = Uploader(self.root, target, runtime.counters)
        self.writer = RecordingWriter(
            self.root,
            config.record_max_file_minutes * 60.0,
            runtime.counters,
            wall_offset=time.time() - time.monotonic(),
            on_file_done=self.uploader.submit if self.uploader is not None else None,
        )
        if runtime.index == 0:
            # At start, before any session: files a crash cut are marked, and (with S3) what the
            # last run left in the spool is uploaded. One worker does it for the node.
            found = self.uploader.resume_pending() if self.uploader is not None else mark_interrupted(self.root)
            if found:
                log.info("recordings from an earlier run", extra={"fields": {"files": found}})
        self.rooms: dict[str, _RoomRecording] = {}  # by room key (per app: registry.room_key)
        # The cluster-wide decisions: this worker's member name is unique in the cluster
        # (node id = zone << 8 | index, and the worker's index).
        self.member = f"{config.node_id}.{runtime.index}"
        self.decisions = RoomDecisions(self.member)
        self._dirty: set[str] = set()
        self._settling = False
        self._decision_watcher = _DecisionWatcher(self)
        self._settling = True  # the replay only records; settled below
        try:
            runtime.core.registry.watch(runtime.now(), ROOT, self._decision_watcher)
        finally:
            self._settling = False
        self._settle(runtime.now())
        runtime.services[RecordingService] = self
        runtime.register_rpc("record.start", self.start)
        runtime.register_rpc("record.stop", self.stop)
        runtime.register_rpc("record.status", self.status)
        runtime.register_rpc("record.compose_event", self.compose_event)
        runtime.on_shutdown(self.shutdown)

    # ---- who is recorded -----------------------------------------------------------------------

    def record_peer(self, now: float, app: str, room: str, peer: str) -> None:
        """A peer joined with a ``record: true`` token: record every track it publishes."""
        rec = self._room(now, app, room)
        if not rec.wants(peer):
            rec.peers.add(peer)
            self._rescan(now, rec)

    def start(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """The API's start, for the whole cluster: this worker's decision entry (the room's
        running recording joined: same session, peers added), then applied here at once."""
        room = str(params.get("room") or "")
        if not room:
            raise RpcError(400, "room is required")
        app = str(params.get("app") or "")
        key = room_key(app, room)  # the decisions are per app's room too
        peers = params.get("peers")
        local = self.rooms.get(key)
        wall = time.time()
        session = local.session if local is not None else new_session(wall)
        names = None if peers is None else [str(p) for p in peers]
        decision = self.decisions.start(key, app, names, wall, session)
        self._put_decision(now, key, decision)
        return self._describe_room(key, decision)

    def stop(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        room = str(params.get("room") or "")
        key = room_key(str(params.get("app") or ""), room)
        stopped = self.decisions.stop(key, time.time())
        if stopped is None:
            rec = self.rooms.get(key)
            if rec is None:
                raise RpcError(404, f"room {room!r} is not being recorded")
            out = self._describe(rec)  # recorded by tokens only, on this worker
            self._end_room(now, rec, "recording stopped")
            return out
        decision, current = stopped
        out = self._describe_room(key, current)
        self._put_decision(now, key, decision)
        return out

    def status(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        room, app = params.get("room"), str(params.get("app") or "")
        recs = [r for r in self.rooms.values() if r.app == app and (room is None or r.room == room)]
        out: dict[str, Any] = {"rooms": [self._describe(r) for r in recs]}
        if room is not None:
            key = room_key(app, str(room))
            current = self.decisions.effective(key)
            out["recording"] = None if current is None else self._describe_room(key, current)
        return out

    def compose_event(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """A compose job of the node started, completed or failed: its hook event goes out through
        this worker's event source (the one the room's events take). Without a connector: nothing."""
        kind, path, job = str(params.get("kind")), str(params.get("path") or ""), str(params.get("job") or "")
        body: ev.ComposeEventBody
        if kind == "started":
            body = ev.ComposeStarted(path)
        elif kind == "completed":
            duration = params.get("duration")
            ms = int(float(duration) * 1000) if isinstance(duration, int | float) else 0
            body = ev.ComposeCompleted(path, str(params.get("output") or ""), min(max(ms, 0), (1 << 32) - 1))
        elif kind == "failed":
            body = ev.ComposeFailed(path, str(params.get("error") or ""))
        else:
            raise RpcError(400, f"unknown compose event {kind!r}")
        self._emit(now, str(params.get("app") or ""), ev.ComposeEvent(str(params.get("room") or ""), job, body))
        return {}

    def shutdown(self, now: float) -> None:
        # No decision starts anything any more (the writer stops below).
        self.runtime.core.registry.unwatch(ROOT, self._decision_watcher)
        self._settling = True
        for rec in list(self.rooms.values()):
            self._end_room(now, rec, "node stopped")
        self.writer.stop(max(self.runtime.config.shutdown_timeout, 1.0))
        if self.uploader is not None:
            # What is not uploaded yet stays in the spool and is resumed at the next start.
            self.uploader.stop(2.0)

    # ---- registry events -----------------------------------------------------------------------

    def on_put(self, rec: _RoomRecording, now: float, key: str, value: bytes) -> None:
        try:
            entry = parse_key(key)
        except BadEntry:
            return
        if not rec.wants(entry.peer):
            return
        if entry.track is None:
            rec.present.add(key)
            return
        if key in rec.taps:
            return
        endpoint = self.runtime.core.endpoints.get(entry.session)
        if endpoint is None:
            return  # published on another worker or node: recorded there
        try:
            info = decode_track(entry, value)
        except BadEntry:
            return
        remote = endpoint.remote_track(entry.track)
        channel = channel_id(rec.key, entry.peer, entry.track)
        tap = _Tap(key, channel, self.writer, remote, self.runtime.core.hub)
        rec.taps[key] = tap
        video = info.kind is TrackKind.VIDEO
        meta = TrackMeta(rec.app, rec.room, rec.session, entry.peer, entry.track, video)
        self.writer.open_track(key, meta, tap.want_keyframe if video else None)
        if entry.peer not in rec.announced:
            rec.announced.add(entry.peer)
            peer_path = f"{rec.path}/{seg(entry.peer)}"
            self._emit(now, rec.app, ev.RecordEvent(rec.room, ev.RecordPeerJoined(entry.peer, peer_path)))
        self.runtime.core.hub.subscribe(now, channel, tap)
        if remote is not None:
            remote.clock_sink = tap.on_clock
        self._publish(now, rec)
        log.info(
            "recording track",
            extra={"fields": {"room": rec.room, "peer": entry.peer, "track": entry.track, "session": rec.session}},
        )

    def on_delete(self, rec: _RoomRecording, now: float, key: str) -> None:
        rec.present.discard(key)
        tap = rec.taps.pop(key, None)
        if tap is not None:
            self._close_tap(now, tap, "track ended")
            self._publish(now, rec)
        if not rec.by_api and not rec.taps and not rec.present:
            self._end_room(now, rec, "every recorded peer left")

    # ---- internals -----------------------------------------------------------------------------

    def _room(self, now: float, app: str, room: str, session: str | None = None) -> _RoomRecording:
        rec = self.rooms.get(room_key(app, room))
        if rec is None:
            wall = time.time()
            rec = _RoomRecording(self, app, room, session or new_session(wall), wall)
            self.rooms[rec.key] = rec
            log.info("room recording started", extra={"fields": {"room": room, "session": rec.session}})
            self._emit(now, app, ev.RecordEvent(room, ev.RecordStarted(rec.path)))
        return rec

    def _emit(self, now: float, app: str, event: ev.RecordEvent | ev.ComposeEvent) -> None:
        """A hook event (docs/connector.md), when the node has a connector."""
        source = self.runtime.core.audit
        if isinstance(source, EventSource):
            source.emit_app(now, app, event)

    def _rescan(self, now: float, rec: _RoomRecording) -> None:
        """(Re)watch the room: the registry replays its entries, so tracks already published by a
        newly wanted peer are tapped like new ones (a tapped one is skipped)."""
        registry = self.runtime.core.registry
        prefix = room_prefix(rec.key)
        registry.unwatch(prefix, rec)
        registry.watch(now, prefix, rec)

    def _close_tap(self, now: float, tap: _Tap, reason: str) -> None:
        self.runtime.core.hub.unsubscribe(now, tap.channel, tap)
        if tap.remote is not None and tap.remote.clock_sink == tap.on_clock:
            tap.remote.clock_sink = None
        self.writer.close_track(tap.key, reason)

    def _end_room(self, now: float, rec: _RoomRecording, reason: str) -> None:
        if self.rooms.get(rec.key) is not rec:
            return
        del self.rooms[rec.key]
        self.runtime.core.registry.unwatch(room_prefix(rec.key), rec)
        for tap in list(rec.taps.values()):
            self._close_tap(now, tap, reason)
        rec.taps.clear()
        self._publish(now, rec)
        log.info("room recording ended", extra={"fields": {"room": rec.room, "session": rec.session, "reason": reason}})

    # ---- the cluster-wide decision ------------------------------------------------------------

    def _put_decision(self, now: float, room: str, decision: Decision) -> None:
        self._settling = True  # our own put reaches our watcher synchronously: record only
        try:
            self.runtime.core.registry.put(now, decision_key(room, self.member), decision.encode())
        finally:
            self._settling = False
        self._dirty.add(room)
        self._settle(now)

    def on_decision_entry(self, now: float, room: str | None, key: str) -> None:
        """A ``rec/`` entry changed (already in ``self.decisions``): a decision entry makes its
        room act again (at once, or after the registry call we are inside of)."""
        if room is None or "/d/" not in key:
            return  # a dropped entry, or a recorder entry: nothing to do
        self._dirty.add(room)
        self._settle(now)

    def _settle(self, now: float) -> None:
        if self._settling:
            return
        self._settling = True
        try:
            while self._dirty:
                self._apply(now, self._dirty.pop())
        finally:
            self._settling = False

    def _apply(self, now: float, room: str) -> None:
        """Make this worker follow the room's effective decision, and clean up our own entry
        (``room``: the room's key, per app: registry.room_key)."""
        registry = self.runtime.core.registry
        if self.decisions.garbage(room):
            registry.delete(now, decision_key(room, self.member))
        decision = self.decisions.effective(room)
        rec = self.rooms.get(room)
        if decision is None:
            if rec is not None and rec.by_api:
                self._end_room(now, rec, "recording stopped")
            return
        if rec is not None and rec.by_api and rec.api_session != decision.session:
            # A stop and a new start we saw out of order: the old session ends, the new begins.
            self._end_room(now, rec, "recording stopped")
            rec = None
        if rec is None:
            rec = self._room(now, decision.app, split_room_key(room)[1], decision.session)
        wanted = set(decision.peers or ())
        changed = not rec.by_api or (decision.peers is None and not rec.all_peers) or not wanted <= rec.peers
        rec.by_api, rec.api_session = True, decision.session
        rec.all_peers = rec.all_peers or decision.peers is None
        rec.peers |= wanted
        if changed:
            self._rescan(now, rec)

    def _publish(self, now: float, rec: _RoomRecording) -> None:
        """``rec/<room>/n/<member>`` while this worker records tracks of the room (who records
        where, for /api/record/list on any node)."""
        registry = self.runtime.core.registry
        key = recorder_key(rec.key, self.member)
        if rec.taps and self.rooms.get(rec.key) is rec:
            config = self.runtime.config
            entry = Recorder(self.member, config.node_id, self.runtime.index, rec.session, len(rec.taps))
            registry.put(now, key, entry.encode())
        else:
            registry.delete(now, key)

    def _describe_room(self, room: str, decision: Decision) -> dict[str, Any]:
        """The room's cluster-wide recording: its decision and the workers recording it now
        (``room``: the room's key, registry.room_key)."""
        rec = self.rooms.get(room)
        recorders = self.decisions.room_recorders(room)
        return {
            "room": split_room_key(room)[1],
            "app": decision.app,
            "session": decision.session,
            "all_peers": decision.peers is None,
            "peers": sorted(decision.peers or ()),
            "tracks": len(rec.taps) if rec is not None else 0,
            "cluster_tracks": sum(r.tracks for r in recorders),
            "nodes": [r.view() for r in recorders],
        }

    def _describe(self, rec: _RoomRecording) -> dict[str, Any]:
        return {
            "room": rec.room,
            "app": rec.app,
            "session": rec.session,
            "all_peers": rec.all_peers,
            "peers": sorted(rec.peers),
            "tracks": len(rec.taps),
        }


def install(runtime: WorkerRuntime) -> None:
    RecordingService(runtime)


def recording_of(runtime: WorkerRuntime) -> RecordingService | None:
    service = runtime.services.get(RecordingService)
    return service if isinstance(service, RecordingService) else None
