"""A minimal publishing RTMP client for the in-memory session tests (what ffmpeg's rtmpproto does
on publish: handshake, connect, releaseStream, FCPublish, createStream, publish, media)."""

from __future__ import annotations

from trackmesh.transports.rtmp import amf0
from trackmesh.transports.rtmp import messages as m
from trackmesh.transports.rtmp.chunk import ChunkDecoder, ChunkEncoder, Message
from trackmesh.transports.rtmp.handshake import HANDSHAKE_SIZE, make_c1
from trackmesh.transports.rtmp.values import AmfValue


class TestClient:
    __test__ = False

    def __init__(self, chunk_size: int = 128, digest: bool = False) -> None:
        self.encoder = ChunkEncoder()
        self.decoder = ChunkDecoder()
        self.chunk_size = chunk_size
        self.c1 = make_c1(bytes(range(256)) * 5 + bytes(248), digest)
        self._handshake_buf = b""
        self.handshake_done = False
        self.s1 = b""
        self.s2 = b""

    def hello(self) -> bytes:
        return bytes((3,)) + self.c1

    def receive(self, data: bytes) -> list[Message]:
        """Server bytes -> messages; the handshake is answered by returning C2 via ``c2``."""
        if not self.handshake_done:
            self._handshake_buf += data
            if len(self._handshake_buf) < 1 + 2 * HANDSHAKE_SIZE:
                return []
            self.s1 = self._handshake_buf[1 : 1 + HANDSHAKE_SIZE]
            self.s2 = self._handshake_buf[1 + HANDSHAKE_SIZE : 1 + 2 * HANDSHAKE_SIZE]
            data = self._handshake_buf[1 + 2 * HANDSHAKE_SIZE :]
            self.handshake_done = True
        return self.decoder.receive(data)

    def c2(self) -> bytes:
        return self.s1

    def set_chunk_size(self) -> bytes:
        out = self.encoder.encode(2, 0, m.SET_CHUNK_SIZE, 0, m.set_chunk_size(self.chunk_size))
        self.encoder.set_chunk_size(self.chunk_size)
        return out

    def command(self, name: str, tid: float, *args: AmfValue, stream_id: int = 0) -> bytes:
        csid = 3 if stream_id == 0 else 8
        return self.encoder.encode(csid, 0, m.COMMAND_AMF0, stream_id, amf0.encode_all(name, tid, *args))

    def connect(self, app: str = "live") -> bytes:
        return self.command(
            "connect",
            1,
            {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": f"rtmp://127.0.0.1/{app}"},
        )

    def metadata(self, stream_id: int, meta: dict[str, AmfValue]) -> bytes:
        body = amf0.encode_all("@setDataFrame", "onMetaData", meta)
        return self.encoder.encode(4, 0, m.DATA_AMF0, stream_id, body)

    def video(self, stream_id: int, timestamp: int, body: bytes) -> bytes:
        return self.encoder.encode(6, timestamp, m.VIDEO, stream_id, body)

    def audio(self, stream_id: int, timestamp: int, body: bytes) -> bytes:
        return self.encoder.encode(4, timestamp, m.AUDIO, stream_id, body)


def commands(msgs: list[Message]) -> list[list[AmfValue]]:
    return [amf0.decode_all(msg.payload) for msg in msgs if msg.type_id == m.COMMAND_AMF0]
