"""MoQ variable-length integers and a bounded reader over a byte buffer.

- Draft-16 uses QUIC's (RFC 9000 s16): a 2-bit length prefix, 1/2/4/8 bytes, up to 2^62-1.
- Draft-18 on (so draft-20) uses vi64 (draft-20 s1.4.1): the count of leading 1 bits of the
  first byte is the number of bytes that follow (0-8), the remaining bits and bytes the value,
  big-endian, up to 2^64-1.

The reader raises
:class:`~trackmesh.transports.moq.errors.Truncated` when the bytes end early, so a stream
parser can wait for more input instead of failing.
"""

from __future__ import annotations

from trackmesh.transports.moq.errors import MoqDecodeError, Truncated

__all__ = ["MAX_VARINT", "MAX_VI64", "Reader", "encode_varint", "encode_vi64", "varint_size"]

MAX_VARINT = (1 << 62) - 1
MAX_VI64 = (1 << 64) - 1


def encode_vi64(value: int) -> bytes:
    """The shortest vi64 encoding (draft-20 s1.4.1)."""
    if value < 0 or value > MAX_VI64:
        raise ValueError(f"vi64 out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    size = 2
    while size < 9 and value >= 1 << (7 * size):
        size += 1
    if size == 9:
        return b"\xff" + value.to_bytes(8, "big")
    body = value.to_bytes(size, "big")
    prefix = (0xFF << (9 - size)) & 0xFF  # size-1 leading ones, then a zero
    return bytes((prefix | body[0],)) + body[1:]


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

    __slots__ = ("data", "end", "pos", "typed_filter", "vi64")

    def __init__(
        self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None, vi64: bool = False
    ) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end
        self.vi64 = vi64
        self.typed_filter = False  # draft-22 LOCATION_FILTER (codec20)

    def remaining(self) -> int:
        return self.end - self.pos

    def varint(self) -> int:
        if self.vi64:
            return self._vi64()
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

    def _vi64(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise Truncated("vi64")
        first = self.data[pos]
        ones = 0
        while ones < 8 and first & (0x80 >> ones):
            ones += 1
        size = ones + 1
        if pos + size > self.end:
            raise Truncated("vi64")
        value = first & (0xFF >> size) if size < 9 else 0
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
