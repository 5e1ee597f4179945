"""The RTMP chunk stream (RTMP spec s5.3): bytes <-> messages, per chunk stream id state.

Decoding (s5.3.1): a basic header (fmt, csid in 1, 2 or 3 bytes; the 3-byte form's csid is
``64 + byte1 + byte2 * 256``, little-endian), a message header of 11, 7, 3 or 0 bytes by fmt, an
extended timestamp when the 24-bit field is 0xFFFFFF, then up to ``chunk size`` payload bytes.

Two things implementations get wrong, handled here on purpose:
- fmt 1/2 carry a timestamp *delta*; an extended delta is a delta too, never absolute.
- a fmt 3 chunk carries the 4-byte extended timestamp again whenever the last fmt 0/1/2 header
  on its csid used one (s5.3.1.3, as ffmpeg and OBS send it), both when it continues a message
  and when it starts a new one with the previous delta. Missing this breaks every stream
  after 2^24 ms (4 h 40 min). Older librtmp builds (before OBS PR #10097) left it out of
  continuation chunks, so there it is consumed only when the 4 bytes repeat the header's value
  (what SRS does); a payload starting with exactly those 4 bytes is the accepted risk.
Timestamps are 32-bit and wrap at 2^32 ms (s5.3.1.2.1 arithmetic); the session unwraps them.

Set Chunk Size (type 1) and Abort (type 2) change how the very next chunk parses, so the
decoder applies them itself and also hands them up (the session counts them).
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.transports.rtmp.errors import RtmpError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkDecoder",
    "ChunkEncoder",
    "Message",
]

DEFAULT_CHUNK_SIZE: Final = 128
#: Largest chunk size accepted from a peer: the spec allows 2^31-1, but nobody needs more than a
#: message, and the message length field is 24 bits.
MAX_CHUNK_SIZE: Final = 0xFFFFFF
#: Default cap on one message (a 1080p key frame is well under 1 MiB; the field allows 16 MiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 8 * 1024 * 1024
#: Cap on chunk streams with a message half assembled at once (each holds buffered bytes).
MAX_OPEN_CHUNK_STREAMS: Final = 64
#: Cap on the bytes of all half-assembled messages together (interleaving many large messages
#: would otherwise hold up to 64 times the message cap).
DEFAULT_MAX_PENDING_BYTES: Final = 16 * 1024 * 1024

TYPE_SET_CHUNK_SIZE: Final = 1
TYPE_ABORT: Final = 2

_EXTENDED: Final = 0xFFFFFF
_U32: Final = struct.Struct("!I")
_U32LE: Final = struct.Struct("<I")


class Message:
    """One reassembled RTMP message: timestamp (ms, 32-bit, wraps), type id, message stream id."""

    __slots__ = ("csid", "payload", "stream_id", "timestamp", "type_id")

    def __init__(self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes) -> None:
        self.csid = csid
        self.timestamp = timestamp
        self.type_id = type_id
        self.stream_id = stream_id
        self.payload = payload

    def __repr__(self) -> str:
        return (
            f"Message(csid={self.csid}, ts={self.timestamp}, type={self.type_id}, "
            f"stream={self.stream_id}, len={len(self.payload)})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (
            self.csid,
            self.timestamp,
            self.type_id,
            self.stream_id,
            self.payload,
        ) == (other.csid, other.timestamp, other.type_id, other.stream_id, other.payload)

    __hash__ = None  # type: ignore[assignment]


class _InState:
    __slots__ = ("ext_value", "extended", "length", "partial", "stream_id", "timestamp", "ts_field", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0
        self.ts_field = 0  # the last timestamp/delta field (fmt 0: absolute, fmt 1/2: delta)
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.extended = False
        self.ext_value = b""  # the 4 extended-timestamp bytes of the message's first chunk
        self.partial: bytearray | None = None


def _check_chunk_size(size: int) -> int:
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise RtmpError(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
    return size


class ChunkDecoder:
    """Feed bytes with :meth:`receive`; it returns the messages completed by them."""

    __slots__ = (
        "_buf",
        "_open",
        "_pending",
        "_states",
        "bytes_received",
        "chunk_size",
        "max_message_size",
        "max_pending_bytes",
    )

    def __init__(
        self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    ) -> None:
        self._buf = bytearray()
        self._states: dict[int, _InState] = {}
        self._open = 0  # chunk streams with a message half assembled
        self._pending = 0  # bytes in those half-assembled messages
        self.max_pending_bytes = max_pending_bytes
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.bytes_received = 0

    def receive(self, data: bytes) -> list[Message]:
        self.bytes_received += len(data)
        self._buf += data
        out: list[Message] = []
        pos = 0
        buf = self._buf
        try:
            while True:
                used = self._one_chunk(buf, pos, out)
                if used == 0:
                    break
                pos += used
        finally:
            del buf[:pos]
        return out

    def _one_chunk(self, buf: bytearray, pos: int, out: list[Message]) -> int:
        """Parse one chunk at ``pos``; return its length, or 0 when it is not all here yet."""
        end = len(buf)
        if pos >= end:
            return 0
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > end:
                return 0
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return 0
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        header_len = (11, 7, 3, 0)[fmt]
        if p + header_len > end:
            return 0
        state = self._states.get(csid)
        if state is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} starts with fmt {fmt}, not 0")
            if len(self._states) >= MAX_OPEN_CHUNK_STREAMS * 4:
                raise RtmpError("too many chunk streams")
            state = _InState()
        new_message = state.partial is None
        if fmt != 3 and not new_message:
            raise RtmpError(f"chunk stream {csid}: fmt {fmt} header inside an unfinished message")
        ts_field = state.ts_field
        length = state.length
        type_id = state.type_id
        stream_id = state.stream_id
        if fmt <= 2:
            ts_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            if fmt <= 1:
                length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
                type_id = buf[p + 6]
                if fmt == 0:
                    stream_id = _U32LE.unpack_from(buf, p + 7)[0]
            extended = ts_field == _EXTENDED
        else:
            extended = state.extended
        p += header_len
        ext_value = b""
        if extended:
            if p + 4 > end:
                return 0
            ext_value = bytes(buf[p : p + 4])
            if new_message or ext_value == state.ext_value:
                p += 4
                if fmt <= 2:
                    ts_field = _U32.unpack(ext_value)[0]
        if new_message and length > self.max_message_size:
            raise RtmpError(f"message length {length} over the limit {self.max_message_size}")
        remaining = length - (len(state.partial) if state.partial is not None else 0)
        take = min(remaining, self.chunk_size)
        if p + take > end:
            return 0
        # The whole chunk is here: commit the header state.
        if csid not in self._states:
            self._states[csid] = state
        if new_message:
            if fmt == 0:
                state.timestamp = ts_field
            else:
                state.timestamp = (state.timestamp + ts_field) & 0xFFFFFFFF
            state.ts_field = ts_field
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.extended = extended
            state.ext_value = ext_value
            if self._open >= MAX_OPEN_CHUNK_STREAMS:
                raise RtmpError("too many chunk streams with an unfinished message")
            self._open += 1
            state.partial = bytearray()
        partial = state.partial
        assert partial is not None
        if self._pending + take > self.max_pending_bytes:
            raise RtmpError(f"more than {self.max_pending_bytes} bytes in unfinished messages")
        partial += buf[p : p + take]
        self._pending += take
        p += take
        if len(partial) == state.length:
            state.partial = None
            self._open -= 1
            self._pending -= len(partial)
            msg = Message(csid, state.timestamp, state.type_id, state.stream_id, bytes(partial))
            if msg.type_id == TYPE_SET_CHUNK_SIZE and msg.stream_id == 0:
                self._apply_set_chunk_size(msg.payload)
            elif msg.type_id == TYPE_ABORT and msg.stream_id == 0:
                self._apply_abort(msg.payload)
            out.append(msg)
        return p - pos

    def _apply_set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpError("Set Chunk Size shorter than 4 bytes")
        # s5.4.1: bit 31 must be zero.
        self.chunk_size = _check_chunk_size(_U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF)

    def _apply_abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpError("Abort shorter than 4 bytes")
        state = self._states.get(_U32.unpack_from(payload, 0)[0])
        if state is not None and state.partial is not None:
            self._pending -= len(state.partial)
            state.partial = None
            self._open -= 1

    @property
    def buffered(self) -> int:
        """Bytes held: unparsed input plus half-assembled messages."""
        return len(self._buf) + self._pending


class _OutState:
    __slots__ = ("delta", "length", "stream_id", "timestamp", "type_id")

    def __init__(self, timestamp: int, delta: int, length: int, type_id: int, stream_id: int) -> None:
        self.timestamp = timestamp
        self.delta = delta
        self.length = length
        self.type_id = type_id
        self.stream_id = stream_id


class ChunkEncoder:
    """Messages -> chunks, picking the smallest header fmt the previous message on the csid allows."""

    __slots__ = ("_states", "chunk_size")

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = _check_chunk_size(chunk_size)
        self._states: dict[int, _OutState] = {}

    def set_chunk_size(self, size: int) -> None:
        """Use ``size`` for the chunks after this call (after sending Set Chunk Size)."""
        self.chunk_size = _check_chunk_size(size)

    @staticmethod
    def _basic_header(fmt: int, csid: int) -> bytes:
        if 2 <= csid <= 63:
            return bytes(((fmt << 6) | csid,))
        if 64 <= csid <= 319:
            return bytes((fmt << 6, csid - 64))
        if 64 <= csid <= 65599:
            v = csid - 64
            return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
        raise ValueError(f"chunk stream id {csid} outside 2..65599")

    def encode(self, csid: int, timestamp: int, type_id: int, stream_id: int, payload: bytes) -> bytes:
        timestamp &= 0xFFFFFFFF
        length = len(payload)
        if length > 0xFFFFFF:
            raise ValueError("message longer than 2^24-1 bytes")
        prev = self._states.get(csid)
        if prev is None or prev.stream_id != stream_id:
            fmt, field = 0, timestamp
            delta = timestamp
        else:
            delta = (timestamp - prev.timestamp) & 0xFFFFFFFF
            if delta >= 0x80000000:  # backwards in time: a delta cannot say it, restart absolute
                fmt, field = 0, timestamp
            elif prev.length != length or prev.type_id != type_id:
                fmt, field = 1, delta
            elif prev.delta != delta:
                fmt, field = 2, delta
            else:
                fmt, field = 3, delta
        self._states[csid] = _OutState(timestamp, delta if fmt != 0 else timestamp, length, type_id, stream_id)
        extended = field >= _EXTENDED
        ts24 = _EXTENDED if extended else field
        out = bytearray(self._basic_header(fmt, csid))
        if fmt <= 2:
            out += bytes((ts24 >> 16, (ts24 >> 8) & 0xFF, ts24 & 0xFF))
            if fmt <= 1:
                out += bytes((length >> 16, (length >> 8) & 0xFF, length & 0xFF, type_id))
                if fmt == 0:
                    out += _U32LE.pack(stream_id)
        # fmt 3 is only picked when the delta repeats, so it is extended exactly when the header
        # it repeats was, and every continuation chunk repeats the extended field (s5.3.1.3).
        ext = _U32.pack(field) if extended else b""
        out += ext
        size = self.chunk_size
        out += payload[:size]
        continuation = self._basic_header(3, csid) + ext
        for start in range(size, length, size):
            out += continuation
            out += payload[start : start + size]
        return bytes(out)
