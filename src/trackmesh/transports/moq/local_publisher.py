"""An in-process publisher on the relay: tracks made by code in this process (the rooms' LOC
tracks, docs/moq.md "Rooms"), not by a MoQ session. Sans-IO.

:class:`LocalPublisher` is a relay :class:`~.relay.Peer` registered as the provider of a namespace
prefix (:attr:`Relay.providers`): a SUBSCRIBE for a track under it that no session publishes
reaches :attr:`LocalPublisher.on_subscribe` as a :class:`LocalTrack`, which the owner accepts
(objects then flow with :meth:`LocalTrack.publish`) or refuses with a request error code. When
the track's last subscriber leaves, the relay cancels the upstream request:
:attr:`LocalPublisher.on_cancel`. Every later subscriber of a live track is attached by the relay
and reported through :attr:`LocalTrack.on_attach` (a room track asks for a key frame then).

Each group is one subgroup stream (subgroup 0), closed when the next group starts: the relay
caches and fans it out like any publisher's, re-framed for draft-20 subscribers.
"""

from __future__ import annotations

from collections.abc import Callable

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import PublishDoneCode
from trackmesh.transports.moq.objects import SUBGROUP_ID_EXPLICIT, ObjectRecord, SubgroupHeader, encode_object
from trackmesh.transports.moq.relay import Relay, Subscription, Track

__all__ = ["LocalPublisher", "LocalTrack"]


class LocalTrack:
    """One track of a local publisher, from the relay's SUBSCRIBE until it ends or is cancelled."""

    __slots__ = (
        "_header",
        "_previous",
        "accepted",
        "closed",
        "joined",
        "on_attach",
        "owner",
        "priority",
        "publisher",
        "request_id",
        "streams",
        "track",
    )

    def __init__(self, publisher: LocalPublisher, request_id: int, track: Track) -> None:
        self.publisher = publisher
        self.request_id = request_id
        self.track = track
        self.accepted = False
        self.closed = False
        self.joined = False  # the first object 0 was published: the track starts on a group's start
        self.priority = 128
        self.streams = 0
        self.owner: object = None  # whoever feeds it (the room bridge's tap)
        self.on_attach: Callable[[], None] | None = None
        self._header: SubgroupHeader | None = None
        self._previous: int | None = None

    @property
    def namespace(self) -> m.TrackNamespace:
        return self.track.namespace

    @property
    def name(self) -> bytes:
        return self.track.name

    @property
    def subscribers(self) -> list[Subscription]:
        return self.track.subscribers

    def accept(self, priority: int = 128) -> None:
        """The track exists: the waiting subscribers get SUBSCRIBE_OK (and :attr:`on_attach` runs
        for each, as for every later subscriber)."""
        self.accepted = True
        self.priority = priority
        self.track.on_attach = self._attached
        self.publisher.relay.upstream_ok(self.track, self.request_id)

    def refuse(self, code: int, reason: str) -> None:
        self.closed = True
        self.publisher.forget(self)
        self.publisher.relay.upstream_error(self.track, code, reason.encode())

    def _attached(self) -> None:
        if self.on_attach is not None:
            self.on_attach()

    def publish(self, group: int, object_id: int, payload: bytes, extensions: bytes | None) -> None:
        """One object; object 0 of a group starts the group's stream (closing the previous one)."""
        if self.closed or not self.accepted:
            return
        if not self.joined:
            if object_id != 0:
                return  # accepted mid-group: subscribers start on the next group's first object
            self.joined = True
        relay = self.publisher.relay
        header = self._header
        new_stream = header is None or header.group_id != group
        if new_stream:
            if header is not None:
                relay.on_stream_end(self.track, header, None)
            header = self._header = SubgroupHeader(
                self.request_id, group, 0, self.priority, extensions is not None, False, SUBGROUP_ID_EXPLICIT
            )
            self._previous = None
            self.streams += 1
        assert header is not None
        if self._previous is not None and object_id <= self._previous:
            return  # object IDs only increase within a subgroup (draft-16 s10.4.2)
        wire = encode_object(object_id, self._previous, payload, extensions=extensions)
        record = ObjectRecord(object_id, 0, extensions or b"", payload, wire, extensions is not None)
        relay.on_objects(self.track, header, [record], new_stream, self._previous)
        self._previous = object_id

    def end_group(self) -> None:
        """Close the current group's stream now (a catalog update is a whole group)."""
        if self._header is not None:
            self.publisher.relay.on_stream_end(self.track, self._header, None)
            self._header = None
            self._previous = None

    def end(self, now: float, reason: str, code: int = PublishDoneCode.TRACK_ENDED) -> None:
        """The source is gone: PUBLISH_DONE to every subscriber (after their streams' FIN)."""
        if self.closed:
            return
        self.end_group()
        self.closed = True
        self.publisher.forget(self)
        if self.accepted:
            done = m.PublishDone(self.request_id, code, self.streams, reason.encode())
            self.publisher.relay.publish_done(self.track, done, now)


class LocalPublisher:
    """A relay peer for in-process tracks under ``prefix`` (see the module's docstring)."""

    vi64 = False  # our objects are framed in draft-16 integers; the relay re-frames for draft-20
    backlog = 0

    def __init__(
        self,
        relay: Relay,
        prefix: m.TrackNamespace,
        on_subscribe: Callable[[LocalTrack], None],
        on_cancel: Callable[[LocalTrack], None],
    ) -> None:
        self.relay = relay
        self.prefix = prefix
        self.on_subscribe = on_subscribe
        self.on_cancel = on_cancel
        self.tracks: dict[int, LocalTrack] = {}
        self._next_request = 1
        self._watched: dict[int, Track] = {}
        relay.providers[prefix] = self

    def close(self) -> None:
        if self.relay.providers.get(self.prefix) is self:
            del self.relay.providers[self.prefix]

    def forget(self, local: LocalTrack) -> None:
        if self.tracks.get(local.request_id) is local:
            del self.tracks[local.request_id]

    # -- the relay's Peer (only what a publisher is asked) -------------------------------------

    def new_request_id(self) -> int | None:
        rid = self._next_request
        self._next_request += 2
        return rid

    def watch_upstream(self, request_id: int, track: Track) -> None:
        self._watched[request_id] = track

    def request(self, msg: m.Subscribe | m.Publish) -> None:
        if not isinstance(msg, m.Subscribe):
            return
        track = self._watched.pop(msg.request_id, None)
        if track is None:
            return
        local = self.tracks[msg.request_id] = LocalTrack(self, msg.request_id, track)
        self.on_subscribe(local)

    def cancel_request(self, request_id: int) -> None:
        local = self.tracks.pop(request_id, None)
        if local is not None and not local.closed:
            local.closed = True
            self.on_cancel(local)

    # A publisher is never a subscriber: the relay sends it nothing else.
    def open_uni(self) -> int:
        raise RuntimeError("a local publisher opens no streams")

    def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        pass

    def reset(self, stream_id: int, code: int) -> None:
        pass

    def send_datagram(self, data: bytes) -> None:
        pass

    def send_on(self, stream_id: int, msg: m.ControlMessage) -> None:
        pass

    def reply(self, request_id: int, msg: m.ControlMessage, final: bool = False) -> None:
        pass

    def new_alias(self) -> int:
        return 0

    def watch_downstream(self, request_id: int, sub: Subscription) -> None:
        pass

    def forget_downstream(self, request_id: int) -> None:
        pass
