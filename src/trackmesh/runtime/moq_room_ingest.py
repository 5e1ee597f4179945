"""MoQ publishers into rooms (docs/moq.md "Publish into a room over MoQ"): a MoQ session that
publishes the namespace ``("trackmesh", "<room>")`` with an MSF ``catalog`` and LOC tracks becomes
peers of the room that WHEP, SDK and every other viewer receive.

- The service watches the relay's namespaces under ``("trackmesh",)`` (an in-process namespace
  subscriber: transports/moq/local_subscriber.py). For a room's namespace it subscribes to the
  publisher's ``catalog``; each catalog object says which tracks exist.
- A catalog track ``"<peer>/<track>"`` (or ``"<track>"``: the token's peer, else ``moq``) with a
  codec we carry becomes the track ``<track>`` of the peer ``<peer>`` (with a ``moq`` token, only
  the token's peer: another is refused and counted), which joins the room on the in-process worker
  like an RTMP publisher does; the service subscribes to the MoQ track and re-packetizes each LOC
  object into RTP with the shared packetizers (transports/moq/loc_to_rtp.py) into the peer's
  RemoteTrack. A track that leaves the catalog is unpublished; a peer with no track left,
  or whose namespace is withdrawn (PUBLISH_NAMESPACE_DONE, the session ends), leaves the room.
- Viewers' key-frame requests cannot reach a MoQ publisher: they are counted and answered by its
  next group (video starts only on a group's first object, a key frame).
- The worker is flushed once per loop turn after packets went in (not from inside the relay's
  delivery).

Which rooms are served is the node's ``moq_ingest_here``: on a cluster media node every room (the
peers join on worker 0; viewers on another worker or node get their tracks over the tracks' cluster
channels, and a room new to the node is pinned to worker 0). On a standalone node, whose workers share
no channels, the peers of a room another worker hosts join on that worker through ``remote``: the
RTP packets cross its pipe (runtime/moq_workers.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trackmesh.core.controls import Join, Publish, Unpublish
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import KeyframeRequested
from trackmesh.core.model import JoinOptions, MediaPacket, TrackKind
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.catalog import CATALOG_TRACK, CatalogTrack, decode_catalog
from trackmesh.transports.moq.errors import MoqDecodeError
from trackmesh.transports.moq.loc_to_rtp import LocToRtp, media_codec
from trackmesh.transports.moq.local_subscriber import LocalSubscriber
from trackmesh.transports.moq.relay import Relay

from .console_rpc import ConsoleRpc
from .moq_auth import TokenAuthorizer
from .recording import recording_of
from .worker import WorkerRuntime

__all__ = ["MoqRoomIngest", "RoomHost"]

log = logging.getLogger("trackmesh.moq")

ROOMS_PREFIX = (b"trackmesh",)
DEFAULT_PEER = "moq"


class RoomHost(Protocol):
    """The worker hosting a room: where the MoQ publisher's peers join and publish."""

    def join(self, now: float, room: str, peer: str, app: str, record: bool) -> str | None:
        """The peer joins the room; the reason when it cannot."""

    def handle(self, peer: str) -> object:
        """What stands for a joined peer (its ``session`` names it: the console lists it)."""

    def publish(self, now: float, peer: str, track: str, kind: TrackKind) -> str | None: ...
    def packets(self, peer: str, track: str, packets: list[MediaPacket]) -> None: ...
    def unpublish(self, now: float, peer: str, track: str) -> None: ...
    def leave(self, now: float, peer: str, reason: str) -> None: ...


class _LocalHost:
    """The in-process worker: the peers are endpoints of its core."""

    def __init__(self, service: MoqRoomIngest) -> None:
        self.service = service
        self.runtime = service.runtime
        self.peers: dict[str, Endpoint] = {}

    def join(self, now: float, room: str, peer: str, app: str, record: bool) -> str | None:
        endpoint = self.runtime.core.create_endpoint(app)  # the token's app: its room only
        err = endpoint.control(now, Join(room, peer, JoinOptions()))
        if err is not None:
            self.runtime.core.close_endpoint(now, endpoint.session, "join failed")
            return err.message
        self.peers[peer] = endpoint
        self.runtime.listen(endpoint.session, functools.partial(self.service.on_core_events, endpoint))
        recording = recording_of(self.runtime)
        if record and recording is not None:
            # A record:true token (atm0s): every track this peer publishes is recorded.
            recording.record_peer(now, app, room, peer)
        return None

    def handle(self, peer: str) -> object:
        return self.peers.get(peer)

    def publish(self, now: float, peer: str, track: str, kind: TrackKind) -> str | None:
        endpoint = self.peers.get(peer)
        if endpoint is None:
            return "not in the room"
        err = endpoint.control(now, Publish(track, kind))
        return err.message if err is not None else None

    def packets(self, peer: str, track: str, packets: list[MediaPacket]) -> None:
        endpoint = self.peers.get(peer)
        remote = endpoint.remote_track(track) if endpoint is not None else None
        if remote is not None:
            for pkt in packets:
                remote.on_packet(pkt)

    def unpublish(self, now: float, peer: str, track: str) -> None:
        endpoint = self.peers.get(peer)
        if endpoint is not None:
            endpoint.control(now, Unpublish(track))

    def leave(self, now: float, peer: str, reason: str) -> None:
        endpoint = self.peers.pop(peer, None)
        if endpoint is not None:
            self.runtime.unlisten(endpoint.session)
            self.runtime.core.close_endpoint(now, endpoint.session, reason)


class _Track:
    """One MoQ track feeding one room track (a TrackHandler of the local subscriber)."""

    def __init__(self, room: _Room, peer: str, name: str, entry: CatalogTrack, rtp: LocToRtp) -> None:
        self.room = room
        self.peer = peer
        self.name = name
        self.entry = entry
        self.rtp = rtp
        self.request_id = 0
        self.live = False

    def on_subscribed(self) -> None:
        self.live = True

    def on_refused(self, code: int, reason: str) -> None:
        log.info("moq room track refused", extra={"fields": {"track": self.entry.name, "code": code, "why": reason}})
        self.room.service.drop_track(self.room, self.entry.name, "the publisher refused it")

    def on_done(self, status: int, reason: str) -> None:
        self.room.service.drop_track(self.room, self.entry.name, "the publisher ended it")

    def on_object(self, group: int, object_id: int, payload: bytes, extensions: bytes) -> None:
        service = self.room.service
        if self.peer not in self.room.peers:
            return
        packets = self.rtp.object(object_id, payload, extensions, service.runtime.now())
        self.room.host.packets(self.peer, self.name, packets)
        if packets:
            service.counters["packets"] += len(packets)
            service.schedule_flush()


@dataclass(eq=False)
class _Room:
    service: MoqRoomIngest
    name: str
    namespace: m.TrackNamespace
    host: RoomHost
    token_peer: str | None = None  # the publisher's token names its peer: only that one may join
    record: bool = False  # the publisher's token says record: true: its peers' tracks are recorded
    app: str = ""
    catalog_request: int = 0
    tracks: dict[str, _Track] = field(default_factory=dict)  # catalog name -> track
    peers: dict[str, object] = field(default_factory=dict)  # joined on the host: its handle

    # The catalog's TrackHandler.
    def on_subscribed(self) -> None:
        pass

    def on_refused(self, code: int, reason: str) -> None:
        log.info("moq room publisher has no catalog", extra={"fields": {"room": self.name, "why": reason}})

    def on_done(self, status: int, reason: str) -> None:
        self.service.sync(self, [])

    def on_object(self, group: int, object_id: int, payload: bytes, extensions: bytes) -> None:
        try:
            entries = decode_catalog(payload)
        except MoqDecodeError as exc:
            self.service.counters["bad_catalogs"] += 1
            log.info("moq room catalog refused", extra={"fields": {"room": self.name, "why": str(exc)}})
            return
        self.service.sync(self, entries)


class MoqRoomIngest:
    def __init__(
        self,
        runtime: WorkerRuntime,
        relay: Relay,
        hosted_here: Callable[[str], bool],
        remote: Callable[[str], RoomHost | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.relay = relay
        self.hosted_here = hosted_here
        self.remote = remote  # the host of a room another worker hosts (standalone --workers N)
        self.rooms: dict[m.TrackNamespace, _Room] = {}
        self.counters = {
            "publishers": 0,
            "tracks": 0,
            "packets": 0,
            "bad_catalogs": 0,
            "not_carried": 0,
            "keyframe_requests": 0,
            "elsewhere": 0,
            "refused_peers": 0,
        }
        self._flush_scheduled = False
        self.subscriber = LocalSubscriber(relay, self._namespace)
        self.subscriber.watch_namespaces(ROOMS_PREFIX)
        self._console = MoqSessions(self)
        ConsoleRpc.of(runtime).others.append(self._console)  # the console's listing, kick and end room

    def metrics(self) -> dict[str, int]:
        out = {f"ingest_{k}_total": v for k, v in self.counters.items()}
        out["ingest_rooms"] = len(self.rooms)
        return out

    def _namespace(self, namespace: m.TrackNamespace, live: bool) -> None:
        if len(namespace) != 2:
            return
        try:
            room_name = namespace[1].decode()
        except UnicodeDecodeError:
            return
        if not live:
            room = self.rooms.pop(namespace, None)
            if room is not None:
                self.sync(room, [])
                self.subscriber.unsubscribe(room.catalog_request)
            return
        if namespace in self.rooms:
            return
        host: RoomHost = _LocalHost(self)
        if not self.hosted_here(room_name):
            remote = self.remote(room_name) if self.remote is not None else None
            if remote is None:
                self.counters["elsewhere"] += 1
                log.warning("moq publisher of a room hosted by another worker", extra={"fields": {"room": room_name}})
                return
            host = remote
        token = self._token(namespace)
        room = self.rooms[namespace] = _Room(
            self, room_name, namespace, host, token.peer if token else None, token.record if token else False,
            token.app if token else "",
        )  # fmt: skip
        self.counters["publishers"] += 1
        log.info("moq publisher into a room", extra={"fields": {"room": room_name}})
        room.catalog_request = self.subscriber.subscribe(namespace, CATALOG_TRACK, room, self.runtime.now())

    def _token(self, namespace: m.TrackNamespace) -> TokenAuthorizer | None:
        """The namespace publisher's ``moq`` token (None: anonymous relay)."""
        entries = self.relay.namespaces.get(namespace)
        session = entries[0][0] if entries else None
        authorizer = getattr(session, "authorizer", None)
        return authorizer if isinstance(authorizer, TokenAuthorizer) else None

    # -- the catalog says which tracks exist -------------------------------------------------

    def sync(self, room: _Room, entries: list[CatalogTrack]) -> None:
        wanted = {e.name: e for e in entries}
        for name in [n for n in room.tracks if n not in wanted]:
            self.drop_track(room, name, "left the catalog")
        for name, entry in wanted.items():
            if name not in room.tracks:
                self._add_track(room, entry)

    def _add_track(self, room: _Room, entry: CatalogTrack) -> None:
        carried = media_codec(entry.codec)
        if carried is None:
            self.counters["not_carried"] += 1
            log.info("moq track not carried", extra={"fields": {"track": entry.name, "codec": entry.codec}})
            return
        peer, _, track = entry.name.rpartition("/")
        peer = peer or room.token_peer or DEFAULT_PEER
        if not track:
            return
        if room.token_peer is not None and peer != room.token_peer:
            # A token for peer A must not put tracks in the room as peer B (and take B's place).
            self.counters["refused_peers"] += 1
            fields = {"room": room.name, "track": entry.name, "token_peer": room.token_peer}
            log.warning("moq track refused: its peer is not the token's", extra={"fields": fields})
            return
        now = self.runtime.now()
        if peer not in room.peers:
            why = room.host.join(now, room.name, peer, room.app, room.record)
            if why is not None:
                log.warning("moq peer cannot join", extra={"fields": {"room": room.name, "peer": peer, "why": why}})
                return
            room.peers[peer] = room.host.handle(peer)
        kind = TrackKind.VIDEO if entry.video else TrackKind.AUDIO
        why = room.host.publish(now, peer, track, kind)
        if why is not None:
            log.warning("moq track cannot publish", extra={"fields": {"track": entry.name, "why": why}})
            return
        handler = _Track(room, peer, track, entry, LocToRtp(*carried))
        room.tracks[entry.name] = handler
        self.counters["tracks"] += 1
        handler.request_id = self.subscriber.subscribe(room.namespace, entry.name.encode(), handler, now)
        self.schedule_flush()

    def drop_track(self, room: _Room, name: str, reason: str) -> None:
        handler = room.tracks.pop(name, None)
        if handler is None:
            return
        self.subscriber.unsubscribe(handler.request_id)
        now = self.runtime.now()
        if handler.peer not in room.peers:
            return
        room.host.unpublish(now, handler.peer, handler.name)
        if not any(t.peer == handler.peer for t in room.tracks.values()):
            del room.peers[handler.peer]
            room.host.leave(now, handler.peer, reason)
        self.schedule_flush()

    def on_core_events(self, endpoint: Endpoint, now: float) -> None:
        while (event := endpoint.poll_event()) is not None:
            if isinstance(event, KeyframeRequested):
                self.counters["keyframe_requests"] += 1  # answered by the publisher's next group

    # -- the worker's outputs, once per loop turn ---------------------------------------------

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.runtime.flush(self.runtime.now())

    def close(self) -> None:
        for room in list(self.rooms.values()):
            self.sync(room, [])
        self.rooms.clear()
        self.subscriber.close()
        others = ConsoleRpc.of(self.runtime).others
        if self._console in others:
            others.remove(self._console)


class MoqSessions:
    """The console's view of MoQ publishers into rooms: a kick makes the peer leave the room and closes
    the MoQ session that publishes its namespace (CONNECTION_CLOSE, NO_ERROR, with the reason;
    draft-ietf-moq-transport s3.6): the room's other MoQ peers of that session leave with it."""

    def __init__(self, ingest: MoqRoomIngest) -> None:
        self.ingest = ingest

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        out = []
        for room in list(self.ingest.rooms.values()):
            if app is not None and room.app != app:
                continue
            for peer, endpoint in list(room.peers.items()):
                if not isinstance(endpoint, Endpoint):
                    continue  # joined on another worker (standalone --workers N): listed by that worker
                out.append({"app": room.app, "session": int(endpoint.session), "room": room.name, "peer": peer,
                            "transport": "moq", "connected": True, "remote": None})  # fmt: skip
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        from trackmesh.transports.moq.errors import SessionErrorCode

        ingest = self.ingest
        for room in list(ingest.rooms.values()):
            peer = next(
                (p for p, e in room.peers.items() if isinstance(e, Endpoint) and int(e.session) == session), None
            )
            if peer is None:
                continue
            # The peer leaves with the operator's reason (its last track closes its endpoint) ...
            for name in [n for n, t in room.tracks.items() if t.peer == peer]:
                ingest.drop_track(room, name, reason)
            # ... and the MoQ session publishing the room's namespace is closed, with the reason.
            for publisher, _ in list(ingest.relay.namespaces.get(room.namespace, [])):
                closer = getattr(publisher, "close", None)
                if callable(closer):
                    closer(SessionErrorCode.NO_ERROR, reason)
            return True
        return False
