"""One MoQ session in the server role, sans-IO, at draft-16 or draft-20 (21 and 22 are
wire-identical to 20).

Fed stream bytes, resets, datagrams and ``now``; drained of :data:`Output` items (stream writes,
resets, datagrams, a close). The driver owns the transport and gives the session functions that
open server-initiated streams.

- Draft-16: the first client bidi stream is the control stream (CLIENT_SETUP, then every request
  and reply) except that SUBSCRIBE_NAMESPACE has its own bidi stream (s9.25) carrying its
  REQUEST_OK, NAMESPACE and NAMESPACE_DONE. Cancellations are messages (UNSUBSCRIBE,
  PUBLISH_NAMESPACE_DONE). MAX_REQUEST_ID bounds requests both ways: we grant
  ``request_window`` and raise it when half is used; one past it is TOO_MANY_REQUESTS.
- Draft-20: each side opens a unidirectional control stream that starts with SETUP and carries
  only GOAWAY after it. Every request opens a bidi stream of its own that carries its replies
  (with no Request ID), later PUBLISH_DONE, and NAMESPACE messages; resetting it cancels the
  request. Requests we make (a SUBSCRIBE upstream, a PUBLISH to a SUBSCRIBE_TRACKS subscriber)
  open server bidi streams.
- Request IDs: the client's are even, ours odd; a repeated or odd one closes the session with
  INVALID_REQUEST_ID.
- Track aliases: the publisher picks them (SUBSCRIBE_OK, PUBLISH); a duplicate closes with
  DUPLICATE_TRACK_ALIAS. Downstream aliases are ours, one counter per session.
- A malformed message closes the session with PROTOCOL_VIOLATION and the reason: nothing a peer
  sends raises out of :meth:`ServerSession.stream_data`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from trackmesh.transports.moq import codec16, codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.auth import Anonymous, Authorizer, authorization_token
from trackmesh.transports.moq.datastreams import DataStreams
from trackmesh.transports.moq.errors import (
    MoqDecodeError,
    RequestErrorCode,
    SessionError,
    SessionErrorCode,
    StreamResetCode,
    Truncated,
)
from trackmesh.transports.moq.fetch import answer_fetch
from trackmesh.transports.moq.objects import decode_datagram
from trackmesh.transports.moq.relay import NamespaceSubscriber, Relay, Subscription, Track
from trackmesh.transports.moq.varint import Reader, encode_varint

__all__ = ["Anonymous", "Authorizer", "CloseSession", "Output", "ServerSession", "StreamReset", "StreamWrite"]

log = logging.getLogger("trackmesh.moq")

IMPLEMENTATION = b"trackmesh"
MAX_CONTROL_BUFFER = 1 << 17
#: Draft-20 requests: the message types that may open a request stream.
_REQUESTS = (
    m.Subscribe,
    m.PublishNamespace,
    m.SubscribeNamespace,
    m.SubscribeTracks,
    m.Publish,
    m.TrackStatus,
    m.Fetch,
)


@dataclass(slots=True)
class StreamWrite:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(slots=True)
class StreamReset:
    stream_id: int
    code: int
    stop_sending: bool = False  # also ask the peer to stop (an incoming stream we refuse or cancel)


@dataclass(slots=True)
class DatagramOut:
    data: bytes


@dataclass(slots=True)
class CloseSession:
    code: int
    reason: str


Output = StreamWrite | StreamReset | DatagramOut | CloseSession


class SessionStats:
    __slots__ = ("control_messages", "dropped_datagrams")

    def __init__(self) -> None:
        self.control_messages = 0
        self.dropped_datagrams = 0


class ServerSession:
    def __init__(
        self,
        relay: Relay,
        open_uni: Callable[[], int],
        *,
        draft: int = 16,
        open_bidi: Callable[[], int] | None = None,
        authorizer: Authorizer | None = None,
        request_window: int = 100,
        on_output: Callable[[], None] | None = None,
        path: str = "",
    ) -> None:
        if draft not in (16, 20, 22):
            raise ValueError(f"unsupported MoQ draft {draft}")
        self.relay = relay
        self.draft = draft
        self.vi64 = draft >= 18
        typed = draft >= 22
        self._split: Callable[[bytes | bytearray], tuple[int, bytes, int] | None]
        self._encode: Callable[[m.ControlMessage], bytes]
        self._decode: Callable[[int, bytes, int], m.ControlMessage]
        if self.vi64:
            self._split = codec20.split_message
            self._encode = lambda msg: codec20.encode_message(msg, typed)
            self._decode = lambda kind, payload, rid: codec20.decode_message(kind, payload, rid, typed)
        else:
            self._split = codec16.split_message
            self._encode = codec16.encode_message
            self._decode = lambda kind, payload, _: codec16.decode_message(kind, payload)
        self._open_uni = open_uni
        self._open_bidi = open_bidi
        self.authorizer = authorizer or Authorizer()
        self.path = path  # a WebTransport session's URL path and query (raw QUIC: the PATH parameter)
        self.backlog = 0  # bytes queued toward the peer, set by the driver (relay.BACKLOG_LIMIT)
        self.request_window = request_window
        self.on_output = on_output
        self.stats = SessionStats()
        self.data_streams = DataStreams(relay, self.vi64, self._alias_track, self._refuse_stream)
        self.out: list[Output] = []
        self.closed = False
        self.setup_done = False
        self.client_params: m.Params = {}
        self.now = 0.0
        self._control: int | None = None  # d16: the bidi control stream; d20: the client's uni one
        self._our_control: int | None = None  # d20: our uni control stream
        self._control_buf = bytearray()
        self._bufs: dict[int, bytearray] = {}  # request streams being read
        self._uni_heads: dict[int, bytearray] = {}  # uni streams whose type is not read yet
        self._early: list[tuple[int, bytes, bool]] = []  # d20 request streams before SETUP
        self._namespace_streams: dict[int, int] = {}  # d16 SUBSCRIBE_NAMESPACE stream -> request
        self._req_stream: dict[int, int] = {}  # d20: request ID (theirs or ours) -> its stream
        self._stream_req: dict[int, int] = {}  # d20: stream -> request ID
        self._stream_kind: dict[int, type] = {}  # d20: stream -> the request message type
        self._max_client_request = request_window
        self._seen_requests: set[int] = set()
        self._next_request = 1
        self._peer_max_request = 0
        self._next_alias = 0
        self._upstream: dict[int, Track] = {}  # our SUBSCRIBE / their PUBLISH request -> track
        self._aliases: dict[int, Track] = {}  # the publisher's alias -> track
        self._downstream: dict[int, Subscription] = {}  # a downstream request -> subscription
        self._published: dict[int, m.TrackNamespace] = {}  # PUBLISH_NAMESPACE request -> namespace

    # -- outputs -----------------------------------------------------------------------------

    def drain(self) -> list[Output]:
        out, self.out = self.out, []
        return out

    def _emit(self, item: Output) -> None:
        if self.closed and not isinstance(item, CloseSession):
            return
        self.out.append(item)
        if self.on_output is not None and len(self.out) == 1:
            self.on_output()

    def _refuse_stream(self, stream_id: int) -> None:
        self._emit(StreamReset(stream_id, StreamResetCode.INTERNAL_ERROR, stop_sending=True))

    # Peer protocol (used by the relay) ---------------------------------------------------

    def open_uni(self) -> int:
        return self._open_uni()

    def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self._emit(StreamWrite(stream_id, data, fin))

    def reset(self, stream_id: int, code: int) -> None:
        self._emit(StreamReset(stream_id, code))

    def send_datagram(self, data: bytes) -> None:
        self._emit(DatagramOut(data))

    def send_control(self, msg: m.ControlMessage) -> None:
        stream = self._our_control if self.vi64 else self._control
        if stream is not None:
            self._emit(StreamWrite(stream, self._encode(msg)))

    def send_on(self, stream_id: int, msg: m.ControlMessage) -> None:
        self._emit(StreamWrite(stream_id, self._encode(msg)))

    def reply(self, request_id: int, msg: m.ControlMessage, final: bool = False) -> None:
        """A reply to a request (theirs or ours): on the control stream at draft-16, on the
        request's stream at draft-20 (``final``: then end our side of that stream)."""
        if not self.vi64:
            self.send_control(msg)
            return
        stream = self._req_stream.get(request_id)
        if stream is None:
            return  # the request was cancelled: its stream is gone
        self._emit(StreamWrite(stream, self._encode(msg), final))
        if final:
            self._forget_stream(stream)

    def request(self, msg: m.Subscribe | m.Publish) -> None:
        """A request of ours (a SUBSCRIBE upstream, a PUBLISH offer)."""
        if not self.vi64:
            self.send_control(msg)
            return
        assert self._open_bidi is not None
        stream = self._open_bidi()
        self._req_stream[msg.request_id] = stream
        self._stream_req[stream] = msg.request_id
        self._stream_kind[stream] = type(msg)
        self._emit(StreamWrite(stream, self._encode(msg)))

    def cancel_request(self, request_id: int) -> None:
        """End a request of ours: UNSUBSCRIBE at draft-16, a reset of its stream at draft-20."""
        if not self.vi64:
            self.send_control(m.Unsubscribe(request_id))
            return
        stream = self._req_stream.get(request_id)
        if stream is not None:
            self._emit(StreamReset(stream, StreamResetCode.CANCELLED, stop_sending=True))
            self._forget_stream(stream)

    def new_request_id(self) -> int | None:
        if not self.vi64 and self._next_request >= self._peer_max_request:
            self.send_control(m.RequestsBlocked(self._peer_max_request))
            return None
        rid = self._next_request
        self._next_request += 2
        return rid

    def new_alias(self) -> int:
        alias = self._next_alias
        self._next_alias += 1
        return alias

    def watch_upstream(self, request_id: int, track: Track) -> None:
        self._upstream[request_id] = track

    def watch_downstream(self, request_id: int, sub: Subscription) -> None:
        self._downstream[request_id] = sub

    def subscription(self, request_id: int) -> Subscription | None:
        """The downstream subscription made by request ``request_id`` of this session."""
        return self._downstream.get(request_id)

    def forget_downstream(self, request_id: int) -> None:
        self._downstream.pop(request_id, None)

    def _forget_stream(self, stream: int) -> None:
        rid = self._stream_req.pop(stream, None)
        self._stream_kind.pop(stream, None)
        self._bufs.pop(stream, None)
        if rid is not None and self._req_stream.get(rid) == stream:
            del self._req_stream[rid]

    def _alias_track(self, alias: int) -> Track | None:
        """The live track of a publisher's alias (a finished track's alias is forgotten)."""
        track = self._aliases.get(alias)
        if track is not None and self.relay.tracks.get(track.key) is not track:
            del self._aliases[alias]
            return None
        return track

    def _location(self, track: Track) -> m.Params:
        if track.largest is None:
            return {}
        return {m.PARAM_LARGEST_OBJECT: encode_varint(track.largest[0]) + encode_varint(track.largest[1])}

    # -- inputs ------------------------------------------------------------------------------

    def stream_data(self, stream_id: int, unidirectional: bool, data: bytes, fin: bool, now: float) -> None:
        if self.closed:
            return
        self.now = now
        try:
            if unidirectional:
                self._uni_data(stream_id, data, fin)
            elif not self.vi64 and (self._control is None or stream_id == self._control):
                self._control_data(stream_id, data, fin)
            elif self.vi64 and not self.setup_done:
                self._early.append((stream_id, data, fin))
            else:
                self._request_data(stream_id, data, fin)
        except MoqDecodeError as exc:
            self.close(SessionErrorCode.PROTOCOL_VIOLATION, str(exc))
        except SessionError as exc:
            self.close(exc.code, exc.reason)

    def stream_reset(self, stream_id: int, code: int, now: float) -> None:
        """The peer reset a stream it sends on, or asked us to stop sending on one."""
        self.now = now
        if self.closed:
            return
        if stream_id == self._control:
            self.close(SessionErrorCode.PROTOCOL_VIOLATION, "control stream reset")
            return
        self.data_streams.reset(stream_id, code)
        if stream_id in self._namespace_streams:
            del self._namespace_streams[stream_id]
            self.relay.unsubscribe_namespace(self, stream_id)
        rid = self._stream_req.get(stream_id)
        if rid is not None:
            self._request_cancelled(stream_id, rid)

    def datagram(self, data: bytes, now: float) -> None:
        self.now = now
        try:
            d = decode_datagram(data, self.vi64)
        except MoqDecodeError:
            self.stats.dropped_datagrams += 1
            return
        track = self._alias_track(d.track_alias)
        if track is None:
            self.stats.dropped_datagrams += 1
            return
        self.relay.on_datagram(track, d)

    def close(self, code: int, reason: str) -> None:
        """Close with an error (ours or the peer's fault) and leave the relay."""
        if self.closed:
            return
        if code != SessionErrorCode.NO_ERROR:
            log.info("moq session closed: %s (0x%x)", reason, code)
        self._emit(CloseSession(code, reason))
        self.closed = True
        self.relay.peer_gone(self)

    def transport_closed(self) -> None:
        """The connection is gone (the peer closed it, or it timed out)."""
        if not self.closed:
            self.closed = True
            self.relay.peer_gone(self)

    def goaway(self, uri: bytes = b"") -> None:
        """Ask the client to move (draft-16 s9.4), on drain."""
        self.send_control(m.GoAway(uri))

    # -- control streams ---------------------------------------------------------------------

    def _uni_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id == self._control:
            self._control_data(stream_id, data, fin)
            return
        head = self._uni_heads.get(stream_id)
        if head is None:
            if self.data_streams.has(stream_id):
                # Also a FIN alone (an empty last write: aioquic's send_stream_data(sid, b"", True)).
                self.data_streams.data(stream_id, data, fin)
                return
            if not data and fin:
                return
            head = self._uni_heads[stream_id] = bytearray()
        head += data
        r = Reader(head, vi64=self.vi64)
        try:
            kind = r.varint()
        except Truncated:
            if fin:
                del self._uni_heads[stream_id]
            return
        rest = bytes(head[r.pos :])
        del self._uni_heads[stream_id]
        if self.vi64 and kind == codec20.T_SETUP:
            if self._control is not None:
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "a second control stream")
            self._control_data(stream_id, bytes(head[: r.pos]) + rest, fin)
            return
        if not self.setup_done:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "a data stream before SETUP")
        self.data_streams.open(stream_id, kind, rest, fin)

    def _control_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._control = stream_id
        self._control_buf += data
        if len(self._control_buf) > MAX_CONTROL_BUFFER:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "control message too large")
        while True:
            split = self._split(self._control_buf)
            if split is None:
                break
            kind, payload, used = split
            msg = self._decode(kind, payload, 0)
            del self._control_buf[:used]
            self.stats.control_messages += 1
            self._on_control(msg)
            if self.closed:
                return
        if fin:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "control stream closed")

    def _on_control(self, msg: m.ControlMessage) -> None:
        if not self.setup_done:
            if not isinstance(msg, m.ClientSetup):
                raise SessionError(
                    SessionErrorCode.PROTOCOL_VIOLATION,
                    "the first message must be CLIENT_SETUP (draft-16) or SETUP (draft-20)",
                )
            self._setup(msg)
            return
        if self.vi64 and not isinstance(msg, m.GoAway):
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"{type(msg).__name__} on the control stream")
        self._dispatch(msg)

    def _dispatch(self, msg: m.ControlMessage) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"unexpected {type(msg).__name__}")
        handler(self, msg)

    def _setup(self, msg: m.ClientSetup) -> None:
        self.client_params = msg.params
        peer_max = msg.params.get(m.SETUP_MAX_REQUEST_ID, 0)
        self._peer_max_request = peer_max if isinstance(peer_max, int) and not self.vi64 else 0
        path = msg.params.get(m.SETUP_PATH)
        if isinstance(path, bytes):
            self.path = path.decode("utf-8", "replace")
        token = authorization_token(msg.params.get(m.SETUP_AUTHORIZATION_TOKEN), self.vi64)
        refusal = self.authorizer.setup(token, self.path)
        if refusal is not None:
            self.close(SessionErrorCode.UNAUTHORIZED, refusal)
            return
        self.setup_done = True
        if self.vi64:
            self._our_control = self._open_uni()
            self.send_control(m.ServerSetup({m.SETUP_IMPLEMENTATION: IMPLEMENTATION}))
            early, self._early = self._early, []
            for stream_id, data, fin in early:
                self._request_data(stream_id, data, fin)
        else:
            params: m.Params = {m.SETUP_MAX_REQUEST_ID: self._max_client_request}
            params[m.SETUP_IMPLEMENTATION] = IMPLEMENTATION
            self.send_control(m.ServerSetup(params))

    # -- request streams ---------------------------------------------------------------------

    def _request_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        if not self.vi64 and stream_id in self._namespace_streams:
            if data:
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "data after SUBSCRIBE_NAMESPACE")
            if fin:
                del self._namespace_streams[stream_id]
                self.relay.unsubscribe_namespace(self, stream_id)
                self.write(stream_id, b"", fin=True)
            return
        buf = self._bufs.setdefault(stream_id, bytearray())
        buf += data
        if len(buf) > MAX_CONTROL_BUFFER:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "request stream message too large")
        while True:
            split = self._split(buf)
            if split is None:
                break
            kind, payload, used = split
            del buf[:used]
            self.stats.control_messages += 1
            self._on_stream_message(stream_id, kind, payload)
            if self.closed or stream_id not in self._bufs:
                return
        if fin:
            if buf:
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "request stream ended inside a message")
            self._bufs.pop(stream_id, None)  # a FIN is not a cancellation (draft-20 s3.3)

    def _on_stream_message(self, stream_id: int, kind: int, payload: bytes) -> None:
        rid = self._stream_req.get(stream_id)
        msg = self._decode(kind, payload, rid or 0) if self.vi64 else None
        if msg is None:  # draft-16: only SUBSCRIBE_NAMESPACE opens a stream of its own
            msg = self._decode(kind, payload, 0)
            if not isinstance(msg, m.SubscribeNamespace) or stream_id in self._namespace_streams:
                raise SessionError(
                    SessionErrorCode.PROTOCOL_VIOLATION, "a request stream carries one SUBSCRIBE_NAMESPACE"
                )
            self._bufs.pop(stream_id, None)
            self._on_subscribe_namespace(msg, stream_id)
            return
        if rid is None:
            if not isinstance(msg, _REQUESTS):
                raise SessionError(
                    SessionErrorCode.PROTOCOL_VIOLATION, f"a request stream opened by {type(msg).__name__}"
                )
            self._check_request_id(msg.request_id)
            self._req_stream[msg.request_id] = stream_id
            self._stream_req[stream_id] = msg.request_id
            self._stream_kind[stream_id] = type(msg)
            if isinstance(msg, m.SubscribeNamespace | m.SubscribeTracks):
                self._on_subscribe_namespace(msg, stream_id)
            else:
                self._dispatch(msg)
            return
        if isinstance(msg, m.RequestUpdate):
            msg.existing_request_id = rid
        elif isinstance(msg, _REQUESTS):
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "a second request on a request stream")
        self._dispatch(msg)

    def _request_cancelled(self, stream_id: int, rid: int) -> None:
        """Draft-20: the peer reset a request stream (s3.3: that cancels the request)."""
        kind = self._stream_kind.get(stream_id)
        self._forget_stream(stream_id)
        if kind is m.Subscribe:
            self._on_unsubscribe(m.Unsubscribe(rid))
        elif kind is m.PublishNamespace:
            if self._published.pop(rid, None) is not None:
                self.relay.publish_namespace_done(self, rid)
        elif kind in (m.SubscribeNamespace, m.SubscribeTracks):
            self.relay.unsubscribe_namespace(self, stream_id)
        elif kind is m.Publish and rid in self._upstream and rid & 1 == 0:
            self._on_publish_done(m.PublishDone(rid, 0x4, 0, b"publisher reset its PUBLISH"))
        elif rid in self._upstream:  # our SUBSCRIBE, reset by the publisher
            track = self._upstream.pop(rid)
            if track.live:
                self.relay.publish_done(track, m.PublishDone(rid, 0x0, 0, b"publisher reset"), self.now)
            else:
                self.relay.upstream_error(track, RequestErrorCode.INTERNAL_ERROR, b"publisher reset the request")
        elif rid in self._downstream:  # a subscriber refused our PUBLISH offer
            self._on_request_error(m.RequestError(rid, RequestErrorCode.UNINTERESTED))

    def _check_request_id(self, rid: int) -> None:
        if rid & 1 or rid in self._seen_requests:
            raise SessionError(SessionErrorCode.INVALID_REQUEST_ID, f"request ID {rid} repeated or odd")
        self._seen_requests.add(rid)
        if self.vi64:
            return  # draft-20 has no MAX_REQUEST_ID: QUIC's stream limit bounds requests
        if rid >= self._max_client_request:
            raise SessionError(
                SessionErrorCode.TOO_MANY_REQUESTS, f"request ID {rid} over MAX_REQUEST_ID {self._max_client_request}"
            )
        if rid >= self._max_client_request - self.request_window // 2:
            self._max_client_request += self.request_window
            self.send_control(m.MaxRequestId(self._max_client_request))

    def _check_control_request(self, rid: int) -> None:
        if not self.vi64:
            self._check_request_id(rid)

    # -- handlers ----------------------------------------------------------------------------

    def _on_publish_namespace(self, msg: m.PublishNamespace) -> None:
        self._check_control_request(msg.request_id)
        if not msg.namespace:
            self.reply(msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.MALFORMED_TRACK, 0, b"empty"))
            return
        if not self.authorizer.may_publish(msg.namespace):
            self.reply(
                msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
            )
            return
        self._published[msg.request_id] = msg.namespace
        self.reply(msg.request_id, m.RequestOk(msg.request_id))
        self.relay.publish_namespace(self, msg.request_id, msg.namespace, self.now)

    def _on_publish_namespace_done(self, msg: m.PublishNamespaceDone) -> None:
        if self._published.pop(msg.request_id, None) is None:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"no namespace published by {msg.request_id}")
        self.relay.publish_namespace_done(self, msg.request_id)

    def _on_subscribe_namespace(self, msg: m.SubscribeNamespace | m.SubscribeTracks, stream_id: int) -> None:
        if isinstance(msg, m.SubscribeNamespace):
            if not self.vi64:
                self._check_request_id(msg.request_id)
            options = msg.options
        else:
            options = m.NAMESPACE_OPTION_PUBLISH
        if options > m.NAMESPACE_OPTION_BOTH:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"SUBSCRIBE_NAMESPACE options {options}")
        if not self.authorizer.may_discover(msg.prefix):
            refusal = m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
            self.send_on(stream_id, refusal)
            self.write(stream_id, b"", fin=True)
            self._forget_stream(stream_id)
            return
        if not self.vi64:
            self._namespace_streams[stream_id] = msg.request_id
        ns_sub = NamespaceSubscriber(
            self, msg.request_id, msg.prefix, options, stream_id, self.authorizer.may_subscribe
        )
        self.relay.subscribe_namespace(ns_sub)

    def _on_subscribe(self, msg: m.Subscribe) -> None:
        self._check_control_request(msg.request_id)
        if not self.authorizer.may_subscribe(msg.namespace):
            self.reply(
                msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
            )
            return
        self.relay.subscribe(self, msg, self.now)
        fill = msg.params.get(m.PARAM_FILL_PARAMETERS)
        if self.vi64 and isinstance(fill, bytes):
            self._fill(msg.request_id, codec20.fill_location(fill))

    def _fill(self, request_id: int, fields: list[int]) -> None:
        """Draft-20 joining: the groups a SUBSCRIBE's FILL_PARAMETERS ask for before where the
        subscription starts, on a FETCH_HEADER stream under the SUBSCRIBE's Request ID (s5.1.6)."""
        sub = self._downstream.get(request_id)
        track = self.relay.track_of(sub) if sub is not None else None
        if sub is None or track is None:
            return  # not live yet (or refused): nothing is cached to fill from
        start = (0, 0)
        if len(fields) == 1:  # Relative Start: N groups before the next one
            next_group = track.largest[0] + 1 if track.largest is not None else 0
            start = (max(0, next_group - fields[0]), 0)
        elif len(fields) >= 2 and fields != [0, 0]:
            start = (fields[0], fields[1])
        objects = self.relay.fetch_objects(track, start, (sub.start_group, -1))
        self.relay.serve_fetch(self, request_id, track, objects)

    def _on_unsubscribe(self, msg: m.Unsubscribe) -> None:
        sub = self._downstream.get(msg.request_id)
        if sub is None:
            self.relay.cancel_waiting(self, msg.request_id)
            return  # already ended (PUBLISH_DONE crossed it), refused, or still waiting
        track = self.relay.track_of(sub)
        if track is not None:
            self.relay.unsubscribe(track, sub)
        self._downstream.pop(msg.request_id, None)

    def _on_subscribe_ok(self, msg: m.SubscribeOk) -> None:
        track = self._upstream.get(msg.request_id)
        if track is None or track.live:
            raise SessionError(
                SessionErrorCode.PROTOCOL_VIOLATION, f"SUBSCRIBE_OK for unknown request {msg.request_id}"
            )
        if self._alias_track(msg.track_alias) is not None:
            raise SessionError(SessionErrorCode.DUPLICATE_TRACK_ALIAS, f"track alias {msg.track_alias} in use")
        self._aliases[msg.track_alias] = track
        self.relay.upstream_ok(track, msg.track_alias)
        self.data_streams.release(msg.track_alias, track)

    def _on_request_error(self, msg: m.RequestError) -> None:
        track = self._upstream.pop(msg.request_id, None)
        if track is not None:
            self.relay.upstream_error(track, msg.error_code, msg.reason)
            return
        sub = self._downstream.pop(msg.request_id, None)  # a refused PUBLISH of ours
        if sub is not None:
            track = self.relay.track_of(sub)
            if track is not None:
                self.relay.unsubscribe(track, sub)  # a track opened for the offer alone ends

    def _on_request_ok(self, msg: m.RequestOk) -> None:
        sub = self._downstream.get(msg.request_id)
        if sub is not None and sub.via_publish:  # draft-20 answers PUBLISH with REQUEST_OK
            self._on_publish_ok(m.PublishOk(msg.request_id, msg.params))

    def _on_publish_ok(self, msg: m.PublishOk) -> None:
        sub = self._downstream.get(msg.request_id)
        if sub is None or not sub.via_publish:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"PUBLISH_OK for unknown request {msg.request_id}")
        track = self.relay.track_of(sub)
        if track is not None:
            self.relay.publish_accepted(track, sub, msg.params.get(m.PARAM_FORWARD, 1) != 0)

    def _on_publish(self, msg: m.Publish) -> None:
        self._check_control_request(msg.request_id)
        if not self.authorizer.may_publish(msg.namespace):
            self.reply(
                msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
            )
            return
        if self._alias_track(msg.track_alias) is not None:
            raise SessionError(SessionErrorCode.DUPLICATE_TRACK_ALIAS, f"track alias {msg.track_alias} in use")
        track = self.relay.publish(self, msg, self.now)
        if track is None:
            code = RequestErrorCode.NOT_SUPPORTED if self.vi64 else RequestErrorCode.DUPLICATE_SUBSCRIPTION
            self.reply(msg.request_id, m.RequestError(msg.request_id, code, 0, b"track already published"))
            return
        self._upstream[msg.request_id] = track
        self._aliases[msg.track_alias] = track
        # Draft-20 answers with REQUEST_OK, which carries only EXPIRES (s10.7); the PUBLISH's own
        # Forward State stands, so a paused publisher (FORWARD 0) is resumed by a REQUEST_UPDATE
        # on its request stream. We always want the objects: the cache serves late subscribers.
        self.reply(msg.request_id, m.PublishOk(msg.request_id, {} if self.vi64 else {m.PARAM_FORWARD: 1}))
        if self.vi64 and msg.params.get(m.PARAM_FORWARD, 1) == 0:
            update_id = self.new_request_id()
            if update_id is not None:
                self.reply(msg.request_id, m.RequestUpdate(update_id, msg.request_id, {m.PARAM_FORWARD: 1}))
        self.data_streams.release(msg.track_alias, track)

    def _on_publish_done(self, msg: m.PublishDone) -> None:
        track = self._upstream.pop(msg.request_id, None)
        if track is None:
            return  # a cancellation of ours crossed it
        # The alias stays mapped: the streams PUBLISH_DONE counts may still be on their way.
        self.relay.publish_done(track, msg, self.now)
        if self.vi64:
            stream = self._req_stream.get(msg.request_id)
            if stream is not None:
                self.write(stream, b"", fin=True)
                self._forget_stream(stream)

    def _on_track_status(self, msg: m.TrackStatus) -> None:
        self._check_control_request(msg.request_id)
        if not self.authorizer.may_subscribe(msg.namespace):
            self.reply(
                msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
            )
            return
        track = self.relay.tracks.get((msg.namespace, msg.name))
        if track is None or not track.live:
            self.reply(msg.request_id, m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no track"))
            return
        params = self._location(track)
        if not self.vi64:
            params[m.PARAM_EXPIRES] = 0
        self.reply(msg.request_id, m.RequestOk(msg.request_id, params), final=True)

    def _on_fetch(self, msg: m.Fetch) -> None:
        self._check_control_request(msg.request_id)
        answer_fetch(self, msg)

    def _on_fetch_cancel(self, msg: m.FetchCancel) -> None:
        pass  # our FETCH streams are written whole at once: there is nothing left to cancel

    def _on_max_request_id(self, msg: m.MaxRequestId) -> None:
        if msg.request_id <= self._peer_max_request:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "MAX_REQUEST_ID did not increase")
        self._peer_max_request = msg.request_id

    def _on_requests_blocked(self, msg: m.RequestsBlocked) -> None:
        if msg.maximum_request_id >= self._max_client_request:
            self._max_client_request += self.request_window
            self.send_control(m.MaxRequestId(self._max_client_request))

    def _on_request_update(self, msg: m.RequestUpdate) -> None:
        self._check_request_id(msg.request_id)
        sub = self._downstream.get(msg.existing_request_id)
        if sub is None:
            refusal = m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such request")
            self._update_reply(msg, refusal)
            return
        forward = msg.params.get(m.PARAM_FORWARD)
        if isinstance(forward, int):
            sub.forward = forward != 0
        self._update_reply(msg, m.RequestOk(msg.request_id))

    def _update_reply(self, msg: m.RequestUpdate, reply: m.ControlMessage) -> None:
        if self.vi64:
            stream = self._req_stream.get(msg.existing_request_id)
            if stream is not None:
                self.send_on(stream, reply)
        else:
            self.send_control(reply)

    def _on_goaway(self, msg: m.GoAway) -> None:
        raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "GOAWAY from a client")


_HANDLERS: dict[type, Callable[[ServerSession, m.ControlMessage], None]] = {
    m.PublishNamespace: ServerSession._on_publish_namespace,  # type: ignore[dict-item]
    m.PublishNamespaceDone: ServerSession._on_publish_namespace_done,  # type: ignore[dict-item]
    m.Subscribe: ServerSession._on_subscribe,  # type: ignore[dict-item]
    m.Unsubscribe: ServerSession._on_unsubscribe,  # type: ignore[dict-item]
    m.SubscribeOk: ServerSession._on_subscribe_ok,  # type: ignore[dict-item]
    m.RequestError: ServerSession._on_request_error,  # type: ignore[dict-item]
    m.RequestOk: ServerSession._on_request_ok,  # type: ignore[dict-item]
    m.PublishOk: ServerSession._on_publish_ok,  # type: ignore[dict-item]
    m.Publish: ServerSession._on_publish,  # type: ignore[dict-item]
    m.PublishDone: ServerSession._on_publish_done,  # type: ignore[dict-item]
    m.TrackStatus: ServerSession._on_track_status,  # type: ignore[dict-item]
    m.Fetch: ServerSession._on_fetch,  # type: ignore[dict-item]
    m.FetchCancel: ServerSession._on_fetch_cancel,  # type: ignore[dict-item]
    m.MaxRequestId: ServerSession._on_max_request_id,  # type: ignore[dict-item]
    m.RequestsBlocked: ServerSession._on_requests_blocked,  # type: ignore[dict-item]
    m.RequestUpdate: ServerSession._on_request_update,  # type: ignore[dict-item]
    m.GoAway: ServerSession._on_goaway,  # type: ignore[dict-item]
}
