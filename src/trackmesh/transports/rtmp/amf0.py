"""AMF0 (Adobe AMF0 spec, 2007) for RTMP commands and data messages.

Values map to Python as: number -> float, boolean -> bool, string/long string/XML -> str,
object/ECMA array/typed object -> dict, strict array -> list, null/undefined -> None,
date -> float (ms since the epoch). :class:`Undefined` marks an undefined to *write* (a few
replies carry one). An ``avmplus-object`` marker (0x11) switches the next value to AMF3
(AMF0 spec s3.1, what Flash-derived encoders send inside AMF3 commands); :mod:`.amf3` reads it.

Decoding is capped: nesting depth, element counts and the total size are bounded by the input,
and references (0x07) may only point at objects already read completely (no cycles). Anything malformed raises
:class:`~.errors.RtmpError`.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.transports.rtmp import amf3
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.values import UNDEFINED, AmfValue, Undefined

__all__ = ["MAX_DEPTH", "UNDEFINED", "AmfValue", "Undefined", "decode_all", "encode", "encode_all"]

MAX_DEPTH: Final = 32

_NUMBER: Final = 0x00
_BOOLEAN: Final = 0x01
_STRING: Final = 0x02
_OBJECT: Final = 0x03
_MOVIECLIP: Final = 0x04
_NULL: Final = 0x05
_UNDEFINED: Final = 0x06
_REFERENCE: Final = 0x07
_ECMA_ARRAY: Final = 0x08
_OBJECT_END: Final = 0x09
_STRICT_ARRAY: Final = 0x0A
_DATE: Final = 0x0B
_LONG_STRING: Final = 0x0C
_UNSUPPORTED: Final = 0x0D
_XML: Final = 0x0F
_TYPED_OBJECT: Final = 0x10
_AVMPLUS: Final = 0x11

_F64: Final = struct.Struct("!d")
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")


class _Reader:
    __slots__ = ("data", "end", "open", "pos", "refs")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.refs: list[AmfValue] = []
        self.open: set[int] = set()  # containers still being read: a reference to one is a cycle

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise RtmpError("AMF0 value truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        if self.pos >= self.end:
            raise RtmpError("AMF0 value truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def utf8(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RtmpError("AMF0 string is not UTF-8") from exc

    def container(self, value: dict[str, AmfValue] | list[AmfValue]) -> int:
        self.refs.append(value)
        index = len(self.refs) - 1
        self.open.add(index)
        return index

    def properties(self, into: dict[str, AmfValue], depth: int) -> dict[str, AmfValue]:
        index = self.container(into)
        out = into
        while True:
            key = self.utf8(self.u16())
            if not key:
                if self.pos < self.end and self.data[self.pos] == _OBJECT_END:
                    self.pos += 1
                    self.open.discard(index)
                    return out
                # An empty key without the end marker: a malformed object.
                raise RtmpError("AMF0 object missing its end marker")
            out[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> AmfValue:
        if depth > MAX_DEPTH:
            raise RtmpError(f"AMF0 nesting deeper than {MAX_DEPTH}")
        marker = self.u8()
        if marker == _NUMBER:
            number: float = _F64.unpack(self.take(8))[0]
            return number
        if marker == _BOOLEAN:
            return self.u8() != 0
        if marker == _STRING:
            return self.utf8(self.u16())
        if marker in (_LONG_STRING, _XML):
            return self.utf8(self.u32())
        if marker in (_NULL, _UNDEFINED, _UNSUPPORTED):
            return None
        if marker == _OBJECT:
            return self.properties({}, depth)
        if marker == _TYPED_OBJECT:
            self.utf8(self.u16())  # the class name: not needed by any command we serve
            return self.properties({}, depth)
        if marker == _ECMA_ARRAY:
            self.take(4)  # the count is a hint only; encoders get it wrong, the end marker rules
            return self.properties({}, depth)
        if marker == _STRICT_ARRAY:
            count = self.u32()
            if count > self.end - self.pos:  # every element takes at least one byte
                raise RtmpError("AMF0 strict array count exceeds the data")
            items: list[AmfValue] = []
            index = self.container(items)
            for _ in range(count):
                items.append(self.value(depth + 1))
            self.open.discard(index)
            return items
        if marker == _DATE:
            ms: float = _F64.unpack(self.take(8))[0]
            self.take(2)  # time zone, reserved as 0x0000 (s2.13)
            return ms
        if marker == _REFERENCE:
            index = self.u16()
            if index >= len(self.refs):
                raise RtmpError("AMF0 reference to an object not read yet")
            if index in self.open:
                raise RtmpError("AMF0 cyclic reference")
            return self.refs[index]
        if marker == _AVMPLUS:
            value, self.pos = amf3.decode_value(self.data, self.pos, depth)
            return value
        raise RtmpError(f"AMF0 marker 0x{marker:02x} is not supported")


def decode_all(data: bytes) -> list[AmfValue]:
    """Every AMF0 value in ``data`` (a command: name, transaction id, command object, args...)."""
    reader = _Reader(data)
    values: list[AmfValue] = []
    while reader.pos < reader.end:
        values.append(reader.value())
    return values


def _write_string_body(out: bytearray, s: str) -> None:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 property names are at most 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _write(out: bytearray, value: AmfValue, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"AMF0 nesting deeper than {MAX_DEPTH}")
    if value is None:
        out.append(_NULL)
    elif isinstance(value, Undefined):
        out.append(_UNDEFINED)
    elif isinstance(value, bool):
        out.append(_BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        out.append(_NUMBER)
        out += _F64.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")  # AMF0 lengths count bytes, not characters
        if len(raw) > 0xFFFF:
            out.append(_LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(_STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(value, dict):
        out.append(_OBJECT)
        for key, item in value.items():
            _write_string_body(out, key)
            _write(out, item, depth + 1)
        out += b"\x00\x00\x09"
    else:
        out.append(_STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _write(out, item, depth + 1)


def encode(value: AmfValue) -> bytes:
    out = bytearray()
    _write(out, value, 0)
    return bytes(out)


def encode_all(*values: AmfValue) -> bytes:
    out = bytearray()
    for value in values:
        _write(out, value, 0)
    return bytes(out)
