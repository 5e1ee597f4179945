"""The RTMP server session (RTMP spec s7.2, publish side): a state machine fed bytes and ``now``.

Shape (after rml_rtmp's ``ServerSession``, with the time passed in)::

    session = ServerSession(now)
    session.receive_data(data, now)          # bytes from the TCP connection
    for event in session.events(): ...       # ConnectRequested, PublishRequested, VideoData, ...
    session.accept_connect() / .reject_connect(why)         # decisions belong to the layer above
    session.accept_publish(sid) / .reject_publish(sid, code, why)
    transport.write(session.data_to_send())
    session.handle_timeout(now) at session.next_deadline()

Message order is kept across decisions: while a connect or publish waits for its answer, later
messages are held and processed after it, so an answer never overtakes a command.

Replies follow what ffmpeg, OBS and GStreamer expect (and nginx-rtmp sends): connect gets Window
Acknowledgement Size, Set Peer Bandwidth, Set Chunk Size and ``_result`` with
NetConnection.Connect.Success; createStream ``_result`` with the stream id; publish Stream Begin
plus ``onStatus`` NetStream.Publish.Start (or an ``onStatus`` error such as
NetStream.Publish.BadName); FCPublish/FCUnpublish ``onFCPublish``/``onFCUnpublish``.
Acknowledgements are sent whenever the peer's window of bytes has been received (s5.4.3).

Bad input never raises out of here: it ends the session with a :class:`~.events.Closed` event
(``error=True``) and a count in :attr:`ServerSession.stats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from trackmesh.errors import LocalProtocolError
from trackmesh.transports.rtmp import amf0
from trackmesh.transports.rtmp import messages as m
from trackmesh.transports.rtmp.chunk import DEFAULT_MAX_MESSAGE_SIZE, ChunkDecoder, ChunkEncoder, Message
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.events import (
    AudioData,
    Closed,
    ConnectRequested,
    Event,
    MetadataReceived,
    PublishRequested,
    Unpublished,
    VideoData,
)
from trackmesh.transports.rtmp.handshake import ServerHandshake
from trackmesh.transports.rtmp.values import UNDEFINED, AmfValue

__all__ = ["ServerSession", "SessionStats"]

DEFAULT_CHUNK_SIZE_OUT: Final = 4096
DEFAULT_WINDOW: Final = 2_500_000
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0
#: Message streams one connection may create (ffmpeg and OBS use one).
MAX_STREAMS: Final = 8
#: Messages held while a connect/publish waits for its answer; encoders send a handful.
MAX_HELD: Final = 256
_FMS_VERSION: Final = "FMS/3,5,7,7009"
_MASK32: Final = 0xFFFFFFFF
#: How far apart (ms) two timestamps across FFmpeg's 2^31 wrap may be and still count as one.
_WRAP31_WINDOW: Final = 600_000

# States.
_HANDSHAKE: Final = 0
_AWAIT_CONNECT: Final = 1
_CONNECT_PENDING: Final = 2
_CONNECTED: Final = 3
_CLOSED: Final = 4


class SessionStats:
    """Counters (no logging per message): read by the driver for /metrics."""

    __slots__ = (
        "acks_sent",
        "audio_messages",
        "bytes_received",
        "dropped_messages",
        "unknown_commands",
        "video_messages",
    )

    def __init__(self) -> None:
        self.bytes_received = 0
        self.video_messages = 0
        self.audio_messages = 0
        self.dropped_messages = 0
        self.unknown_commands = 0
        self.acks_sent = 0


class _Unwrap:
    """32-bit RTMP timestamps -> an int timeline that keeps going past the wrap.

    Steps under 2^31 either way are deltas (the chunk stream's 2^32 ms arithmetic). FFmpeg's FLV
    writer, though, keeps 31 bits (FLV's timestamp is SI32: it masks the extension byte with
    0x7F), so its streams wrap at 2^31 ms: a jump of about 2^31 between two timestamps both under
    2^31 is read as that 31-bit wrap when the 31-bit distance is small. No real stream jumps by
    24 days. Relative timing is exact; the origin is the first timestamp seen (FFmpeg sends its
    sequence headers at 0, so the first frames may land before it, below zero).
    """

    __slots__ = ("last32", "value")

    def __init__(self) -> None:
        self.last32 = -1
        self.value = 0

    def __call__(self, ts: int) -> int:
        last = self.last32
        if last < 0:
            self.value = ts
        else:
            diff = (ts - last) & _MASK32
            step = diff if diff < 0x80000000 else diff - 0x100000000
            if (step > 0x40000000 or step < -0x40000000) and ts < 0x80000000 and last < 0x80000000:
                d31 = (ts - last) & 0x7FFFFFFF
                step31 = d31 if d31 < 0x40000000 else d31 - 0x80000000
                if -_WRAP31_WINDOW < step31 < _WRAP31_WINDOW:
                    step = step31
            self.value += step
        self.last32 = ts
        return self.value


class _Stream:
    __slots__ = ("audio_clock", "publishing", "stream_key", "video_clock")

    def __init__(self) -> None:
        self.stream_key = ""
        self.publishing = False
        self.video_clock = _Unwrap()
        self.audio_clock = _Unwrap()


class ServerSession:
    """One RTMP connection, server side. See the module docstring for the call pattern."""

    def __init__(
        self,
        now: float,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE_OUT,
        window_ack_size: int = DEFAULT_WINDOW,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._state = _HANDSHAKE
        self._handshake = ServerHandshake(0, random)
        self._decoder = ChunkDecoder(max_message_size)
        self._encoder = ChunkEncoder()
        self._chunk_size = chunk_size
        self._window = window_ack_size
        self._out = bytearray()
        self._events: list[Event] = []
        self._held: list[Message] = []
        self._pending_publish: int | None = None
        self._connect_tid = 0.0
        self._object_encoding = 0
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._peer_window = 0
        self._last_ack = 0
        self._handshake_deadline = now + handshake_timeout
        self._idle_timeout = idle_timeout
        self._last_input = now
        self.app = ""
        self.stats = SessionStats()

    # ---- I/O -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def handshake_digest_used(self) -> bool:
        """True when the client sent a digested C1 and got the FP9 answer (for logs/metrics)."""
        return self._handshake.digest_used

    def receive_data(self, data: bytes, now: float) -> None:
        if self._state == _CLOSED or not data:
            return
        self._last_input = now
        self.stats.bytes_received += len(data)
        try:
            if self._state == _HANDSHAKE:
                self._handshake.receive(data)
                self._out += self._handshake.data_to_send()
                if not self._handshake.done:
                    return
                self._state = _AWAIT_CONNECT
                data = self._handshake.take_remainder()
            for msg in self._decoder.receive(data):
                if self._held or self._waiting():
                    if len(self._held) >= MAX_HELD:
                        raise RtmpError(f"more than {MAX_HELD} messages while a decision is pending")
                    self._held.append(msg)
                else:
                    self._dispatch(msg)
            self._maybe_ack()
        except RtmpError as exc:
            self._fail(str(exc))

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        out = self._events
        self._events = []
        return out

    def next_deadline(self) -> float | None:
        if self._state == _CLOSED:
            return None
        if self._state == _HANDSHAKE:
            return self._handshake_deadline
        return self._last_input + self._idle_timeout

    def handle_timeout(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is not None and now >= deadline:
            self._fail("handshake timeout" if self._state == _HANDSHAKE else "idle timeout")

    def connection_lost(self) -> None:
        """The TCP connection ended (EOF or reset): end publishing streams, then Closed."""
        if self._state != _CLOSED:
            self._close("connection lost", error=False)

    def close(self, reason: str = "closed by the server") -> None:
        """End the session from above (e.g. DELETE /rtmp/conn/<id>, a takeover)."""
        if self._state != _CLOSED:
            self._close(reason, error=False)

    # ---- decisions from above --------------------------------------------------------------

    def accept_connect(self) -> None:
        if self._state != _CONNECT_PENDING:
            raise _state_error("accept_connect", "no connect is waiting")
        self._send(m.CSID_CONTROL, 0, m.WINDOW_ACK_SIZE, m.window_ack_size(self._window))
        self._send(m.CSID_CONTROL, 0, m.SET_PEER_BANDWIDTH, m.set_peer_bandwidth(self._window))
        self._send(m.CSID_CONTROL, 0, m.SET_CHUNK_SIZE, m.set_chunk_size(self._chunk_size))
        self._encoder.set_chunk_size(self._chunk_size)
        self._command(
            0,
            "_result",
            self._connect_tid,
            {"fmsVer": _FMS_VERSION, "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": float(self._object_encoding),
            },
        )
        self._state = _CONNECTED
        self._release_held()

    def reject_connect(self, description: str) -> None:
        """Answer connect with ``_error`` NetConnection.Connect.Rejected and end the session."""
        if self._state != _CONNECT_PENDING:
            raise _state_error("reject_connect", "no connect is waiting")
        self._command(
            0, "_error", self._connect_tid, None, _status("error", "NetConnection.Connect.Rejected", description)
        )
        self._close(f"connect rejected: {description}", error=False)

    def accept_publish(self, stream_id: int) -> None:
        stream = self._take_pending_publish("accept_publish", stream_id)
        stream.publishing = True
        self._send(m.CSID_CONTROL, 0, m.USER_CONTROL, m.stream_begin(stream_id))
        self._status(
            stream_id,
            _status("status", "NetStream.Publish.Start", f"{stream.stream_key} is now published.", stream.stream_key),
        )
        self._release_held()

    def reject_publish(
        self, stream_id: int, description: str, code: str = "NetStream.Publish.BadName", close: bool = True
    ) -> None:
        """Answer publish with an ``onStatus`` error (BadName for a refused key; a reason the
        encoder's log shows). Ends the session unless ``close`` is False."""
        stream = self._take_pending_publish("reject_publish", stream_id)
        self._status(stream_id, _status("error", code, description, stream.stream_key))
        stream.stream_key = ""
        if close:
            self._close(f"publish rejected: {description}", error=False)
        else:
            self._release_held()

    def end_publish(self, stream_id: int, description: str, code: str, level: str = "error") -> None:
        """End an accepted publish from above with an ``onStatus`` the encoder logs (B-frames
        refused, an operator's DELETE, a takeover by a reconnect), then the session."""
        stream = self._streams.get(stream_id)
        key = stream.stream_key if stream is not None else ""
        self._status(stream_id, _status(level, code, description, key))
        self._close(f"publish ended: {description}", error=False)

    # ---- internals -------------------------------------------------------------------------

    def _waiting(self) -> bool:
        return self._state == _CONNECT_PENDING or self._pending_publish is not None

    def _release_held(self) -> None:
        while self._held and not self._waiting() and self._state != _CLOSED:
            msg = self._held.pop(0)
            try:
                self._dispatch(msg)
            except RtmpError as exc:
                self._fail(str(exc))

    def _take_pending_publish(self, call: str, stream_id: int) -> _Stream:
        if self._pending_publish != stream_id:
            raise _state_error(call, f"no publish is waiting on stream {stream_id}")
        self._pending_publish = None
        return self._streams[stream_id]

    def _send(self, csid: int, stream_id: int, type_id: int, payload: bytes, timestamp: int = 0) -> None:
        self._out += self._encoder.encode(csid, timestamp, type_id, stream_id, payload)

    def _command(self, stream_id: int, name: str, tid: float, *args: AmfValue) -> None:
        csid = m.CSID_COMMAND if stream_id == 0 else m.CSID_STREAM_STATUS
        self._send(csid, stream_id, m.COMMAND_AMF0, amf0.encode_all(name, tid, *args))

    def _status(self, stream_id: int, info: dict[str, AmfValue]) -> None:
        self._command(stream_id, "onStatus", 0.0, None, info)

    def _maybe_ack(self) -> None:
        total = self.stats.bytes_received
        if self._peer_window and total - self._last_ack >= self._peer_window:
            self._last_ack = total
            self._send(m.CSID_CONTROL, 0, m.ACKNOWLEDGEMENT, m.acknowledgement(total))
            self.stats.acks_sent += 1

    def _fail(self, reason: str) -> None:
        self._close(reason, error=True)

    def _close(self, reason: str, error: bool) -> None:
        for sid, stream in self._streams.items():
            if stream.publishing:
                stream.publishing = False
                self._events.append(Unpublished(sid, stream.stream_key))
        self._held.clear()
        self._pending_publish = None
        self._state = _CLOSED
        self._events.append(Closed(reason, error))

    def _dispatch(self, msg: Message) -> None:
        t = msg.type_id
        if t == m.VIDEO or t == m.AUDIO:
            stream = self._streams.get(msg.stream_id)
            if stream is None or not stream.publishing:
                self.stats.dropped_messages += 1
                return
            if t == m.VIDEO:
                self.stats.video_messages += 1
                self._events.append(VideoData(msg.stream_id, stream.video_clock(msg.timestamp), msg.payload))
            else:
                self.stats.audio_messages += 1
                self._events.append(AudioData(msg.stream_id, stream.audio_clock(msg.timestamp), msg.payload))
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            payload = msg.payload
            if t == m.COMMAND_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]  # the AMF3 command's format selector; the body is AMF0 (+0x11)
            self._on_command(msg.stream_id, amf0.decode_all(payload))
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            payload = msg.payload
            if t == m.DATA_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]
            self._on_data(msg.stream_id, amf0.decode_all(payload))
        elif t == m.WINDOW_ACK_SIZE:
            self._peer_window = m.parse_u32(msg.payload, "Window Acknowledgement Size")
        elif t == m.USER_CONTROL:
            event, value = m.parse_user_control(msg.payload)
            if event == m.UC_PING_REQUEST:
                self._send(m.CSID_CONTROL, 0, m.USER_CONTROL, m.ping_response(value))
        elif t == m.AGGREGATE:
            for sub in m.split_aggregate(msg):
                if sub.type_id in (m.VIDEO, m.AUDIO, m.DATA_AMF0):
                    self._dispatch(sub)
                else:
                    self.stats.dropped_messages += 1
        elif t in (m.SET_CHUNK_SIZE, m.ABORT, m.ACKNOWLEDGEMENT, m.SET_PEER_BANDWIDTH):
            pass  # chunk size/abort applied by the decoder; acks and bandwidth need no answer
        else:
            self.stats.dropped_messages += 1  # shared objects: not for a publisher

    def _on_command(self, stream_id: int, values: list[AmfValue]) -> None:
        if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], int | float):
            raise RtmpError("command without a name and transaction id")
        name, tid = values[0], float(values[1])
        args = values[3:]
        if self._state == _AWAIT_CONNECT:
            if name != "connect":
                raise RtmpError(f"{name!r} before connect")
            self._on_connect(tid, values[2] if len(values) > 2 else None)
            return
        if name == "connect":
            raise RtmpError("a second connect")
        if name == "createStream":
            if len(self._streams) >= MAX_STREAMS:
                self._command(0, "_error", tid, None, _status("error", "NetConnection.Call.Failed", "too many streams"))
                return
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams[sid] = _Stream()
            self._command(0, "_result", tid, None, float(sid))
        elif name == "publish":
            self._on_publish(stream_id, tid, args)
        elif name == "releaseStream":
            self._command(0, "_result", tid, None, UNDEFINED)
        elif name == "FCPublish":
            key = _str_arg(args)
            self._command(0, "onFCPublish", 0.0, None, _status("status", "NetStream.Publish.Start", key, key))
        elif name == "FCUnpublish":
            key = _str_arg(args)
            for sid, stream in self._streams.items():
                if stream.publishing and stream.stream_key == key:
                    self._unpublish(sid, stream)
            self._command(0, "onFCUnpublish", 0.0, None, _status("status", "NetStream.Unpublish.Success", key, key))
        elif name == "deleteStream" or name == "closeStream":
            sid = stream_id
            if name == "deleteStream":
                sid = int(args[0]) if args and isinstance(args[0], int | float) and 0 <= args[0] < 2**32 else -1
            ended = self._streams.get(sid)
            if ended is not None:
                if ended.publishing:
                    self._unpublish(sid, ended)
                if name == "deleteStream":
                    del self._streams[sid]
        elif name in ("_result", "_error", "onStatus", "_checkbw", "onBWDone"):
            pass  # answers to nothing we asked, or bandwidth-check noise from old Flash encoders
        else:
            self.stats.unknown_commands += 1
            if name == "play":
                self._status(stream_id, _status("error", "NetStream.Play.Failed", "play is not supported here"))
            elif tid > 0:
                self._command(
                    0, "_error", tid, None, _status("error", "NetConnection.Call.Failed", f"unknown command {name}")
                )

    def _on_connect(self, tid: float, obj: AmfValue) -> None:
        if not isinstance(obj, dict):
            raise RtmpError("connect without a command object")
        app = obj.get("app")
        tc_url = obj.get("tcUrl")
        flash_ver = obj.get("flashVer") or obj.get("flashver")
        encoding = obj.get("objectEncoding")
        self._connect_tid = tid
        self._object_encoding = 3 if encoding == 3 else 0
        self.app = app if isinstance(app, str) else ""
        self._state = _CONNECT_PENDING
        self._events.append(
            ConnectRequested(
                self.app,
                tc_url if isinstance(tc_url, str) else "",
                flash_ver if isinstance(flash_ver, str) else "",
                self._object_encoding,
                obj,
            )
        )

    def _on_publish(self, stream_id: int, tid: float, args: list[AmfValue]) -> None:
        stream = self._streams.get(stream_id)
        key = _str_arg(args)
        kind = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        if stream is None:
            self._status(stream_id, _status("error", "NetStream.Publish.Failed", "publish before createStream"))
            return
        if stream.publishing or not key:
            self._status(
                stream_id, _status("error", "NetStream.Publish.BadName", "already publishing" if key else "no key")
            )
            return
        stream.stream_key = key
        self._pending_publish = stream_id
        self._events.append(PublishRequested(stream_id, key, kind))

    def _unpublish(self, sid: int, stream: _Stream) -> None:
        stream.publishing = False
        self._events.append(Unpublished(sid, stream.stream_key))
        self._send(m.CSID_CONTROL, 0, m.USER_CONTROL, m.stream_eof(sid))

    def _on_data(self, stream_id: int, values: list[AmfValue]) -> None:
        if values[:1] == ["@setDataFrame"]:
            values = values[1:]
        stream = self._streams.get(stream_id)
        if (
            len(values) >= 2
            and values[0] == "onMetaData"
            and isinstance(values[1], dict)
            and stream is not None
            and stream.publishing
        ):
            self._events.append(MetadataReceived(stream_id, values[1]))
        else:
            self.stats.dropped_messages += 1


def _str_arg(args: list[AmfValue]) -> str:
    return args[0] if args and isinstance(args[0], str) else ""


def _status(level: str, code: str, description: str, details: str | None = None) -> dict[str, AmfValue]:
    info: dict[str, AmfValue] = {"level": level, "code": code, "description": description}
    if details is not None:
        info["details"] = details
    return info


def _state_error(call: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{call}: {why}")
