"""An in-process subscriber on the relay: code in this process receiving tracks that MoQ sessions
publish (a MoQ publisher's LOC tracks into a room, docs/moq.md), not a MoQ session. Sans-IO.

:class:`LocalSubscriber` is a relay :class:`~.relay.Peer` that only subscribes:

- :meth:`watch_namespaces` registers a namespace subscription (SUBSCRIBE_NAMESPACE, namespaces
  only): the relay reports each namespace published on this node under the prefix, and its
  withdrawal, to ``on_namespace`` (not those of other nodes, which sessions hear of).
- :meth:`subscribe` sends a SUBSCRIBE through the relay (which forwards it to the publisher, or
  shares a subscription already upstream); the answer and every object reach the
  :class:`TrackHandler`. The relay writes objects as it would to a session, as draft-16 streams
  and datagrams; this peer parses them back (headers and object boundaries only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.objects import SubgroupStreamParser, decode_datagram
from trackmesh.transports.moq.relay import NamespaceSubscriber, Relay, Subscription, Track
from trackmesh.transports.moq.varint import Reader

__all__ = ["LocalSubscriber", "TrackHandler"]

_NAMESPACE_STREAM = -1  # the one namespace subscription's "stream": it only names it for the relay


class TrackHandler(Protocol):
    def on_subscribed(self) -> None: ...
    def on_refused(self, code: int, reason: str) -> None: ...
    def on_object(self, group: int, object_id: int, payload: bytes, extensions: bytes) -> None: ...
    def on_done(self, status: int, reason: str) -> None: ...


class LocalSubscriber:
    vi64 = False  # the relay frames what it sends us in draft-16 integers
    backlog = 0

    def __init__(self, relay: Relay, on_namespace: Callable[[m.TrackNamespace, bool], None]) -> None:
        self.relay = relay
        self.on_namespace = on_namespace
        self._next_request = 1
        self._next_alias = 1
        self._next_stream = 3
        self.handlers: dict[int, TrackHandler] = {}  # request ID -> handler
        self._subs: dict[int, Subscription] = {}  # request ID -> the relay's subscription
        self._by_alias: dict[int, TrackHandler] = {}
        self._streams: dict[int, tuple[bytearray, SubgroupStreamParser | None]] = {}
        self._prefixes: list[m.TrackNamespace] = []
        self.bad_streams = 0

    def watch_namespaces(self, prefix: m.TrackNamespace) -> None:
        self._prefixes.append(prefix)
        rid = self._new_id()
        # Published here only: the cluster relay exports these, the rooms ingest these.
        sub = NamespaceSubscriber(self, rid, prefix, m.NAMESPACE_OPTION_NAMESPACE, _NAMESPACE_STREAM, remote=False)
        self.relay.subscribe_namespace(sub)

    def close(self) -> None:
        self.relay.namespace_subscribers = [s for s in self.relay.namespace_subscribers if s.peer is not self]
        for rid in list(self.handlers):
            self.unsubscribe(rid)

    def subscribe(self, namespace: m.TrackNamespace, name: bytes, handler: TrackHandler, now: float) -> int:
        rid = self._new_id()
        self.handlers[rid] = handler
        self.relay.subscribe(self, m.Subscribe(rid, namespace, name, {m.PARAM_FORWARD: 1}), now)
        return rid

    def unsubscribe(self, request_id: int) -> None:
        self.handlers.pop(request_id, None)
        sub = self._subs.pop(request_id, None)
        if sub is None:
            self.relay.cancel_waiting(self, request_id)
            return
        self._by_alias.pop(sub.alias, None)
        track = self.relay.track_of(sub)
        if track is not None:
            self.relay.unsubscribe(track, sub)

    def _new_id(self) -> int:
        rid = self._next_request
        self._next_request += 2
        return rid

    # -- the relay's Peer --------------------------------------------------------------------

    def new_request_id(self) -> int | None:
        return self._new_id()

    def new_alias(self) -> int:
        alias = self._next_alias
        self._next_alias += 1
        return alias

    def open_uni(self) -> int:
        stream_id = self._next_stream
        self._next_stream += 4
        return stream_id

    def watch_downstream(self, request_id: int, sub: Subscription) -> None:
        handler = self.handlers.get(request_id)
        if handler is not None:
            self._subs[request_id] = sub
            self._by_alias[sub.alias] = handler

    def forget_downstream(self, request_id: int) -> None:
        sub = self._subs.pop(request_id, None)
        if sub is not None:
            self._by_alias.pop(sub.alias, None)

    def reply(self, request_id: int, msg: m.ControlMessage, final: bool = False) -> None:
        handler = self.handlers.get(request_id)
        if handler is None:
            return
        if isinstance(msg, m.SubscribeOk):
            handler.on_subscribed()
        elif isinstance(msg, m.RequestError):
            self.handlers.pop(request_id, None)
            handler.on_refused(msg.error_code, msg.reason.decode(errors="replace"))
        elif isinstance(msg, m.PublishDone):
            self.handlers.pop(request_id, None)
            handler.on_done(msg.status_code, msg.reason.decode(errors="replace"))

    def send_on(self, stream_id: int, msg: m.ControlMessage) -> None:
        if stream_id != _NAMESPACE_STREAM or not self._prefixes:
            return
        prefix = self._prefixes[0]
        if isinstance(msg, m.Namespace):
            self.on_namespace(prefix + msg.suffix, True)
        elif isinstance(msg, m.NamespaceDone):
            self.on_namespace(prefix + msg.suffix, False)

    def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        entry = self._streams.get(stream_id)
        if entry is None:
            entry = self._streams[stream_id] = (bytearray(), None)
        buf, parser = entry
        try:
            if parser is None:
                buf += data
                r = Reader(bytes(buf))
                try:
                    kind = r.varint()
                except Truncated:
                    return
                parser = SubgroupStreamParser(kind)
                self._streams[stream_id] = (buf, parser)
                data = bytes(buf[r.pos :])
                buf.clear()
            records = parser.feed(data)
        except MoqDecodeError:
            self.bad_streams += 1
            self._streams.pop(stream_id, None)
            return
        header = parser.header
        if header is not None and records:
            handler = self._by_alias.get(header.track_alias)
            if handler is not None:
                for rec in records:
                    handler.on_object(header.group_id, rec.object_id, rec.payload, rec.extensions)
        if fin:
            self._streams.pop(stream_id, None)

    def reset(self, stream_id: int, code: int) -> None:
        self._streams.pop(stream_id, None)

    def send_datagram(self, data: bytes) -> None:
        try:
            d = decode_datagram(data)
        except (MoqDecodeError, Truncated):
            self.bad_streams += 1
            return
        handler = self._by_alias.get(d.track_alias)
        if handler is not None and d.payload:
            handler.on_object(d.group_id, d.object_id, d.payload, d.extensions or b"")

    # A subscriber is never asked to publish.
    def request(self, msg: m.Subscribe | m.Publish) -> None:
        pass

    def cancel_request(self, request_id: int) -> None:
        pass

    def watch_upstream(self, request_id: int, track: Track) -> None:
        pass
