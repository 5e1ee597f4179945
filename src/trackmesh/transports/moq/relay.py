"""The in-memory MoQ relay shared by the sessions of one worker: namespaces, tracks, the latest-
group cache and the fan-out of objects to subscribers.

- A namespace is published by PUBLISH_NAMESPACE; a SUBSCRIBE for a track under it (the longest
  published prefix wins) is forwarded upstream once, and every later subscriber of that track
  shares the one upstream subscription (draft-16 s8: a relay aggregates subscriptions).
- A track is also created by a publisher's PUBLISH, with no subscriber needed.
- Objects are forwarded as the bytes they arrived in (:attr:`ObjectRecord.wire`): each downstream
  stream gets its own header (its own Track Alias) and then the same object bytes, so a payload
  is never parsed or copied per subscriber.
- The cache keeps the newest ``cache_groups`` groups of each track: a new subscriber with the
  Largest Object filter starts at the current group (the whole group so far), and FETCH reads
  from it.

The relay never reads a clock: the session passes ``now`` into every call that starts a wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode, StreamResetCode, Truncated
from trackmesh.transports.moq.objects import (
    FETCH_HEADER,
    Datagram,
    FetchObject,
    ObjectRecord,
    SubgroupHeader,
    encode_datagram,
    encode_fetch_object,
    encode_fetch_objects_vi64,
    encode_subgroup_header,
    transcode_extensions,
    transcode_objects,
)
from trackmesh.transports.moq.varint import Reader, encode_varint, encode_vi64

__all__ = ["Peer", "Relay", "RelayStats", "Subscription", "Track"]

UNKNOWN_STREAM_COUNT = (1 << 62) - 1
#: A subscriber with more than this many bytes queued toward it (``Peer.backlog``, measured by the
#: driver) loses its older groups when a new group starts: their streams are reset with
#: TOO_FAR_BEHIND (draft-16 s13.1.4), so the new group goes out first and others are unaffected.
BACKLOG_LIMIT = 1 << 20
UPSTREAM_TIMEOUT = 5.0  # seconds a forwarded SUBSCRIBE may wait for its answer
DONE_GRACE = 2.0  # seconds PUBLISH_DONE may wait for the upstream streams it counts


class Peer(Protocol):
    """What the relay needs of a session (implemented by :class:`~.session.ServerSession`)."""

    @property
    def vi64(self) -> bool:
        """True at draft-20 (vi64 integers on data streams), False at draft-16."""
        ...

    @property
    def backlog(self) -> int:
        """Bytes written toward this peer and not yet acknowledged (the driver's measure)."""
        ...

    def open_uni(self) -> int: ...
    def write(self, stream_id: int, data: bytes, fin: bool = False) -> None: ...
    def reset(self, stream_id: int, code: int) -> None: ...
    def send_datagram(self, data: bytes) -> None: ...
    def send_on(self, stream_id: int, msg: m.ControlMessage) -> None: ...
    def reply(self, request_id: int, msg: m.ControlMessage, final: bool = False) -> None: ...
    def request(self, msg: m.Subscribe | m.Publish) -> None: ...
    def cancel_request(self, request_id: int) -> None: ...
    def new_request_id(self) -> int | None: ...
    def new_alias(self) -> int: ...
    def watch_upstream(self, request_id: int, track: Track) -> None: ...
    def watch_downstream(self, request_id: int, sub: Subscription) -> None: ...
    def forget_downstream(self, request_id: int) -> None: ...


class RelayStats:
    __slots__ = ("datagrams", "groups_dropped", "objects_in", "objects_out", "streams_out")

    def __init__(self) -> None:
        self.objects_in = 0
        self.objects_out = 0  # object copies written to subscribers
        self.streams_out = 0
        self.datagrams = 0
        self.groups_dropped = 0  # old-group streams reset toward a subscriber that fell behind


@dataclass(eq=False, slots=True)
class Subscription:
    """One downstream subscriber of a track."""

    peer: Peer
    request_id: int
    alias: int
    start_group: int
    forward: bool = True
    active: bool = False  # SUBSCRIBE_OK / PUBLISH_OK done: objects may flow
    streams: dict[tuple[int, int], int] = field(default_factory=dict)  # (group, subgroup) -> stream
    streams_opened: int = 0
    via_publish: bool = False  # the relay's PUBLISH to a namespace subscriber


@dataclass(eq=False, slots=True)
class CachedSubgroup:
    header: SubgroupHeader
    body: bytearray = field(default_factory=bytearray)  # the objects as they arrived
    other: bytearray | None = None  # the same in the other draft's integers, once a subscriber needs it
    objects: list[ObjectRecord] = field(default_factory=list)
    closed: bool = False


@dataclass(eq=False, slots=True)
class Waiter:
    peer: Peer
    request_id: int
    params: m.Params


@dataclass(eq=False, slots=True)
class Rendezvous:
    """A SUBSCRIBE with RENDEZVOUS_TIMEOUT (draft-20 s10.2.4) waiting for its publisher."""

    peer: Peer
    msg: m.Subscribe
    deadline: float


@dataclass(eq=False, slots=True)
class Track:
    namespace: m.TrackNamespace
    name: bytes
    publisher: Peer
    upstream_request_id: int
    vi64: bool = False  # the publisher's draft-20 integers
    upstream_alias: int | None = None
    live: bool = False
    from_publish: bool = False
    #: Opened with no subscriber (Relay.open_track): offered to the namespace subscribers once live.
    offered: bool = False
    subscribers: list[Subscription] = field(default_factory=list)
    waiting: list[Waiter] = field(default_factory=list)
    groups: dict[int, dict[int, CachedSubgroup]] = field(default_factory=dict)
    largest: tuple[int, int] | None = None
    upstream_streams: int = 0
    done: m.PublishDone | None = None
    done_deadline: float = 0.0
    wait_deadline: float = 0.0
    #: Called when a subscriber attaches to the live track (an in-process publisher asks its source
    #: for a key frame then: local_publisher.py).
    on_attach: Callable[[], None] | None = None

    @property
    def key(self) -> tuple[m.TrackNamespace, bytes]:
        return (self.namespace, self.name)


@dataclass(eq=False, slots=True)
class NamespaceSubscriber:
    peer: Peer
    request_id: int
    prefix: m.TrackNamespace
    options: int
    stream_id: int
    allows: Callable[[m.TrackNamespace], bool] = lambda _: True  # the session's may_subscribe
    #: Also told of namespaces published on other nodes (Relay.remote_namespaces). The cluster
    #: relay's own watcher is not: it exports what is published here, and only that.
    remote: bool = True

    def wants_namespaces(self) -> bool:
        return self.options in (m.NAMESPACE_OPTION_NAMESPACE, m.NAMESPACE_OPTION_BOTH)

    def wants_tracks(self) -> bool:
        return self.options in (m.NAMESPACE_OPTION_PUBLISH, m.NAMESPACE_OPTION_BOTH)


def _has_prefix(namespace: m.TrackNamespace, prefix: m.TrackNamespace) -> bool:
    return namespace[: len(prefix)] == prefix


class Relay:
    def __init__(self, cache_groups: int = 8) -> None:
        self.rendezvous: list[Rendezvous] = []
        self.cache_groups = max(1, cache_groups)
        self.namespaces: dict[m.TrackNamespace, list[tuple[Peer, int]]] = {}
        self.tracks: dict[tuple[m.TrackNamespace, bytes], Track] = {}
        self.namespace_subscribers: list[NamespaceSubscriber] = []
        #: In-process publishers of namespace prefixes (the rooms' ``("trackmesh",)``): asked for
        #: a track when no session published a longer prefix of its namespace; never announced.
        self.providers: dict[m.TrackNamespace, Peer] = {}
        #: Namespaces published on other nodes of the cluster (cluster_relay.py), announced to
        #: namespace subscribers like those published here; a SUBSCRIBE reaches them through a provider.
        self.remote_namespaces: set[m.TrackNamespace] = set()
        #: Told of each publisher-initiated track (PUBLISH) as it starts (True) and goes (False):
        #: the cluster relay makes it subscribable, and offered, on the other nodes.
        self.on_published_track: Callable[[m.TrackNamespace, bytes, bool], None] | None = None
        #: Told of each session's namespace subscription that asks for tracks (the PUBLISH option,
        #: SUBSCRIBE_TRACKS): the cluster relay opens the matching tracks of other nodes for it.
        self.on_track_subscriber: Callable[[NamespaceSubscriber], None] | None = None
        self.stats = RelayStats()

    # -- namespaces ------------------------------------------------------------------------

    def publish_namespace(self, peer: Peer, request_id: int, namespace: m.TrackNamespace, now: float) -> None:
        entries = self.namespaces.setdefault(namespace, [])
        first = not entries
        entries.append((peer, request_id))
        if first:
            self._tell_namespace(namespace, gone=False, remote_too=namespace not in self.remote_namespaces)
        self._retry_rendezvous(lambda w: _has_prefix(w.msg.namespace, namespace), now)

    def _retry_rendezvous(self, matches: Callable[[Rendezvous], bool], now: float) -> None:
        ready = [w for w in self.rendezvous if matches(w)]
        for waiter in ready:
            self.rendezvous.remove(waiter)
            self.subscribe(waiter.peer, waiter.msg, now, rendezvous=False)

    def cancel_waiting(self, peer: Peer, request_id: int) -> None:
        """A subscriber cancelled a SUBSCRIBE that is still waiting (for its publisher or its answer)."""
        self.rendezvous = [w for w in self.rendezvous if not (w.peer is peer and w.msg.request_id == request_id)]
        for track in list(self.tracks.values()):
            track.waiting = [w for w in track.waiting if not (w.peer is peer and w.request_id == request_id)]

    def track_of(self, sub: Subscription) -> Track | None:
        for track in self.tracks.values():
            if sub in track.subscribers:
                return track
        return None

    def publish_namespace_done(self, peer: Peer, request_id: int) -> bool:
        for namespace, entries in list(self.namespaces.items()):
            for entry in entries:
                if entry[0] is peer and entry[1] == request_id:
                    entries.remove(entry)
                    if not entries:
                        self._namespace_gone(namespace)
                    return True
        return False

    def _namespace_gone(self, namespace: m.TrackNamespace) -> None:
        del self.namespaces[namespace]
        self._tell_namespace(namespace, gone=True, remote_too=namespace not in self.remote_namespaces)

    def _tell_namespace(self, namespace: m.TrackNamespace, gone: bool, remote_too: bool, local: bool = True) -> None:
        """NAMESPACE (or NAMESPACE_DONE) to the namespace subscribers of a prefix of ``namespace``:
        ``local`` ones hear of namespaces published here, ``remote`` ones of those published anywhere
        (``remote_too``: the namespace appears, or disappears, for the whole cluster)."""
        for ns_sub in self.namespace_subscribers:
            if not (remote_too if ns_sub.remote else local):
                continue
            if ns_sub.wants_namespaces() and _has_prefix(namespace, ns_sub.prefix) and ns_sub.allows(namespace):
                suffix = namespace[len(ns_sub.prefix) :]
                ns_sub.peer.send_on(ns_sub.stream_id, m.NamespaceDone(suffix) if gone else m.Namespace(suffix))

    def remote_namespace(self, namespace: m.TrackNamespace, live: bool) -> None:
        """A namespace now published (``live``), or no longer published, on some other node."""
        if live == (namespace in self.remote_namespaces):
            return
        if live:
            self.remote_namespaces.add(namespace)
        else:
            self.remote_namespaces.discard(namespace)
        if namespace not in self.namespaces:
            self._tell_namespace(namespace, gone=not live, remote_too=True, local=False)

    def namespace_publisher(self, namespace: m.TrackNamespace) -> Peer | None:
        """The publisher of the longest published prefix of ``namespace``."""
        for size in range(len(namespace), 0, -1):
            entries = self.namespaces.get(namespace[:size])
            if entries:
                return entries[0][0]
        for size in range(len(namespace), 0, -1):
            provider = self.providers.get(namespace[:size])
            if provider is not None:
                return provider
        return None

    def subscribe_namespace(self, ns_sub: NamespaceSubscriber) -> None:
        for other in self.namespace_subscribers:
            if (
                other.peer is ns_sub.peer
                and other.options == ns_sub.options
                and (_has_prefix(other.prefix, ns_sub.prefix) or _has_prefix(ns_sub.prefix, other.prefix))
            ):
                ns_sub.peer.send_on(
                    ns_sub.stream_id,
                    m.RequestError(ns_sub.request_id, RequestErrorCode.PREFIX_OVERLAP, 0, b"prefix overlap"),
                )
                return
        self.namespace_subscribers.append(ns_sub)
        ns_sub.peer.send_on(ns_sub.stream_id, m.RequestOk(ns_sub.request_id))
        if ns_sub.wants_namespaces():
            known = [*self.namespaces, *(self.remote_namespaces - self.namespaces.keys() if ns_sub.remote else ())]
            for namespace in known:
                if _has_prefix(namespace, ns_sub.prefix) and ns_sub.allows(namespace):
                    ns_sub.peer.send_on(ns_sub.stream_id, m.Namespace(namespace[len(ns_sub.prefix) :]))
        if ns_sub.wants_tracks():
            for track in list(self.tracks.values()):
                live = track.live and track.done is None
                if live and _has_prefix(track.namespace, ns_sub.prefix) and ns_sub.allows(track.namespace):
                    self._offer(track, ns_sub.peer)
            if ns_sub.remote and self.on_track_subscriber is not None:
                self.on_track_subscriber(ns_sub)

    def unsubscribe_namespace(self, peer: Peer, stream_id: int) -> None:
        self.namespace_subscribers = [
            s for s in self.namespace_subscribers if not (s.peer is peer and s.stream_id == stream_id)
        ]

    def _offer(self, track: Track, peer: Peer) -> None:
        """A PUBLISH of ``track`` to a namespace subscriber (draft-16 s9.25: PUBLISH answers)."""
        if peer is track.publisher or any(s.peer is peer for s in track.subscribers):
            return
        request_id = peer.new_request_id()
        if request_id is None:
            return  # the subscriber's MAX_REQUEST_ID is used up: it can SUBSCRIBE itself
        sub = Subscription(peer, request_id, peer.new_alias(), self._start_group(track), via_publish=True)
        track.subscribers.append(sub)
        peer.watch_downstream(request_id, sub)
        params: m.Params = {}
        if track.largest is not None:
            params[m.PARAM_LARGEST_OBJECT] = encode_varint(track.largest[0]) + encode_varint(track.largest[1])
        peer.request(m.Publish(request_id, track.namespace, track.name, sub.alias, params))

    def _offer_all(self, track: Track) -> None:
        """Offer ``track`` to every namespace subscriber that asked for the tracks under it."""
        for ns_sub in self.namespace_subscribers:
            if ns_sub.wants_tracks() and _has_prefix(track.namespace, ns_sub.prefix) and ns_sub.allows(track.namespace):
                self._offer(track, ns_sub.peer)

    def open_track(self, namespace: m.TrackNamespace, name: bytes, now: float) -> bool:
        """Subscribe upstream to a track no one has subscribed to yet, to offer it to the namespace
        subscribers once it is live (draft-16, track discovery: the receiver of a SUBSCRIBE_NAMESPACE
        sends the relevant PUBLISH messages for the namespace; here, for the cluster relay, a track
        published on another node). Nothing is opened when the track is already here (a live one was offered), or when
        nothing publishes its namespace."""
        if (namespace, name) in self.tracks:
            return False
        publisher = self.namespace_publisher(namespace)
        upstream_id = publisher.new_request_id() if publisher is not None else None
        if publisher is None or upstream_id is None:
            return False
        track = Track(namespace, name, publisher, upstream_id, publisher.vi64, wait_deadline=now + UPSTREAM_TIMEOUT)
        track.offered = True
        self.tracks[track.key] = track
        publisher.watch_upstream(upstream_id, track)
        publisher.request(m.Subscribe(upstream_id, namespace, name, {m.PARAM_FORWARD: 1}))
        return True

    def _release_unwatched(self, track: Track) -> None:
        """A track opened for offers that nobody took: its upstream subscription ends."""
        if not track.subscribers and not track.waiting and not track.from_publish and track.done is None:
            track.publisher.cancel_request(track.upstream_request_id)
            self._drop(track)

    def publish_accepted(self, track: Track, sub: Subscription, forward: bool) -> None:
        sub.forward = forward
        sub.active = True
        self._replay(track, sub)

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, peer: Peer, msg: m.Subscribe, now: float, rendezvous: bool = True) -> None:
        track = self.tracks.get((msg.namespace, msg.name))
        if track is not None and track.done is None and track.live:
            self._attach(track, peer, msg.request_id, msg.params)
            return
        if track is not None and track.done is None:
            track.waiting.append(Waiter(peer, msg.request_id, msg.params))
            return
        publisher = self.namespace_publisher(msg.namespace)
        if publisher is None or publisher is peer:
            wait = msg.params.get(m.PARAM_RENDEZVOUS_TIMEOUT)
            if rendezvous and isinstance(wait, int) and wait > 0:
                self.rendezvous.append(Rendezvous(peer, msg, now + min(wait, 60_000) / 1000))
                return
            error = m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such track")
            peer.reply(msg.request_id, error, final=True)
            return
        upstream_id = publisher.new_request_id()
        if upstream_id is None:
            error = m.RequestError(msg.request_id, RequestErrorCode.TIMEOUT, 1000, b"publisher busy")
            peer.reply(msg.request_id, error, final=True)
            return
        track = Track(
            msg.namespace, msg.name, publisher, upstream_id, publisher.vi64, wait_deadline=now + UPSTREAM_TIMEOUT
        )
        track.waiting.append(Waiter(peer, msg.request_id, msg.params))
        self.tracks[track.key] = track
        publisher.watch_upstream(upstream_id, track)
        publisher.request(m.Subscribe(upstream_id, msg.namespace, msg.name, {m.PARAM_FORWARD: 1}))

    def _start_group(self, track: Track, params: m.Params | None = None) -> int:
        latest = max(track.groups) if track.groups else (track.largest[0] if track.largest else 0)
        raw = (params or {}).get(m.PARAM_SUBSCRIPTION_FILTER)
        if isinstance(raw, bytes) and raw:
            kind = raw[0]
            if kind == m.FILTER_NEXT_GROUP_START:
                return latest + 1 if track.largest is not None else 0
            if kind in (m.FILTER_ABSOLUTE_START, m.FILTER_ABSOLUTE_RANGE) and len(raw) > 1:
                try:
                    return Reader(raw, 1).varint()
                except Truncated:
                    return latest
        return latest  # Largest Object: start at the current group (served from the cache)

    def _attach(self, track: Track, peer: Peer, request_id: int, params: m.Params) -> None:
        sub = Subscription(peer, request_id, peer.new_alias(), self._start_group(track, params))
        forward = params.get(m.PARAM_FORWARD, 1)
        sub.forward = forward != 0
        sub.active = True
        track.subscribers.append(sub)
        peer.watch_downstream(request_id, sub)
        ok_params: m.Params = {m.PARAM_EXPIRES: 0}
        if track.largest is not None:
            ok_params[m.PARAM_LARGEST_OBJECT] = encode_varint(track.largest[0]) + encode_varint(track.largest[1])
        peer.reply(request_id, m.SubscribeOk(request_id, sub.alias, ok_params))
        self._replay(track, sub)
        if track.on_attach is not None:
            track.on_attach()

    def _replay(self, track: Track, sub: Subscription) -> None:
        """Send the cached groups the subscription covers (its start group on)."""
        if not sub.forward:
            return
        for group_id in sorted(track.groups):
            if group_id < sub.start_group:
                continue
            for subgroup_id, cached in track.groups[group_id].items():
                stream_id = self._open(sub, cached.header, group_id, subgroup_id)
                sub.peer.write(stream_id, self._body(track, cached, sub.peer.vi64), fin=cached.closed)
                self.stats.objects_out += len(cached.objects)
                if cached.closed:
                    del sub.streams[(group_id, subgroup_id)]

    def _open(self, sub: Subscription, header: SubgroupHeader, group_id: int, subgroup_id: int) -> int:
        """A stream to ``sub`` for one subgroup, with its header (the subscriber's alias)."""
        stream_id = sub.peer.open_uni()
        sub.streams[(group_id, subgroup_id)] = stream_id
        sub.streams_opened += 1
        self.stats.streams_out += 1
        down = SubgroupHeader(
            sub.alias,
            group_id,
            header.subgroup_id,
            header.publisher_priority,
            header.extensions_present,
            header.end_of_group,
            header.subgroup_id_mode,
            header.first_object,
        )
        sub.peer.write(stream_id, encode_subgroup_header(down, sub.peer.vi64))
        return stream_id

    def upstream_ok(self, track: Track, alias: int) -> None:
        track.upstream_alias = alias
        track.live = True
        for waiter in track.waiting:
            self._attach(track, waiter.peer, waiter.request_id, waiter.params)
        track.waiting.clear()
        if track.offered:
            self._offer_all(track)
            self._release_unwatched(track)  # its namespace subscribers left meanwhile

    def upstream_error(self, track: Track, code: int, reason: bytes) -> None:
        for waiter in track.waiting:
            waiter.peer.reply(waiter.request_id, m.RequestError(waiter.request_id, code, 0, reason), final=True)
        track.waiting.clear()
        self._drop(track)

    def unsubscribe(self, track: Track, sub: Subscription) -> None:
        if sub in track.subscribers:
            track.subscribers.remove(sub)
        for stream_id in sub.streams.values():
            sub.peer.reset(stream_id, StreamResetCode.CANCELLED)
        sub.streams.clear()
        sub.peer.forget_downstream(sub.request_id)
        self._release_unwatched(track)

    def _drop(self, track: Track) -> None:
        if self.tracks.get(track.key) is track:
            del self.tracks[track.key]
            if track.from_publish and self.on_published_track is not None:
                self.on_published_track(track.namespace, track.name, False)

    # -- publisher-initiated tracks --------------------------------------------------------

    def publish(self, peer: Peer, msg: m.Publish, now: float) -> Track | None:
        """A publisher's PUBLISH; None when the track is already published by someone else."""
        existing = self.tracks.get((msg.namespace, msg.name))
        if existing is not None and existing.done is None:
            return None
        if existing is not None:
            self._drop(existing)  # ended, its subscribers told: the new PUBLISH replaces it
        track = Track(msg.namespace, msg.name, peer, msg.request_id, peer.vi64, msg.track_alias, True, True)
        self.tracks[track.key] = track
        if self.on_published_track is not None:
            self.on_published_track(track.namespace, track.name, True)
        self._offer_all(track)
        self._retry_rendezvous(lambda w: (w.msg.namespace, w.msg.name) == track.key, now)
        return track

    # -- data --------------------------------------------------------------------------------

    def on_objects(
        self,
        track: Track,
        header: SubgroupHeader,
        objects: list[ObjectRecord],
        new_stream: bool,
        previous_id: int | None = None,
    ) -> None:
        """Objects of one upstream subgroup stream (``new_stream``: its first batch;
        ``previous_id``: the object before them on that stream)."""
        group_id = header.group_id
        subgroup_id = header.subgroup_id if header.subgroup_id is not None else 0
        if new_stream:
            track.upstream_streams += 1
        self.stats.objects_in += len(objects)
        if objects:
            last = (group_id, objects[-1].object_id)
            if track.largest is None or last > track.largest:
                track.largest = last
        cached = self._cache(track, header, group_id, subgroup_id)
        chunk = b"".join(o.wire for o in objects) if len(objects) != 1 else objects[0].wire
        other: bytes | None = None  # the same objects in the other draft's integers, made once if needed
        if cached is not None:
            cached.body += chunk
            if cached.other is not None:
                other = transcode_objects(objects, previous_id, not track.vi64, track.vi64)
                cached.other += other
            cached.objects.extend(objects)
        for sub in track.subscribers:
            if not sub.active or not sub.forward or group_id < sub.start_group:
                continue
            stream_id = sub.streams.get((group_id, subgroup_id))
            if stream_id is None:
                if not new_stream and cached is None:
                    continue  # joined mid-subgroup of an uncached group: wait for the next one
                if sub.peer.backlog > BACKLOG_LIMIT:
                    self._drop_behind(sub, group_id)
                stream_id = self._open(sub, header, group_id, subgroup_id)
                if cached is not None:
                    sub.peer.write(stream_id, self._body(track, cached, sub.peer.vi64))
                    self.stats.objects_out += len(cached.objects)
                    continue
            if not chunk:
                continue
            if sub.peer.vi64 == track.vi64:
                sub.peer.write(stream_id, chunk)
            else:
                if other is None:
                    other = transcode_objects(objects, previous_id, not track.vi64, track.vi64)
                sub.peer.write(stream_id, other)
            self.stats.objects_out += len(objects)
        self._maybe_done(track, None)

    def _drop_behind(self, sub: Subscription, group_id: int) -> None:
        """A congested subscriber: reset its streams of groups older than ``group_id``."""
        for key in [k for k in sub.streams if k[0] < group_id]:
            sub.peer.reset(sub.streams.pop(key), StreamResetCode.TOO_FAR_BEHIND)
            self.stats.groups_dropped += 1

    def _body(self, track: Track, cached: CachedSubgroup, vi64: bool) -> bytes:
        """A cached subgroup's objects so far, in the subscriber's integers."""
        if vi64 == track.vi64:
            return bytes(cached.body)
        if cached.other is None:
            cached.other = bytearray(transcode_objects(cached.objects, None, vi64, track.vi64))
        return bytes(cached.other)

    def _cache(self, track: Track, header: SubgroupHeader, group_id: int, subgroup_id: int) -> CachedSubgroup | None:
        group = track.groups.get(group_id)
        if group is None:
            if track.groups and group_id < min(track.groups):
                return None  # older than everything cached: forward, don't keep
            group = track.groups[group_id] = {}
            while len(track.groups) > self.cache_groups:
                del track.groups[min(track.groups)]
            if group_id not in track.groups:
                return None
        cached = group.get(subgroup_id)
        if cached is None:
            cached = group[subgroup_id] = CachedSubgroup(header)
        return cached

    def on_stream_end(self, track: Track, header: SubgroupHeader, reset: int | None) -> None:
        group_id = header.group_id
        subgroup_id = header.subgroup_id if header.subgroup_id is not None else 0
        cached = track.groups.get(group_id, {}).get(subgroup_id)
        if cached is not None:
            cached.closed = reset is None
        for sub in track.subscribers:
            stream_id = sub.streams.pop((group_id, subgroup_id), None)
            if stream_id is None:
                continue
            if reset is None:
                sub.peer.write(stream_id, b"", fin=True)
            else:
                sub.peer.reset(stream_id, reset)
        self._maybe_done(track, None)

    def on_datagram(self, track: Track, d: Datagram) -> None:
        self.stats.datagrams += 1
        last = (d.group_id, d.object_id)
        if track.largest is None or last > track.largest:
            track.largest = last
        for sub in track.subscribers:
            if sub.active and sub.forward and d.group_id >= sub.start_group:
                d.track_alias = sub.alias
                sub.peer.send_datagram(encode_datagram(d, sub.peer.vi64))
                self.stats.objects_out += 1

    # -- FETCH -------------------------------------------------------------------------------

    def fetch_objects(
        self, track: Track, start: tuple[int, int], end: tuple[int, int] | None
    ) -> list[tuple[int, int, SubgroupHeader, ObjectRecord]]:
        """Cached objects from ``start`` up to ``end`` (inclusive; None: everything)."""
        out = []
        for group_id in sorted(track.groups):
            for subgroup_id, cached in sorted(track.groups[group_id].items()):
                for obj in cached.objects:
                    loc = (group_id, obj.object_id)
                    if loc >= start and (end is None or loc <= end):
                        out.append((group_id, subgroup_id, cached.header, obj))
        out.sort(key=lambda item: (item[0], item[3].object_id))
        return out

    def serve_fetch(
        self,
        peer: Peer,
        request_id: int,
        track: Track,
        objects: list[tuple[int, int, SubgroupHeader, ObjectRecord]],
    ) -> None:
        """A FETCH_HEADER stream with ``objects``, in the fetcher's draft (FETCH carries no Object
        Status: draft-16 s10.4.4)."""
        enc = encode_vi64 if peer.vi64 else encode_varint
        body = bytearray(enc(FETCH_HEADER) + enc(request_id))
        fetched = []
        for group_id, subgroup_id, header, obj in objects:
            if obj.status != 0:
                continue
            priority = header.publisher_priority if header.publisher_priority is not None else 128
            ext = obj.extensions if header.extensions_present else None
            if ext is not None and track.vi64 != peer.vi64:
                ext = transcode_extensions(ext, track.vi64, peer.vi64)
            fetched.append(FetchObject(group_id, subgroup_id, obj.object_id, priority, obj.payload, ext))
        if peer.vi64:
            body += encode_fetch_objects_vi64(fetched)
        else:
            body += b"".join(encode_fetch_object(o) for o in fetched)
        peer.write(peer.open_uni(), bytes(body), fin=True)

    # -- endings -----------------------------------------------------------------------------

    def publish_done(self, track: Track, msg: m.PublishDone, now: float) -> None:
        track.done = msg
        track.done_deadline = now + DONE_GRACE
        self._maybe_done(track, None)

    def _maybe_done(self, track: Track, now: float | None) -> None:
        done = track.done
        if done is None:
            return
        counted = done.stream_count == UNKNOWN_STREAM_COUNT or track.upstream_streams >= done.stream_count
        if not counted and (now is None or now < track.done_deadline):
            return
        if any(sub.streams for sub in track.subscribers) and (now is None or now < track.done_deadline):
            return  # streams still open downstream: their FIN comes first
        self._finish(track, done.status_code, done.reason)

    def _finish(self, track: Track, status: int, reason: bytes) -> None:
        for sub in track.subscribers:
            for stream_id in sub.streams.values():
                sub.peer.write(stream_id, b"", fin=True)
            sub.streams.clear()
            if sub.active:
                sub.peer.reply(sub.request_id, m.PublishDone(sub.request_id, status, sub.streams_opened, reason), True)
            sub.peer.forget_downstream(sub.request_id)
        track.subscribers.clear()
        for waiter in track.waiting:
            error = m.RequestError(waiter.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, reason)
            waiter.peer.reply(waiter.request_id, error, final=True)
        track.waiting.clear()
        self._drop(track)

    def timer(self, now: float) -> None:
        for waiter in [w for w in self.rendezvous if now >= w.deadline]:
            self.rendezvous.remove(waiter)
            rid = waiter.msg.request_id
            waiter.peer.reply(rid, m.RequestError(rid, RequestErrorCode.TIMEOUT, 0, b"no publisher in time"), True)
        for track in list(self.tracks.values()):
            if track.offered and not track.live and not track.waiting and now >= track.wait_deadline:
                self._release_unwatched(track)  # opened for offers, and never answered
            elif track.waiting and not track.live and now >= track.wait_deadline:
                for w in track.waiting:
                    error = m.RequestError(w.request_id, RequestErrorCode.TIMEOUT, 0, b"publisher did not answer")
                    w.peer.reply(w.request_id, error, final=True)
                track.waiting.clear()
                if not track.subscribers:
                    track.publisher.cancel_request(track.upstream_request_id)
                    self._drop(track)
            elif track.done is not None:
                self._maybe_done(track, now)

    def peer_gone(self, peer: Peer) -> None:
        """A session ended: its namespaces, tracks, subscriptions and namespace subscriptions."""
        self.namespace_subscribers = [s for s in self.namespace_subscribers if s.peer is not peer]
        self.rendezvous = [w for w in self.rendezvous if w.peer is not peer]
        for namespace, entries in list(self.namespaces.items()):
            entries[:] = [e for e in entries if e[0] is not peer]
            if not entries:
                self._namespace_gone(namespace)
        for track in list(self.tracks.values()):
            if track.publisher is peer:
                track.subscribers = [s for s in track.subscribers if s.peer is not peer]
                track.waiting = [w for w in track.waiting if w.peer is not peer]
                self._finish(track, PublishDoneCode.GOING_AWAY, b"publisher left")
                continue
            if track.offered and not track.live and not any(w.peer is peer for w in track.waiting):
                continue  # opened for namespace subscribers, none yet: offered once live
            for sub in [s for s in track.subscribers if s.peer is peer]:
                track.subscribers.remove(sub)
            track.waiting = [w for w in track.waiting if w.peer is not peer]
            if not track.subscribers and not track.waiting and not track.from_publish and track.done is None:
                track.publisher.cancel_request(track.upstream_request_id)
                self._drop(track)
