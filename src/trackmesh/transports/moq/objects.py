"""Draft-16 data streams and datagrams (draft-ietf-moq-transport-16 s10).

- SUBGROUP_HEADER streams (s10.4.2): types 0x10-0x1D, plus 0x30-0x3D with DEFAULT_PRIORITY
  (0x20: no Publisher Priority field). Type bits: 0x01 extensions present, bits 1-2 the
  Subgroup ID mode (0 zero, 1 the first Object ID, 2 explicit), 0x08 the stream ends its group.
  Each object: Object ID Delta (i), [Extensions Length (i), Extensions], Payload Length (i),
  [Object Status (i) when the length is 0], Payload.
- FETCH_HEADER streams (s10.4.4): type 0x05, Request ID, then objects led by Serialization Flags.
- OBJECT_DATAGRAM (s10.3): type ``0b00X0XXXX``: 0x01 extensions, 0x02 end of group, 0x04 Object
  ID 0 (absent), 0x08 default priority (absent), 0x20 a status instead of a payload.

Draft-20 has the same layouts with vi64 integers, and SUBGROUP_HEADER gains FIRST_OBJECT (0x40:
types 0x50-0x5D and 0x70-0x7D); every function takes ``vi64`` for it.

A relay reads the object headers to index its cache and forwards the bytes: the payload is
sliced, never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.varint import Reader, encode_varint, encode_vi64

__all__ = [
    "FETCH_HEADER",
    "Datagram",
    "FetchObject",
    "ObjectRecord",
    "SubgroupHeader",
    "SubgroupStreamParser",
    "decode_datagram",
    "decode_fetch_object",
    "decode_subgroup_header",
    "encode_datagram",
    "encode_fetch_object",
    "encode_object",
    "encode_subgroup_header",
    "is_subgroup_type",
]

FETCH_HEADER = 0x05
STATUS_NORMAL = 0x0
STATUS_END_OF_GROUP = 0x3
STATUS_END_OF_TRACK = 0x4
OBJECT_STATUSES = frozenset({STATUS_NORMAL, STATUS_END_OF_GROUP, STATUS_END_OF_TRACK})
MAX_OBJECT = 16 << 20  # the largest object payload accepted (a limit of ours, not the draft's)
MAX_EXTENSIONS = 0xFFFF

SUBGROUP_ID_ZERO = 0
SUBGROUP_ID_FIRST_OBJECT = 1
SUBGROUP_ID_EXPLICIT = 2


def is_subgroup_type(kind: int, vi64: bool = False) -> bool:
    base = kind & ~0x40 if vi64 else kind
    return (0x10 <= base <= 0x1D or 0x30 <= base <= 0x3D) and (kind >> 1) & 0x3 != 3


@dataclass(slots=True)
class SubgroupHeader:
    track_alias: int
    group_id: int
    subgroup_id: int | None  # None: the first object's ID (mode 1), known once it arrives
    publisher_priority: int | None  # None: inherited from the subscription (type bit 0x20)
    extensions_present: bool = False
    end_of_group: bool = False
    subgroup_id_mode: int = SUBGROUP_ID_EXPLICIT
    first_object: bool = True  # draft-20 FIRST_OBJECT: the stream starts at the subgroup's first object

    def type_for(self, vi64: bool) -> int:
        kind = self.type
        if vi64 and self.first_object:
            kind |= 0x40
        return kind

    @property
    def type(self) -> int:
        kind = 0x10 | (self.subgroup_id_mode << 1)
        if self.extensions_present:
            kind |= 0x01
        if self.end_of_group:
            kind |= 0x08
        if self.publisher_priority is None:
            kind |= 0x20
        return kind


def encode_subgroup_header(h: SubgroupHeader, vi64: bool = False) -> bytes:
    enc = encode_vi64 if vi64 else encode_varint
    out = enc(h.type_for(vi64)) + enc(h.track_alias) + enc(h.group_id)
    if h.subgroup_id_mode == SUBGROUP_ID_EXPLICIT:
        out += enc(h.subgroup_id or 0)
    if h.publisher_priority is not None:
        out += bytes((h.publisher_priority,))
    return out


def decode_subgroup_header(r: Reader, kind: int) -> SubgroupHeader:
    """The header after its type (already read): raises Truncated when the bytes end early."""
    if not is_subgroup_type(kind, r.vi64):
        raise MoqDecodeError(f"not a SUBGROUP_HEADER type: 0x{kind:x}")
    mode = (kind >> 1) & 0x3
    alias = r.varint()
    group = r.varint()
    subgroup: int | None = 0
    if mode == SUBGROUP_ID_EXPLICIT:
        subgroup = r.varint()
    elif mode == SUBGROUP_ID_FIRST_OBJECT:
        subgroup = None
    priority = None if kind & 0x20 else r.uint8()
    first = bool(kind & 0x40) if r.vi64 else True
    return SubgroupHeader(alias, group, subgroup, priority, bool(kind & 0x01), bool(kind & 0x08), mode, first)


@dataclass(slots=True)
class ObjectRecord:
    """One object of a subgroup stream: its ID, status, raw extension block and payload, and the
    exact bytes it took on the stream (``wire``), which a relay forwards as they are."""

    object_id: int
    status: int
    extensions: bytes
    payload: bytes
    wire: bytes
    has_extensions: bool = False


def encode_object(
    object_id: int,
    previous_id: int | None,
    payload: bytes,
    *,
    extensions: bytes | None = None,
    status: int = STATUS_NORMAL,
    vi64: bool = False,
) -> bytes:
    """One object on a subgroup stream; ``extensions`` is the raw Key-Value-Pair block, given iff
    the header has the extensions bit."""
    enc = encode_vi64 if vi64 else encode_varint
    delta = object_id if previous_id is None else object_id - previous_id - 1
    if delta < 0:
        raise ValueError("object IDs must increase within a subgroup")
    out = bytearray(enc(delta))
    if extensions is not None:
        out += enc(len(extensions)) + extensions
    if payload:
        out += enc(len(payload)) + payload
    else:
        out += enc(0) + enc(status)
    return bytes(out)


def _check_extensions(raw: bytes, vi64: bool) -> None:
    """An extension block must be whole Key-Value-Pairs (s1.4.2): checked once, on arrival."""
    r = Reader(raw, vi64=vi64)
    key = 0
    try:
        while r.remaining():
            key += r.varint()
            if key & 1:
                r.blob(MAX_EXTENSIONS)
            else:
                r.varint()
    except Truncated:
        raise MoqDecodeError("object extensions are not whole Key-Value-Pairs") from None


def transcode_extensions(raw: bytes, from_vi64: bool, to_vi64: bool) -> bytes:
    """An extension block (delta-typed Key-Value-Pairs) in the other integer encoding."""
    if from_vi64 == to_vi64 or not raw:
        return raw
    enc = encode_vi64 if to_vi64 else encode_varint
    r = Reader(raw, vi64=from_vi64)
    out = bytearray()
    key = 0
    while r.remaining():
        delta = r.varint()
        key += delta
        out += enc(delta)
        if key & 1:
            value = r.blob(MAX_EXTENSIONS)
            out += enc(len(value)) + value
        else:
            out += enc(r.varint())
    return bytes(out)


def transcode_objects(objects: list[ObjectRecord], previous_id: int | None, to_vi64: bool, from_vi64: bool) -> bytes:
    """Objects of one subgroup stream re-framed in the other draft's integers (payloads as they are)."""
    out = bytearray()
    for o in objects:
        ext = transcode_extensions(o.extensions, from_vi64, to_vi64) if o.has_extensions else None
        out += encode_object(o.object_id, previous_id, o.payload, extensions=ext, status=o.status, vi64=to_vi64)
        previous_id = o.object_id
    return bytes(out)


class SubgroupStreamParser:
    """Incremental parser of one SUBGROUP_HEADER stream (after its type): feed bytes, get the
    header once and the whole objects as they complete."""

    __slots__ = ("_buf", "_need", "_payload_end", "header", "kind", "previous_id", "vi64")

    def __init__(self, kind: int, vi64: bool = False) -> None:
        if not is_subgroup_type(kind, vi64):
            raise MoqDecodeError(f"not a SUBGROUP_HEADER type: 0x{kind:x}")
        self.kind = kind
        self.vi64 = vi64
        self._buf = bytearray()
        self._need = 0  # bytes the buffer must hold before parsing again
        self._payload_end = 0
        self.header: SubgroupHeader | None = None
        self.previous_id: int | None = None

    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[ObjectRecord]:
        self._buf += data
        if len(self._buf) < self._need:
            return []  # the pending object's payload is still arriving
        buf = bytes(self._buf)
        out: list[ObjectRecord] = []
        r = Reader(buf, vi64=self.vi64)
        consumed = 0
        try:
            if self.header is None:
                self.header = decode_subgroup_header(r, self.kind)
                consumed = r.pos
            while r.remaining():
                record = self._object(r, consumed)
                out.append(record)
                consumed = r.pos
                self.previous_id = record.object_id
                if self.header.subgroup_id is None:
                    self.header.subgroup_id = record.object_id
        except Truncated:
            pass
        del self._buf[:consumed]
        self._need = 0
        if self._payload_end > consumed:
            self._need = self._payload_end - consumed
        self._payload_end = 0
        return out

    def _object(self, r: Reader, start: int) -> ObjectRecord:
        assert self.header is not None
        delta = r.varint()
        object_id = delta if self.previous_id is None else self.previous_id + delta + 1
        extensions = b""
        if self.header.extensions_present:
            size = r.varint()
            if size > MAX_EXTENSIONS:
                raise MoqDecodeError(f"extension block of {size} bytes")
            extensions = r.raw(size)
            _check_extensions(extensions, self.vi64)
        length = r.varint()
        if length > MAX_OBJECT:
            raise MoqDecodeError(f"object of {length} bytes (at most {MAX_OBJECT})")
        status = STATUS_NORMAL
        payload = b""
        if length == 0:
            status = r.varint()
            if status not in OBJECT_STATUSES:
                raise MoqDecodeError(f"unknown Object Status 0x{status:x}")
        else:
            self._payload_end = r.pos + length
            payload = r.raw(length)
        wire = bytes(r.data[start : r.pos])
        return ObjectRecord(object_id, status, extensions, payload, wire, self.header.extensions_present)


@dataclass(slots=True)
class Datagram:
    track_alias: int
    group_id: int
    object_id: int
    publisher_priority: int | None
    payload: bytes = b""
    extensions: bytes | None = None
    status: int | None = None  # set: a status datagram with no payload
    end_of_group: bool = False


def encode_datagram(d: Datagram, vi64: bool = False) -> bytes:
    enc = encode_vi64 if vi64 else encode_varint
    kind = 0
    if d.extensions is not None:
        kind |= 0x01
    if d.end_of_group and d.status is None:
        kind |= 0x02
    if d.object_id == 0:
        kind |= 0x04
    if d.publisher_priority is None:
        kind |= 0x08
    if d.status is not None:
        kind |= 0x20
    out = bytearray(enc(kind) + enc(d.track_alias) + enc(d.group_id))
    if d.object_id:
        out += enc(d.object_id)
    if d.publisher_priority is not None:
        out.append(d.publisher_priority)
    if d.extensions is not None:
        out += enc(len(d.extensions)) + d.extensions
    if d.status is not None:
        out += enc(d.status)
    else:
        out += d.payload
    return bytes(out)


def decode_datagram(data: bytes | memoryview, vi64: bool = False) -> Datagram:
    r = Reader(data, vi64=vi64)
    try:
        kind = r.varint()
        if kind & ~0x2F:
            raise MoqDecodeError(f"unknown OBJECT_DATAGRAM type 0x{kind:x}")
        alias = r.varint()
        group = r.varint()
        object_id = 0 if kind & 0x04 else r.varint()
        priority = None if kind & 0x08 else r.uint8()
        extensions = None
        if kind & 0x01:
            extensions = r.blob(MAX_EXTENSIONS)
        if kind & 0x20:
            status = r.varint()
            if status not in OBJECT_STATUSES:
                raise MoqDecodeError(f"unknown Object Status 0x{status:x}")
            if r.remaining():
                raise MoqDecodeError("bytes after a status datagram")
            return Datagram(alias, group, object_id, priority, b"", extensions, status, False)
        return Datagram(alias, group, object_id, priority, r.rest(), extensions, None, bool(kind & 0x02))
    except Truncated:
        raise MoqDecodeError("truncated OBJECT_DATAGRAM") from None


@dataclass(slots=True)
class FetchObject:
    group_id: int
    subgroup_id: int
    object_id: int
    publisher_priority: int
    payload: bytes
    extensions: bytes | None = None
    datagram: bool = False


_F_OBJECT = 0x04
_F_GROUP = 0x08
_F_PRIORITY = 0x10
_F_EXTENSIONS = 0x20
_F_DATAGRAM = 0x40
_F_END_NON_EXISTENT = 0x8C
_F_END_UNKNOWN = 0x10C


def encode_fetch_object(o: FetchObject) -> bytes:
    """Every field explicit (s10.4.4 allows it; it keeps a relay's cache replay stateless)."""
    flags = _F_OBJECT | _F_GROUP | _F_PRIORITY | (_F_DATAGRAM if o.datagram else 0x03)
    if o.extensions is not None:
        flags |= _F_EXTENSIONS
    out = bytearray(encode_varint(flags) + encode_varint(o.group_id))
    if not o.datagram:
        out += encode_varint(o.subgroup_id)
    out += encode_varint(o.object_id)
    out.append(o.publisher_priority)
    if o.extensions is not None:
        out += encode_varint(len(o.extensions)) + o.extensions
    out += encode_varint(len(o.payload)) + o.payload
    return bytes(out)


def encode_fetch_objects_vi64(objects: list[FetchObject]) -> bytes:
    """Objects of a draft-20 FETCH stream (draft-20 s11.4.4), ascending: the first object's Group
    and Object IDs are absolute; then a new group is a delta from the previous group minus one,
    with its Object ID absolute; in a group an Object ID is a delta, left out when it is the
    previous plus one; the Subgroup ID and priority are left out when they follow the previous."""
    out = bytearray()
    prior: FetchObject | None = None
    for o in objects:
        flags = 0
        fields: list[int] = []
        if prior is None or o.group_id != prior.group_id:
            flags |= _F_GROUP | _F_OBJECT
            fields += [o.group_id if prior is None else o.group_id - prior.group_id - 1]
        elif o.object_id != prior.object_id + 1:
            flags |= _F_OBJECT
        subgroup: int | None = None
        prior_sg = None if prior is None else (0 if prior.datagram else prior.subgroup_id)
        if o.datagram:
            flags |= _F_DATAGRAM
        elif o.subgroup_id == 0:
            pass
        elif o.subgroup_id == prior_sg:
            flags |= 0x01
        elif prior_sg is not None and o.subgroup_id == prior_sg + 1:
            flags |= 0x02
        else:
            flags |= 0x03
            subgroup = o.subgroup_id
        if prior is None or o.publisher_priority != prior.publisher_priority:
            flags |= _F_PRIORITY
        if o.extensions:
            flags |= _F_EXTENSIONS
        out += encode_vi64(flags)
        if flags & _F_GROUP:
            out += encode_vi64(fields[0])
        if subgroup is not None:
            out += encode_vi64(subgroup)
        if flags & _F_OBJECT:
            same_group = prior is not None and o.group_id == prior.group_id
            out += encode_vi64(o.object_id - prior.object_id if same_group and prior else o.object_id)
        if flags & _F_PRIORITY:
            out.append(o.publisher_priority)
        if o.extensions:
            out += encode_vi64(len(o.extensions)) + o.extensions
        out += encode_vi64(len(o.payload)) + o.payload
        prior = o
    return bytes(out)


def decode_fetch_object(r: Reader, prior: FetchObject | None) -> FetchObject | None:
    """One object of a FETCH stream; None for an end-of-range marker. ``prior`` resolves the
    fields the flags leave out (s10.4.4)."""
    flags = r.varint()
    if flags in (_F_END_NON_EXISTENT, _F_END_UNKNOWN):
        r.varint()
        r.varint()
        return None
    if flags & ~0x7F:
        raise MoqDecodeError(f"unknown FETCH serialization flags 0x{flags:x}")
    needs_prior = not (flags & _F_GROUP and flags & _F_OBJECT and flags & _F_PRIORITY)
    mode = flags & 0x03
    if prior is None and (needs_prior or (not flags & _F_DATAGRAM and mode in (1, 2))):
        raise MoqDecodeError("FETCH object refers to a prior object on the first object")
    group = r.varint() if flags & _F_GROUP else prior.group_id  # type: ignore[union-attr]
    datagram = bool(flags & _F_DATAGRAM)
    subgroup = 0
    if not datagram:
        if mode == 3:
            subgroup = r.varint()
        elif mode == 1:
            subgroup = prior.subgroup_id  # type: ignore[union-attr]
        elif mode == 2:
            subgroup = prior.subgroup_id + 1  # type: ignore[union-attr]
    object_id = r.varint() if flags & _F_OBJECT else prior.object_id + 1  # type: ignore[union-attr]
    priority = r.uint8() if flags & _F_PRIORITY else prior.publisher_priority  # type: ignore[union-attr]
    extensions = r.blob(MAX_EXTENSIONS) if flags & _F_EXTENSIONS else None
    length = r.varint()
    if length > MAX_OBJECT:
        raise MoqDecodeError(f"object of {length} bytes (at most {MAX_OBJECT})")
    return FetchObject(group, subgroup, object_id, priority, r.raw(length), extensions, datagram)
