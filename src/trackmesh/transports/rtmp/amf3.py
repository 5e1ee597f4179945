"""AMF3 decoding (Adobe AMF3 spec, 2013), for the values Flash-derived encoders send after the
AMF0 ``avmplus-object`` switch and in AMF3 data messages. Decode only: replies are AMF0.

Values map as in :mod:`.amf0`; integers become int, XML/XMLDocument str, and a ByteArray a hex
``str`` (no command we serve reads one). Strings, objects and traits by reference (s1.3.1) are resolved
against tables of what was read; unknown or cyclic references raise (a cycle would make
every later comparison or encode recurse without end). Depth and sizes are capped.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.values import AmfValue

__all__ = ["decode_value"]

MAX_DEPTH: Final = 32
_F64: Final = struct.Struct("!d")

_UNDEFINED, _NULL, _FALSE, _TRUE, _INTEGER, _DOUBLE, _STRING, _XML_DOC = range(8)
_DATE, _ARRAY, _OBJECT, _XML, _BYTE_ARRAY = range(8, 13)


class _Traits:
    __slots__ = ("dynamic", "externalizable", "sealed")

    def __init__(self, sealed: list[str], dynamic: bool, externalizable: bool) -> None:
        self.sealed = sealed
        self.dynamic = dynamic
        self.externalizable = externalizable


class _Reader:
    __slots__ = ("data", "end", "objects", "open", "pos", "strings", "traits")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.strings: list[str] = []
        self.objects: list[AmfValue] = []
        self.traits: list[_Traits] = []
        self.open: set[int] = set()  # containers still being read: a reference to one is a cycle

    def u8(self) -> int:
        if self.pos >= self.end:
            raise RtmpError("AMF3 value truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise RtmpError("AMF3 value truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u29(self) -> int:
        """The variable-length U29 (s1.3.1): 7 bits per byte for three bytes, then 8."""
        value = 0
        for _ in range(3):
            b = self.u8()
            value = (value << 7) | (b & 0x7F)
            if not b & 0x80:
                return value
        return (value << 8) | self.u8()

    def string(self) -> str:
        ref = self.u29()
        if not ref & 1:
            index = ref >> 1
            if index >= len(self.strings):
                raise RtmpError("AMF3 string reference out of range")
            return self.strings[index]
        try:
            s = self.take(ref >> 1).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RtmpError("AMF3 string is not UTF-8") from exc
        if s:  # the empty string is never sent by reference (s1.3.2)
            self.strings.append(s)
        return s

    def object_ref(self, ref: int) -> AmfValue:
        index = ref >> 1
        if index >= len(self.objects):
            raise RtmpError("AMF3 object reference out of range")
        if index in self.open:
            raise RtmpError("AMF3 cyclic reference")
        return self.objects[index]

    def value(self, depth: int) -> AmfValue:
        if depth > MAX_DEPTH:
            raise RtmpError(f"AMF3 nesting deeper than {MAX_DEPTH}")
        marker = self.u8()
        if marker in (_UNDEFINED, _NULL):
            return None
        if marker == _FALSE:
            return False
        if marker == _TRUE:
            return True
        if marker == _INTEGER:
            v = self.u29()
            return v - (1 << 29) if v & (1 << 28) else v  # 29-bit two's complement
        if marker == _DOUBLE:
            number: float = _F64.unpack(self.take(8))[0]
            return number
        if marker == _STRING:
            return self.string()
        if marker in (_XML_DOC, _XML, _BYTE_ARRAY, _DATE):
            ref = self.u29()
            if not ref & 1:
                return self.object_ref(ref)
            if marker == _DATE:
                ms: float = _F64.unpack(self.take(8))[0]
                self.objects.append(ms)
                return ms
            raw = self.take(ref >> 1)
            text = raw.hex() if marker == _BYTE_ARRAY else raw.decode("utf-8", "replace")
            self.objects.append(text)
            return text
        if marker == _ARRAY:
            ref = self.u29()
            if not ref & 1:
                return self.object_ref(ref)
            count = ref >> 1
            if count > self.end - self.pos:
                raise RtmpError("AMF3 array count exceeds the data")
            assoc: dict[str, AmfValue] = {}
            while key := self.string():
                assoc[key] = self.value(depth + 1)
            items: list[AmfValue] = []
            index = len(self.objects)
            self.objects.append(assoc if assoc else items)
            self.open.add(index)
            for _ in range(count):
                items.append(self.value(depth + 1))
            self.open.discard(index)
            if assoc:
                for i, item in enumerate(items):
                    assoc[str(i)] = item
                return assoc
            return items
        if marker == _OBJECT:
            ref = self.u29()
            if not ref & 1:
                return self.object_ref(ref)
            if not ref & 2:
                index = ref >> 2
                if index >= len(self.traits):
                    raise RtmpError("AMF3 traits reference out of range")
                traits = self.traits[index]
            else:
                externalizable = bool(ref & 4)
                dynamic = bool(ref & 8)
                count = ref >> 4
                if count > self.end - self.pos:
                    raise RtmpError("AMF3 sealed member count exceeds the data")
                self.string()  # class name
                traits = _Traits([self.string() for _ in range(count)], dynamic, externalizable)
                self.traits.append(traits)
            if traits.externalizable:
                raise RtmpError("AMF3 externalizable objects are not supported")
            obj: dict[str, AmfValue] = {}
            index = len(self.objects)
            self.objects.append(obj)
            self.open.add(index)
            for name in traits.sealed:
                obj[name] = self.value(depth + 1)
            if traits.dynamic:
                while key := self.string():
                    obj[key] = self.value(depth + 1)
            self.open.discard(index)
            return obj
        raise RtmpError(f"AMF3 marker 0x{marker:02x} is not supported")


def decode_value(data: bytes, pos: int, depth: int = 0) -> tuple[AmfValue, int]:
    """One AMF3 value at ``pos``: (value, position after it). Reference tables are per value,
    as an AMF0 ``avmplus-object`` switch starts fresh ones (AMF0 spec s3.1)."""
    reader = _Reader(data, pos)
    value = reader.value(depth)
    return value, reader.pos
