"""One MoQ session in the server role (draft-ietf-moq-transport-16), sans-IO.

Fed stream bytes, stream resets, datagrams and ``now``; drained of :data:`Output` items (stream
writes, resets, datagrams, a close). The driver owns the transport (raw QUIC or WebTransport)
and gives the session a function that opens a server-initiated unidirectional stream.

- The first client bidi stream is the control stream: CLIENT_SETUP, then every request and reply
  except SUBSCRIBE_NAMESPACE, which has its own bidi stream (s9.25) that also carries its
  REQUEST_OK, NAMESPACE and NAMESPACE_DONE; the client ends it with FIN.
- Request IDs (s9.1): the client's are even, ours odd; each side may not go past the other's
  MAX_REQUEST_ID. We grant ``request_window`` at setup and raise it by MAX_REQUEST_ID when half
  is used. A repeated or wrong-parity ID closes with INVALID_REQUEST_ID, one past the limit with
  TOO_MANY_REQUESTS.
- Track aliases: the publisher picks them (SUBSCRIBE_OK, PUBLISH); a duplicate closes with
  DUPLICATE_TRACK_ALIAS. Downstream aliases are ours, one counter per session.
- Data streams whose alias is not known yet (they can overtake SUBSCRIBE_OK) are held, bounded.
- A malformed message closes the session with PROTOCOL_VIOLATION and the reason; nothing a peer
  sends raises out of :meth:`ServerSession.stream_data`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from trackmesh.transports.moq import codec16
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import (
    MoqDecodeError,
    RequestErrorCode,
    SessionError,
    SessionErrorCode,
    StreamResetCode,
    Truncated,
)
from trackmesh.transports.moq.objects import SubgroupStreamParser, decode_datagram, is_subgroup_type
from trackmesh.transports.moq.relay import NamespaceSubscriber, Relay, Subscription, Track
from trackmesh.transports.moq.varint import Reader, encode_varint

__all__ = ["Authorizer", "CloseSession", "Output", "ServerSession", "StreamReset", "StreamWrite"]

log = logging.getLogger("trackmesh.moq")

IMPLEMENTATION = b"trackmesh"
MAX_CONTROL_BUFFER = 1 << 17
MAX_HELD_STREAMS = 64
MAX_HELD_BYTES = 1 << 20


@dataclass(slots=True)
class StreamWrite:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(slots=True)
class StreamReset:
    stream_id: int
    code: int
    stop_sending: bool = False  # also ask the peer to stop (an incoming stream we refuse)


@dataclass(slots=True)
class DatagramOut:
    data: bytes


@dataclass(slots=True)
class CloseSession:
    code: int
    reason: str


Output = StreamWrite | StreamReset | DatagramOut | CloseSession


class Authorizer:
    """Which namespaces a session may publish or subscribe. The default refuses everything; the
    driver passes an anonymous one (``--moq-anonymous``) or one that checks a token."""

    def setup(self, params: m.Params) -> bool:
        """The AUTHORIZATION token and PATH of CLIENT_SETUP; False refuses the session."""
        return True

    def may_publish(self, namespace: m.TrackNamespace) -> bool:
        return False

    def may_subscribe(self, namespace: m.TrackNamespace) -> bool:
        return False


class Anonymous(Authorizer):
    def may_publish(self, namespace: m.TrackNamespace) -> bool:
        return True

    def may_subscribe(self, namespace: m.TrackNamespace) -> bool:
        return True


class _InStream:
    """An incoming unidirectional data stream."""

    __slots__ = ("buf", "held", "new", "parser", "track")

    def __init__(self) -> None:
        self.buf = bytearray()  # before the type is known
        self.parser: SubgroupStreamParser | None = None
        self.track: Track | None = None
        self.held: list[tuple[bytes, bool]] = []  # bytes seen before the alias was known
        self.new = True


class SessionStats:
    __slots__ = ("control_messages", "dropped_datagrams", "held_streams", "refused_streams")

    def __init__(self) -> None:
        self.control_messages = 0
        self.dropped_datagrams = 0
        self.refused_streams = 0
        self.held_streams = 0


class ServerSession:
    def __init__(
        self,
        relay: Relay,
        open_uni: Callable[[], int],
        *,
        authorizer: Authorizer | None = None,
        request_window: int = 100,
        on_output: Callable[[], None] | None = None,
    ) -> None:
        self.relay = relay
        self._open_uni = open_uni
        self.authorizer = authorizer or Authorizer()
        self.request_window = request_window
        self.on_output = on_output
        self.stats = SessionStats()
        self.out: list[Output] = []
        self.closed = False
        self.setup_done = False
        self.client_params: m.Params = {}
        self.now = 0.0
        self._control: int | None = None
        self._control_buf = bytearray()
        self._bidi_bufs: dict[int, bytearray] = {}
        self._namespace_streams: dict[int, int] = {}  # bidi stream -> its SUBSCRIBE_NAMESPACE request
        self._in: dict[int, _InStream] = {}
        self._max_client_request = request_window  # client request IDs must stay below this
        self._seen_requests: set[int] = set()
        self._next_request = 1  # ours are odd
        self._peer_max_request = 0  # the client's MAX_REQUEST_ID for our requests
        self._next_alias = 0
        self._upstream: dict[int, Track] = {}  # our request ID (SUBSCRIBE) or their PUBLISH ID -> track
        self._aliases: dict[int, Track] = {}  # the publisher's alias -> track
        self._downstream: dict[int, Subscription] = {}  # a downstream request ID -> subscription
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
        if self._control is not None:
            self._emit(StreamWrite(self._control, codec16.encode_message(msg)))

    def send_on(self, stream_id: int, msg: m.ControlMessage) -> None:
        self._emit(StreamWrite(stream_id, codec16.encode_message(msg)))

    def new_request_id(self) -> int | None:
        if self._next_request >= self._peer_max_request:
            self.send_control(m.RequestsBlocked(self._peer_max_request))
            return None
        rid = self._next_request
        self._next_request += 2
        return rid

    def new_alias(self) -> int:
        alias = self._next_alias
        self._next_alias += 1
        return alias

    def _alias_track(self, alias: int) -> Track | None:
        """The live track of a publisher's alias (a finished track's alias is forgotten)."""
        track = self._aliases.get(alias)
        if track is not None and self.relay.tracks.get(track.key) is not track:
            del self._aliases[alias]
            return None
        return track

    def watch_upstream(self, request_id: int, track: Track) -> None:
        self._upstream[request_id] = track

    def watch_downstream(self, request_id: int, sub: Subscription) -> None:
        self._downstream[request_id] = sub

    def forget_downstream(self, request_id: int) -> None:
        self._downstream.pop(request_id, None)

    # -- inputs ------------------------------------------------------------------------------

    def stream_data(self, stream_id: int, unidirectional: bool, data: bytes, fin: bool, now: float) -> None:
        if self.closed:
            return
        self.now = now
        try:
            if unidirectional:
                self._uni_data(stream_id, data, fin)
            elif self._control is None or stream_id == self._control:
                self._control_data(stream_id, data, fin)
            else:
                self._bidi_data(stream_id, data, fin)
        except MoqDecodeError as exc:
            self.close(SessionErrorCode.PROTOCOL_VIOLATION, str(exc))
        except SessionError as exc:
            self.close(exc.code, exc.reason)

    def stream_reset(self, stream_id: int, code: int, now: float) -> None:
        self.now = now
        if stream_id == self._control:
            self.close(SessionErrorCode.PROTOCOL_VIOLATION, "control stream reset")
            return
        state = self._in.pop(stream_id, None)
        if state is not None and state.track is not None and state.parser is not None and state.parser.header:
            self.relay.on_stream_end(state.track, state.parser.header, code)
        if stream_id in self._namespace_streams:
            del self._namespace_streams[stream_id]
            self.relay.unsubscribe_namespace(self, stream_id)

    def datagram(self, data: bytes, now: float) -> None:
        self.now = now
        try:
            d = decode_datagram(data)
        except MoqDecodeError:
            self.stats.dropped_datagrams += 1
            return
        track = self._alias_track(d.track_alias)
        if track is None:
            self.stats.dropped_datagrams += 1
            return
        self.relay.on_datagram(track, d)

    def timer(self, now: float) -> None:
        self.now = now

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

    # -- control -----------------------------------------------------------------------------

    def _control_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._control = stream_id
        self._control_buf += data
        if len(self._control_buf) > MAX_CONTROL_BUFFER:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "control message too large")
        while True:
            split = codec16.split_message(self._control_buf)
            if split is None:
                break
            kind, payload, used = split
            msg = codec16.decode_message(kind, payload)
            del self._control_buf[:used]
            self.stats.control_messages += 1
            self._on_control(msg)
            if self.closed:
                return
        if fin:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "control stream closed")

    def _check_request_id(self, rid: int) -> None:
        if rid & 1 or rid in self._seen_requests:
            raise SessionError(SessionErrorCode.INVALID_REQUEST_ID, f"request ID {rid} repeated or odd")
        if rid >= self._max_client_request:
            raise SessionError(
                SessionErrorCode.TOO_MANY_REQUESTS, f"request ID {rid} over MAX_REQUEST_ID {self._max_client_request}"
            )
        self._seen_requests.add(rid)
        if rid >= self._max_client_request - self.request_window // 2:
            self._max_client_request += self.request_window
            self.send_control(m.MaxRequestId(self._max_client_request))

    def _on_control(self, msg: m.ControlMessage) -> None:
        if not self.setup_done:
            if not isinstance(msg, m.ClientSetup):
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "the first message must be CLIENT_SETUP")
            self._setup(msg)
            return
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"unexpected {type(msg).__name__}")
        handler(self, msg)

    def _setup(self, msg: m.ClientSetup) -> None:
        self.client_params = msg.params
        peer_max = msg.params.get(m.SETUP_MAX_REQUEST_ID, 0)
        self._peer_max_request = peer_max if isinstance(peer_max, int) else 0
        if not self.authorizer.setup(msg.params):
            self.close(SessionErrorCode.UNAUTHORIZED, "authorization refused")
            return
        self.setup_done = True
        self.send_control(
            m.ServerSetup({m.SETUP_MAX_REQUEST_ID: self._max_client_request, m.SETUP_IMPLEMENTATION: IMPLEMENTATION})
        )

    def _on_publish_namespace(self, msg: m.PublishNamespace) -> None:
        self._check_request_id(msg.request_id)
        if not msg.namespace:
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.MALFORMED_TRACK, 0, b"empty namespace"))
            return
        if not self.authorizer.may_publish(msg.namespace):
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
            return
        self._published[msg.request_id] = msg.namespace
        self.send_control(m.RequestOk(msg.request_id))
        self.relay.publish_namespace(self, msg.request_id, msg.namespace)

    def _on_publish_namespace_done(self, msg: m.PublishNamespaceDone) -> None:
        if self._published.pop(msg.request_id, None) is None:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"no namespace published by {msg.request_id}")
        self.relay.publish_namespace_done(self, msg.request_id)

    def _on_subscribe(self, msg: m.Subscribe) -> None:
        self._check_request_id(msg.request_id)
        if not self.authorizer.may_subscribe(msg.namespace):
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
            return
        self.relay.subscribe(self, msg, self.now)

    def _on_unsubscribe(self, msg: m.Unsubscribe) -> None:
        sub = self._downstream.get(msg.request_id)
        if sub is None:
            return  # already ended (PUBLISH_DONE crossed it), or refused
        for track in self.relay.tracks.values():
            if sub in track.subscribers:
                self.relay.unsubscribe(track, sub)
                return
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
        self._release_held(msg.track_alias, track)

    def _on_request_error(self, msg: m.RequestError) -> None:
        track = self._upstream.pop(msg.request_id, None)
        if track is not None:
            self.relay.upstream_error(track, msg.error_code, msg.reason)
            return
        sub = self._downstream.pop(msg.request_id, None)  # a refused PUBLISH of ours
        if sub is not None:
            for t in self.relay.tracks.values():
                if sub in t.subscribers:
                    t.subscribers.remove(sub)

    def _on_request_ok(self, msg: m.RequestOk) -> None:
        pass  # nothing of ours expects REQUEST_OK at draft-16 (TRACK_STATUS is asked of us, not by us)

    def _on_publish_ok(self, msg: m.PublishOk) -> None:
        sub = self._downstream.get(msg.request_id)
        if sub is None or not sub.via_publish:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"PUBLISH_OK for unknown request {msg.request_id}")
        for track in self.relay.tracks.values():
            if sub in track.subscribers:
                self.relay.publish_accepted(track, sub, msg.params.get(m.PARAM_FORWARD, 1) != 0)
                return

    def _on_publish(self, msg: m.Publish) -> None:
        self._check_request_id(msg.request_id)
        if not self.authorizer.may_publish(msg.namespace):
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
            return
        if self._alias_track(msg.track_alias) is not None:
            raise SessionError(SessionErrorCode.DUPLICATE_TRACK_ALIAS, f"track alias {msg.track_alias} in use")
        track = self.relay.publish(self, msg)
        if track is None:
            self.send_control(
                m.RequestError(msg.request_id, RequestErrorCode.DUPLICATE_SUBSCRIPTION, 0, b"track already published")
            )
            return
        self._upstream[msg.request_id] = track
        self._aliases[msg.track_alias] = track
        self.send_control(m.PublishOk(msg.request_id, {m.PARAM_FORWARD: 1}))
        self._release_held(msg.track_alias, track)

    def _on_publish_done(self, msg: m.PublishDone) -> None:
        track = self._upstream.pop(msg.request_id, None)
        if track is None:
            return  # an UNSUBSCRIBE of ours crossed it
        # The alias stays mapped: the streams PUBLISH_DONE counts may still be on their way.
        self.relay.publish_done(track, msg, self.now)

    def _on_track_status(self, msg: m.TrackStatus) -> None:
        self._check_request_id(msg.request_id)
        if not self.authorizer.may_subscribe(msg.namespace):
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
            return
        track = self.relay.tracks.get((msg.namespace, msg.name))
        if track is None or not track.live:
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such track"))
            return
        params: m.Params = {m.PARAM_EXPIRES: 0}
        if track.largest is not None:
            params[m.PARAM_LARGEST_OBJECT] = encode_varint(track.largest[0]) + encode_varint(track.largest[1])
        self.send_control(m.RequestOk(msg.request_id, params))

    def _on_fetch(self, msg: m.Fetch) -> None:
        self._check_request_id(msg.request_id)
        if msg.fetch_type == m.FETCH_STANDALONE:
            if not self.authorizer.may_subscribe(msg.namespace):
                self.send_control(m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
                return
            track = self.relay.tracks.get((msg.namespace, msg.name))
            if track is None:
                self.send_control(m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such track"))
                return
            # End Object 0 asks for the whole End Group (draft-16 s9.16).
            end = (msg.end_group, msg.end_object - 1) if msg.end_object else (msg.end_group, (1 << 62) - 1)
            if end < (msg.start_group, msg.start_object):
                self.send_control(
                    m.RequestError(msg.request_id, RequestErrorCode.INVALID_RANGE, 0, b"end before start")
                )
                return
            objects = self.relay.fetch_objects(track, (msg.start_group, msg.start_object), end)
        else:
            sub = self._downstream.get(msg.joining_request_id)
            track = None
            if sub is not None:
                track = next((t for t in self.relay.tracks.values() if sub in t.subscribers), None)
            if sub is None or track is None:
                self.send_control(
                    m.RequestError(
                        msg.request_id, RequestErrorCode.INVALID_JOINING_REQUEST_ID, 0, b"no such subscription"
                    )
                )
                return
            if msg.fetch_type == m.FETCH_RELATIVE_JOINING:
                start_group = max(0, sub.start_group - msg.joining_start)
            else:
                start_group = msg.joining_start
            objects = self.relay.fetch_objects(track, (start_group, 0), (sub.start_group, -1))
        if objects:
            end_group, end_object = objects[-1][0], objects[-1][3].object_id
        elif track.largest is not None:
            end_group, end_object = track.largest
        else:
            end_group, end_object = 0, 0
        self.send_control(m.FetchOk(msg.request_id, 0, end_group, end_object))
        self.relay.serve_fetch(self, msg.request_id, objects)

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
            self.send_control(m.RequestError(msg.request_id, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such request"))
            return
        forward = msg.params.get(m.PARAM_FORWARD)
        if isinstance(forward, int):
            sub.forward = forward != 0
        self.send_control(m.RequestOk(msg.request_id))

    def _on_goaway(self, msg: m.GoAway) -> None:
        raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "GOAWAY from a client")

    # -- SUBSCRIBE_NAMESPACE streams ---------------------------------------------------------

    def _bidi_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id in self._namespace_streams:
            if data:
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "data after SUBSCRIBE_NAMESPACE")
            if fin:
                del self._namespace_streams[stream_id]
                self.relay.unsubscribe_namespace(self, stream_id)
                self.write(stream_id, b"", fin=True)
            return
        buf = self._bidi_bufs.setdefault(stream_id, bytearray())
        buf += data
        split = codec16.split_message(buf)
        if split is None:
            if fin or len(buf) > MAX_CONTROL_BUFFER:
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "truncated request stream")
            return
        kind, payload, used = split
        msg = codec16.decode_message(kind, payload)
        rest = len(buf) - used
        del self._bidi_bufs[stream_id]
        if not isinstance(msg, m.SubscribeNamespace) or rest:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "a request stream carries one SUBSCRIBE_NAMESPACE")
        self._check_request_id(msg.request_id)
        if msg.options > m.NAMESPACE_OPTION_BOTH:
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"SUBSCRIBE_NAMESPACE options {msg.options}")
        if not self.authorizer.may_subscribe(msg.prefix):
            self.send_on(stream_id, m.RequestError(msg.request_id, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized"))
            self.write(stream_id, b"", fin=True)
            return
        self._namespace_streams[stream_id] = msg.request_id
        self.relay.subscribe_namespace(NamespaceSubscriber(self, msg.request_id, msg.prefix, msg.options, stream_id))
        if fin:
            self._bidi_data(stream_id, b"", True)

    # -- data streams ------------------------------------------------------------------------

    def _uni_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        state = self._in.get(stream_id)
        if state is None:
            if len(self._in) >= MAX_HELD_STREAMS + len(self._aliases) * 8:
                self.stats.refused_streams += 1
                self._emit(StreamReset(stream_id, StreamResetCode.INTERNAL_ERROR, stop_sending=True))
                return
            state = self._in[stream_id] = _InStream()
        if state.parser is None:
            state.buf += data
            r = Reader(state.buf)
            try:
                kind = r.varint()
            except Truncated:
                if fin:
                    del self._in[stream_id]
                return
            if not is_subgroup_type(kind):
                # FETCH_HEADER streams only flow toward a fetcher, and we fetch nothing upstream.
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"unknown data stream type 0x{kind:x}")
            state.parser = SubgroupStreamParser(kind)
            data = bytes(state.buf[r.pos :])
            state.buf = bytearray()
        if state.track is None:
            state.held.append((data, fin))
            self._held_check(stream_id, state)
            return
        self._feed(stream_id, state, data, fin)

    def _feed(self, stream_id: int, state: _InStream, data: bytes, fin: bool) -> None:
        assert state.parser is not None and state.track is not None
        objects = state.parser.feed(data)
        header = state.parser.header
        if header is not None and (objects or state.new) and (header.subgroup_id is not None or objects):
            self.relay.on_objects(state.track, header, objects, state.new)
            state.new = False
        if fin:
            self._in.pop(stream_id, None)
            if state.parser.pending():
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "data stream ended inside an object")
            if header is not None:
                self.relay.on_stream_end(state.track, header, None)

    def _held_check(self, stream_id: int, state: _InStream) -> None:
        """A stream whose alias is unknown: wait for its SUBSCRIBE_OK / PUBLISH, bounded."""
        assert state.parser is not None
        peek = SubgroupStreamParser(state.parser._kind)
        peek.feed(b"".join(d for d, _ in state.held))
        if peek.header is None:
            return
        track = self._alias_track(peek.header.track_alias)
        if track is not None:
            self._attach_stream(stream_id, state, track)
            return
        if sum(len(d) for d, _ in state.held) > MAX_HELD_BYTES // MAX_HELD_STREAMS:
            self.stats.refused_streams += 1
            self._in.pop(stream_id, None)
            self._emit(StreamReset(stream_id, StreamResetCode.INTERNAL_ERROR, stop_sending=True))
            return
        self.stats.held_streams += 1

    def _attach_stream(self, stream_id: int, state: _InStream, track: Track) -> None:
        state.track = track
        held, state.held = state.held, []
        data = b"".join(d for d, _ in held)
        fin = any(f for _, f in held)
        self._feed(stream_id, state, data, fin)

    def _release_held(self, alias: int, track: Track) -> None:
        for stream_id, state in list(self._in.items()):
            if state.track is None and state.parser is not None and state.held:
                peek = SubgroupStreamParser(state.parser._kind)
                peek.feed(b"".join(d for d, _ in state.held))
                if peek.header is not None and peek.header.track_alias == alias:
                    self._attach_stream(stream_id, state, track)


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
