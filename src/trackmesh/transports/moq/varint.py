"""QUIC variable-length integers (RFC 9000 s16) and a bounded reader over a byte buffer.

Every MoQ field of type ``(i)`` in draft-16 is such an integer; the reader raises
:class:`~trackmesh.transports.moq.errors.Truncated` when the bytes end early, so a stream
parser can wait for more input instead of failing.
"""

from __future__ import annotations

from trackmesh.transports.moq.errors import MoqDecodeError, Truncated

__all__ = ["MAX_VARINT", "Reader", "encode_varint", "varint_size"]

MAX_VARINT = (1 << 62) - 1


def varint_size(value: int) -> int:
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x40000000:
        return 4
    if value <= MAX_VARINT:
        return 8
    raise ValueError(f"varint out of range: {value}")


def encode_varint(value: int) -> bytes:
    """The shortest encoding (RFC 9000 s16: 2-bit length prefix, big-endian)."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise ValueError(f"varint out of range: {value}")


class Reader:
    """Reads fields from ``data[pos:end]``; ``pos`` is public so callers can rewind."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def varint(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise Truncated("varint")
        first = self.data[pos]
        size = 1 << (first >> 6)
        if pos + size > self.end:
            raise Truncated("varint")
        value = first & 0x3F
        for i in range(1, size):
            value = (value << 8) | self.data[pos + i]
        self.pos = pos + size
        return value

    def uint8(self) -> int:
        if self.pos >= self.end:
            raise Truncated("uint8")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint16(self) -> int:
        if self.pos + 2 > self.end:
            raise Truncated("uint16")
        value = (self.data[self.pos] << 8) | self.data[self.pos + 1]
        self.pos += 2
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.pos + size > self.end:
            raise Truncated("bytes")
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def view(self, size: int) -> memoryview:
        if size < 0 or self.pos + size > self.end:
            raise Truncated("bytes")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def blob(self, limit: int = 1 << 16) -> bytes:
        """A ``(b)`` field: a varint length, then that many bytes."""
        size = self.varint()
        if size > limit:
            raise MoqDecodeError(f"field of {size} bytes over the limit of {limit}")
        return self.raw(size)

    def rest(self) -> bytes:
        value = bytes(self.data[self.pos : self.end])
        self.pos = self.end
        return value
