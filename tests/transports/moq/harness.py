"""An in-memory MoQ client of :class:`ServerSession` for the core tests: encodes what a client
sends, decodes what the session answers, on a virtual clock (no sockets, no event loop)."""

from __future__ import annotations

from trackmesh.transports.moq import codec16, codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.objects import (
    FETCH_HEADER,
    SubgroupHeader,
    SubgroupStreamParser,
    encode_object,
    encode_subgroup_header,
)
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.session import (
    Anonymous,
    Authorizer,
    CloseSession,
    DatagramOut,
    ServerSession,
    StreamReset,
    StreamWrite,
)
from trackmesh.transports.moq.varint import Reader

CONTROL = 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


class Client:
    def __init__(
        self,
        relay: Relay,
        clock: Clock,
        authorizer: Authorizer | None = None,
        max_request: int = 100,
        draft: int = 16,
    ) -> None:
        self.clock = clock
        self.draft = draft
        self.vi64 = draft >= 18
        self._next_uni = 3
        self._next_server_bidi = 1
        self.session = ServerSession(
            relay,
            self._open,
            draft=draft,
            open_bidi=self._open_bidi,
            authorizer=authorizer or Anonymous(),
            request_window=20,
        )
        self.request_streams: dict[int, int] = {}  # stream -> the request ID it carries
        self.server_control: int | None = None
        self.incoming: dict[int, bytearray] = {}  # server streams (uni and our bidi) -> bytes
        self.fins: set[int] = set()
        self.resets: dict[int, int] = {}
        self.datagrams: list[bytes] = []
        self.closed: CloseSession | None = None
        self._read: dict[int, int] = {}
        self._next_rid = 0
        self._next_bidi = 4
        self.max_request = max_request

    def _open(self) -> int:
        sid = self._next_uni
        self._next_uni += 4
        return sid

    def _open_bidi(self) -> int:
        sid = self._next_server_bidi
        self._next_server_bidi += 4
        return sid

    def encode(self, msg: m.ControlMessage) -> bytes:
        return codec20.encode_message(msg) if self.vi64 else codec16.encode_message(msg)

    def request(self, msg: m.ControlMessage) -> int:
        """A request: on the control stream at draft-16, on a new bidi stream at draft-20."""
        if not self.vi64:
            self.send(msg)
            return CONTROL
        stream = self.new_bidi()
        self.request_streams[stream] = msg.request_id  # type: ignore[union-attr]
        self.send(msg, stream)
        return stream

    def pump(self) -> None:
        for out in self.session.drain():
            if isinstance(out, StreamWrite):
                self.incoming.setdefault(out.stream_id, bytearray()).extend(out.data)
                if out.fin:
                    self.fins.add(out.stream_id)
            elif isinstance(out, StreamReset):
                self.resets[out.stream_id] = out.code
            elif isinstance(out, DatagramOut):
                self.datagrams.append(out.data)
            elif isinstance(out, CloseSession):
                self.closed = out

    def rid(self) -> int:
        rid = self._next_rid
        self._next_rid += 2
        return rid

    def send(self, msg: m.ControlMessage, stream_id: int = CONTROL, fin: bool = False) -> None:
        self.raw(stream_id, self.encode(msg), fin)

    def raw(self, stream_id: int, data: bytes, fin: bool = False, uni: bool = False) -> None:
        self.session.stream_data(stream_id, uni, data, fin, self.clock.now)

    def messages(self, stream_id: int = CONTROL) -> list[m.ControlMessage]:
        """Messages on ``stream_id`` not read before."""
        self.pump()
        if self.vi64 and stream_id == CONTROL:
            stream_id = self.server_control if self.server_control is not None else -1
        buf = bytes(self.incoming.get(stream_id, b""))
        pos = self._read.get(stream_id, 0)
        if self.vi64 and stream_id % 4 == 3:
            pos = max(pos, 0)
        out = []
        rid = self.request_streams.get(stream_id, 0)
        while True:
            split = (codec20 if self.vi64 else codec16).split_message(buf[pos:])
            if split is None:
                break
            kind, payload, used = split
            msg = codec20.decode_message(kind, payload, rid) if self.vi64 else codec16.decode_message(kind, payload)
            if (
                self.vi64
                and stream_id % 4 == 1
                and hasattr(msg, "request_id")
                and stream_id not in self.request_streams
            ):
                rid = self.request_streams[stream_id] = msg.request_id
            out.append(msg)
            pos += used
        self._read[stream_id] = pos
        return out

    def setup(self) -> m.ServerSetup | m.ClientSetup:
        if self.vi64:
            self.raw(2, codec20.encode_message(m.ClientSetup({m.SETUP_IMPLEMENTATION: b"test"})), uni=True)
            self.pump()
            self.server_control = min(sid for sid, data in self.incoming.items() if data.startswith(b"\xaf\x00"))
            (reply,) = self.messages()
            assert isinstance(reply, m.ClientSetup)  # SETUP is symmetric: it decodes as the setup
            return reply
        self.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: self.max_request, m.SETUP_IMPLEMENTATION: b"test"}))
        (reply,) = self.messages()
        assert isinstance(reply, m.ServerSetup)
        return reply

    def server_requests(self) -> list[tuple[int, m.ControlMessage]]:
        """Draft-20 requests the server opened bidi streams for: (stream, first message)."""
        self.pump()
        out = []
        for sid in sorted(self.incoming):
            if sid % 4 == 1 and sid not in self._read:
                msgs = self.messages(sid)
                if msgs:
                    out.append((sid, msgs[0]))
        return out

    def new_bidi(self) -> int:
        sid = self._next_bidi
        self._next_bidi += 4
        return sid

    def new_uni(self) -> int:
        sid = self._next_uni + 1000  # client uni streams: any ids distinct from the server's
        self._next_uni += 4
        return sid

    def subgroup(self, alias: int, group: int, objects: list[tuple[int, bytes]], fin: bool = True) -> int:
        """A whole subgroup stream from this client (a publisher)."""
        sid = 2 + 4 * (100 + group + 1000 * alias)
        data = encode_subgroup_header(SubgroupHeader(alias, group, 0, 128), self.vi64)
        previous = None
        for object_id, payload in objects:
            data += encode_object(object_id, previous, payload, vi64=self.vi64)
            previous = object_id
        self.raw(sid, data, fin, uni=True)
        return sid

    def received(self) -> list[tuple[int, SubgroupHeader, list[tuple[int, bytes]], bool]]:
        """Every subgroup stream the session opened to us: (stream, header, objects, finished)."""
        self.pump()
        out = []
        for sid, data in sorted(self.incoming.items()):
            if sid % 4 != 3 or sid == self.server_control:
                continue
            r = Reader(bytes(data), vi64=self.vi64)
            kind = r.varint()
            if kind == FETCH_HEADER:
                continue
            parser = SubgroupStreamParser(kind, self.vi64)
            objects = parser.feed(bytes(data[r.pos :]))
            assert parser.header is not None
            out.append((sid, parser.header, [(o.object_id, o.payload) for o in objects], sid in self.fins))
        return out
