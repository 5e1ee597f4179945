"""Rooms as MoQ on the other workers of a standalone node (docs/moq.md "Several workers"): the MoQ
listener and its room bridges run in the node's process, beside worker 0, while a room lives on the
worker its name hashes to. A standalone node's workers share no registry and no channels, so the
bridges reach a room on worker k (a child process) over that worker's pipe:

- **Watching** (runtime/moq_rooms.py): :class:`WorkerMoq` is the room's :class:`~.moq_rooms.RoomSource`.
  A watch of the room's registry prefix, a subscription to a track's channel and a key-frame
  request are sent to the worker; the worker's :class:`WorkerMoqAgent` answers with the registry's
  entries (then ``ready``) and every packet of the subscribed channels, encoded as a cluster media
  packet (cluster/zenoh_channels.py ``encode_packet``).
- **Publishing** (runtime/moq_room_ingest.py): :class:`WorkerMoq` is also the room's
  :class:`~.moq_room_ingest.RoomHost`. The MoQ publisher's peers join the room on worker k (the
  agent makes their endpoints); the LOC objects are cut into RTP here, and the packets cross the
  pipe to the peers' tracks there.

What crosses is batched (runtime/pipe_batch.py): one pipe message per loop turn each way, whatever the
number of packets. A pipe write never blocks a loop: while the other side is behind, the packets
queued are dropped and counted (the track recovers at its next key frame) and the rest waits.
Messages to the worker carry request id ``-2`` (no answer); messages from it, request id ``-2`` too
(runtime/handles.py). Only the tracks a MoQ subscriber watches, and a MoQ publisher's, cross: one copy
per track, whatever the number of MoQ subscribers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

from trackmesh.cluster.zenoh_channels import BadMessage, decode_packet, encode_packet
from trackmesh.core.channel import ChannelSubscriber, Feedback, FeedbackKind
from trackmesh.core.controls import Join, Publish, Unpublish
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import KeyframeRequested
from trackmesh.core.model import JoinOptions, MediaPacket, TrackKind
from trackmesh.core.registry import RegistryWatcher

from .pipe_batch import PipeBatch as _Batch
from .pipe_batch import writable
from .recording import recording_of
from .worker import WorkerRuntime


class ChildWorker(Protocol):
    """What the bridges need of a child worker's handle (runtime/handles.py ProcessWorker): its
    index, a push over its pipe that never waits, whether the pipe takes one now, and the hook for
    the child's own pushes. A protocol, so that handles.py (which starts the child's agent here)
    and this module do not import each other."""

    index: int
    on_moq: Callable[[Any], None] | None

    def writable(self) -> bool: ...
    def push(self, method: str, params: dict[str, Any]) -> None: ...

__all__ = ["PUSH", "WorkerBridges", "WorkerMoq", "WorkerMoqAgent"]

log = logging.getLogger("trackmesh.moq")

PUSH = -2  # the request id of MoQ messages on a worker's pipe, both ways (no answer)


# -- the node's side ----------------------------------------------------------------------------


class _RemotePeer:
    """A MoQ publisher's peer joined on another worker (the console lists it by ``session``)."""

    __slots__ = ("session",)

    def __init__(self, session: str) -> None:
        self.session = session


class WorkerMoq:
    """One child worker as seen by the MoQ room bridges: the :class:`RoomSource` of its rooms
    (moq_rooms.py) and, per room, the :class:`RoomHost` of MoQ publishers into them (moq_room_ingest.py)."""

    def __init__(self, worker: ChildWorker, now: Callable[[], float]) -> None:
        self.worker = worker
        self.now = now
        self.watchers: dict[str, RegistryWatcher] = {}
        self.subscribers: dict[int, list[ChannelSubscriber]] = {}
        self.out = _Batch(lambda items: worker.push("moq.batch", {"items": items}), worker.writable)
        self.counters = {"packets_in": 0, "packets_out": 0, "bad_packets": 0}
        worker.on_moq = self.on_batch

    def host(self, room: str) -> _RoomOnWorker:
        return _RoomOnWorker(self, room)

    # -- RoomSource ----------------------------------------------------------------------------

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None:
        self.watchers[prefix] = watcher
        self.out.add(("watch", prefix))

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None:
        if self.watchers.get(prefix) is watcher:
            del self.watchers[prefix]
            self.out.add(("unwatch", prefix))

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        subs = self.subscribers.setdefault(channel, [])
        if subscriber not in subs:
            subs.append(subscriber)
        if len(subs) == 1:
            self.out.add(("subscribe", channel))

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        subs = self.subscribers.get(channel)
        if subs is None or subscriber not in subs:
            return
        subs.remove(subscriber)
        if not subs:
            del self.subscribers[channel]
            self.out.add(("unsubscribe", channel))

    def feedback(self, now: float, channel: int, fb: Feedback) -> None:
        self.out.add(("feedback", channel, fb.kind.value, fb.origin, fb.bitrate_bps))

    # -- what the worker sends -----------------------------------------------------------------

    def on_batch(self, items: list[tuple[Any, ...]]) -> None:
        now = self.now()
        for item in items:
            kind = item[0]
            if kind == "p":
                subs = self.subscribers.get(item[1])
                if not subs:
                    continue
                try:
                    pkt = decode_packet(item[2])
                except BadMessage:
                    self.counters["bad_packets"] += 1
                    continue
                pkt.arrival = now
                self.counters["packets_in"] += 1
                for sub in list(subs):
                    sub.on_channel_packet(item[1], pkt)
            elif kind == "put":
                watcher = self.watchers.get(item[1])
                if watcher is not None:
                    watcher.on_registry_put(now, item[2], item[3])
            elif kind == "delete":
                watcher = self.watchers.get(item[1])
                if watcher is not None:
                    watcher.on_registry_delete(now, item[2])
            elif kind == "ready":
                ready = getattr(self.watchers.get(item[1]), "on_watch_ready", None)
                if ready is not None:
                    ready()


class _RoomOnWorker:
    """The :class:`~.moq_room_ingest.RoomHost` of one room on a child worker."""

    def __init__(self, worker: WorkerMoq, room: str) -> None:
        self.worker = worker
        self.room = room

    def join(self, now: float, room: str, peer: str, app: str, record: bool) -> str | None:
        self.worker.out.add(("join", room, peer, app, record))
        return None  # a refusal is logged by the worker

    def handle(self, peer: str) -> object:
        return _RemotePeer(f"worker{self.worker.worker.index}:{self.room}/{peer}")

    def publish(self, now: float, peer: str, track: str, kind: TrackKind) -> str | None:
        self.worker.out.add(("publish", self.room, peer, track, kind.value))
        return None

    def packets(self, peer: str, track: str, packets: list[MediaPacket]) -> None:
        out = self.worker.out
        for pkt in packets:
            out.add(("p", self.room, peer, track, encode_packet(pkt)))
        self.worker.counters["packets_out"] += len(packets)

    def unpublish(self, now: float, peer: str, track: str) -> None:
        self.worker.out.add(("unpublish", self.room, peer, track))

    def leave(self, now: float, peer: str, reason: str) -> None:
        self.worker.out.add(("leave", self.room, peer, reason))


class WorkerBridges:
    """The child workers of a standalone node, for the node's room bridges: the source, and the
    host, of a room that one of them hosts (None: worker 0's, or a worker that is not a child)."""

    def __init__(
        self, children: Sequence[ChildWorker], worker_for_room: Callable[[str], Any], now: Callable[[], float]
    ) -> None:
        self.worker_for_room = worker_for_room
        self.by_worker = {id(w): WorkerMoq(w, now) for w in children}

    def source(self, room: str) -> WorkerMoq | None:
        return self.by_worker.get(id(self.worker_for_room(room)))

    def host(self, room: str) -> _RoomOnWorker | None:
        moq = self.source(room)
        return moq.host(room) if moq is not None else None

    def metrics(self) -> dict[str, int]:
        """Summed over the child workers, in ``trackmesh_moq{what=...}``."""
        moqs = list(self.by_worker.values())
        return {
            "workers_packets_in_total": sum(w.counters["packets_in"] for w in moqs),
            "workers_packets_out_total": sum(w.counters["packets_out"] for w in moqs),
            "workers_messages_out_total": sum(w.out.messages for w in moqs),
            "workers_bad_packets_total": sum(w.counters["bad_packets"] for w in moqs),
            "workers_packets_dropped_total": sum(w.out.dropped for w in moqs),
        }


# -- the worker's side ----------------------------------------------------------------------------


class _Watch:
    __slots__ = ("agent", "prefix")

    def __init__(self, agent: WorkerMoqAgent, prefix: str) -> None:
        self.agent = agent
        self.prefix = prefix

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.agent.out.add(("put", self.prefix, key, value))

    def on_registry_delete(self, now: float, key: str) -> None:
        self.agent.out.add(("delete", self.prefix, key))


class _Forward:
    """A channel's packets, to the node's MoQ room bridge."""

    __slots__ = ("agent",)

    def __init__(self, agent: WorkerMoqAgent) -> None:
        self.agent = agent

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        if pkt.replay:
            return  # copies of packets already forwarded (a key-frame cache's replay, for waiting viewers)
        self.agent.out.add(("p", channel, encode_packet(pkt)))
        self.agent.counters["packets_out"] += 1

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        pass  # the track ends when its registry entry goes


class WorkerMoqAgent:
    """In a child worker of a standalone node: serves the node's MoQ room bridges (see the module)."""

    def __init__(self, runtime: WorkerRuntime, conn: Connection) -> None:
        self.runtime = runtime
        self.out = _Batch(lambda items: conn.send((PUSH, True, items)), lambda: writable(conn.fileno()))
        self.watches: dict[str, _Watch] = {}
        self.forwards: dict[int, _Forward] = {}
        self.peers: dict[tuple[str, str], Endpoint] = {}
        self.counters = {"packets_in": 0, "packets_out": 0, "keyframe_requests": 0, "refused": 0}
        runtime.register_rpc("moq.batch", self._batch)
        runtime.register_rpc("moq.stats", lambda now, params: self.stats())

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "watches": len(self.watches),
            "channels": len(self.forwards),
            "peers": len(self.peers),
            "messages_out": self.out.messages,
            "packets_dropped": self.out.dropped,
        }

    def _batch(self, now: float, params: dict[str, Any]) -> None:
        for item in params.get("items", ()):
            try:
                self._item(now, item)
            except Exception:
                log.exception("moq worker message failed", extra={"fields": {"kind": str(item[:1])}})

    def _item(self, now: float, item: tuple[Any, ...]) -> None:
        kind = item[0]
        core = self.runtime.core
        if kind == "p":
            endpoint = self.peers.get((item[1], item[2]))
            remote = endpoint.remote_track(item[3]) if endpoint is not None else None
            if remote is not None:
                pkt = decode_packet(item[4])
                pkt.arrival = now
                remote.on_packet(pkt)
                self.counters["packets_in"] += 1
        elif kind == "watch":
            prefix = item[1]
            if prefix not in self.watches:
                watch = self.watches[prefix] = _Watch(self, prefix)
                core.registry.watch(now, prefix, watch)  # delivers what exists
            self.out.add(("ready", prefix))
        elif kind == "unwatch":
            gone: _Watch | None = self.watches.pop(item[1], None)
            if gone is not None:
                core.registry.unwatch(item[1], gone)
        elif kind == "subscribe":
            if item[1] not in self.forwards:
                forward = self.forwards[item[1]] = _Forward(self)
                core.hub.subscribe(now, item[1], forward)
        elif kind == "unsubscribe":
            stopped: _Forward | None = self.forwards.pop(item[1], None)
            if stopped is not None:
                core.hub.unsubscribe(now, item[1], stopped)
        elif kind == "feedback":
            core.hub.feedback(now, item[1], Feedback(FeedbackKind(item[2]), item[3], item[4]))
        elif kind == "join":
            self._join(now, item[1], item[2], item[3], bool(item[4]))
        elif kind == "publish":
            endpoint = self.peers.get((item[1], item[2]))
            err = endpoint.control(now, Publish(item[3], TrackKind(item[4]))) if endpoint is not None else None
            if err is not None:
                log.warning("moq track cannot publish", extra={"fields": {"track": item[3], "why": err.message}})
        elif kind == "unpublish":
            endpoint = self.peers.get((item[1], item[2]))
            if endpoint is not None:
                endpoint.control(now, Unpublish(item[3]))
        elif kind == "leave":
            endpoint = self.peers.pop((item[1], item[2]), None)
            if endpoint is not None:
                self.runtime.unlisten(endpoint.session)
                core.close_endpoint(now, endpoint.session, str(item[3]))

    def _join(self, now: float, room: str, peer: str, app: str, record: bool) -> None:
        core = self.runtime.core
        endpoint = core.create_endpoint(app)
        err = endpoint.control(now, Join(room, peer, JoinOptions()))
        if err is not None:
            core.close_endpoint(now, endpoint.session, "join failed")
            self.counters["refused"] += 1
            log.warning("moq peer cannot join", extra={"fields": {"room": room, "peer": peer, "why": err.message}})
            return
        self.peers[(room, peer)] = endpoint
        self.runtime.listen(endpoint.session, functools.partial(self._events, endpoint))
        recording = recording_of(self.runtime)
        if record and recording is not None:
            recording.record_peer(now, app, room, peer)

    def _events(self, endpoint: Endpoint, now: float) -> None:
        while (event := endpoint.poll_event()) is not None:
            if isinstance(event, KeyframeRequested):
                self.counters["keyframe_requests"] += 1  # answered by the MoQ publisher's next group
