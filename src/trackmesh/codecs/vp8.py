"""VP8 over RTP (RFC 7741): the payload descriptor, key frames, packetizer and depacketizer.

An SFU must know where a decodable point starts (to switch a viewer or a simulcast layer only
on a key frame) and must rewrite picture ids so a viewer sees one continuous stream: only the
payload descriptor (s4.2) and the first octet of the frame header (s4.3, RFC 6386 s9.1) are
read. The packetizer writes one partition-agnostic stream (PID 0, S on the first packet) with a
15-bit picture id; the depacketizer reassembles frames from any conforming sender.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError, check_mtu
from trackmesh.errors import LocalProtocolError

__all__ = [
    "Vp8Depacketizer",
    "Vp8Descriptor",
    "Vp8Packetizer",
    "is_vp8_keyframe",
    "parse_vp8_descriptor",
    "rewrite_vp8_picture_id",
    "rewrite_vp8_tl0picidx",
    "vp8_keyframe",
]

_U16: Final = struct.Struct("!H")


class Vp8Descriptor:
    """The VP8 payload descriptor (RFC 7741 s4.2); absent optional fields are -1.

    Offsets are absolute within the buffer that was parsed, ready for in-place rewriting.
    """

    __slots__ = (
        "key_idx",
        "layer_sync",
        "non_reference",
        "partition_id",
        "picture_id",
        "picture_id_long",
        "picture_id_offset",
        "size",
        "start_of_partition",
        "temporal_id",
        "tl0picidx",
        "tl0picidx_offset",
    )

    key_idx: int
    layer_sync: bool
    non_reference: bool
    partition_id: int
    picture_id: int
    picture_id_long: bool
    picture_id_offset: int
    size: int
    start_of_partition: bool
    temporal_id: int
    tl0picidx: int
    tl0picidx_offset: int


def parse_vp8_descriptor(data: bytes | bytearray | memoryview, offset: int = 0) -> Vp8Descriptor:
    """Parse the VP8 payload descriptor starting at ``offset`` (the RTP payload offset)."""
    end = len(data)
    if offset >= end:
        raise PayloadError("empty VP8 payload")
    b0 = data[offset]
    d = Vp8Descriptor.__new__(Vp8Descriptor)
    d.non_reference = bool(b0 & 0x20)
    d.start_of_partition = bool(b0 & 0x10)
    d.partition_id = b0 & 0x0F  # 4 bits: the R bit above PID must be ignored by receivers
    d.picture_id = d.tl0picidx = d.temporal_id = d.key_idx = -1
    d.picture_id_offset = d.tl0picidx_offset = -1
    d.picture_id_long = False
    d.layer_sync = False
    pos = offset + 1
    if b0 & 0x80:
        # X: the extension octet I|L|T|K|RSV follows.
        if pos >= end:
            raise PayloadError("VP8 descriptor truncated after X")
        x = data[pos]
        pos += 1
        if x & 0x80:
            if pos >= end:
                raise PayloadError("VP8 descriptor truncated at PictureID")
            d.picture_id_offset = pos
            if data[pos] & 0x80:
                # M=1: 15-bit picture id.
                if pos + 2 > end:
                    raise PayloadError("VP8 descriptor truncated in 15-bit PictureID")
                d.picture_id = _U16.unpack_from(data, pos)[0] & 0x7FFF
                d.picture_id_long = True
                pos += 2
            else:
                d.picture_id = data[pos]
                pos += 1
        if x & 0x40:
            if pos >= end:
                raise PayloadError("VP8 descriptor truncated at TL0PICIDX")
            d.tl0picidx_offset = pos
            d.tl0picidx = data[pos]
            pos += 1
        if x & 0x30:
            # T or K: one octet TID(2)|Y(1)|KEYIDX(5); each field is valid only with its flag.
            if pos >= end:
                raise PayloadError("VP8 descriptor truncated at TID/KEYIDX")
            b = data[pos]
            if x & 0x20:
                d.temporal_id = b >> 6
                d.layer_sync = bool(b & 0x20)
            if x & 0x10:
                d.key_idx = b & 0x1F
            pos += 1
    d.size = pos - offset
    return d


def is_vp8_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """RFC 7741 s4.3: first packet of partition 0 (S=1, PID=0) whose frame header P bit is 0."""
    return vp8_keyframe(payload, parse_vp8_descriptor(payload))


def vp8_keyframe(payload: bytes | bytearray | memoryview, d: Vp8Descriptor) -> bool:
    """:func:`is_vp8_keyframe` with the payload's descriptor already parsed."""
    if not d.start_of_partition or d.partition_id != 0:
        return False
    if d.size >= len(payload):
        raise PayloadError("VP8 payload has a descriptor but no frame header")
    return not payload[d.size] & 0x01


def rewrite_vp8_picture_id(buf: bytearray | memoryview, desc: Vp8Descriptor, picture_id: int) -> None:
    """Overwrite the picture id in place, keeping its 7- or 15-bit width (RFC 7741 s4.2)."""
    if desc.picture_id_offset < 0:
        raise LocalProtocolError("the VP8 descriptor has no PictureID to rewrite")
    if desc.picture_id_long:
        _U16.pack_into(buf, desc.picture_id_offset, 0x8000 | (picture_id & 0x7FFF))
    else:
        buf[desc.picture_id_offset] = picture_id & 0x7F


def rewrite_vp8_tl0picidx(buf: bytearray | memoryview, desc: Vp8Descriptor, tl0picidx: int) -> None:
    """Overwrite TL0PICIDX in place (it must stay continuous across a simulcast switch)."""
    if desc.tl0picidx_offset < 0:
        raise LocalProtocolError("the VP8 descriptor has no TL0PICIDX to rewrite")
    buf[desc.tl0picidx_offset] = tl0picidx & 0xFF


class Vp8Packetizer:
    """Frame -> payloads: X=1, I=1 with a 15-bit picture id counting frames (RFC 7741 s4.2)."""

    __slots__ = ("picture_id",)

    def __init__(self, picture_id: int = 0) -> None:
        self.picture_id = picture_id & 0x7FFF

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 5)
        if not frame:
            raise PayloadError("empty VP8 frame")
        pid = 0x8000 | self.picture_id
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        first = bytes([0x90, 0x80, pid >> 8, pid & 0xFF])  # X|S, PID 0; I; M|PictureID
        rest = bytes([0x80, 0x80, pid >> 8, pid & 0xFF])  # X, S=0
        room = mtu - 4
        view = memoryview(frame)
        return [(rest if pos else first) + view[pos : pos + room] for pos in range(0, len(view), room)]


class Vp8Depacketizer(Depacketizer):
    """Payloads -> VP8 frames; a frame starts with S=1 and PID=0 (RFC 7741 s4.4)."""

    __slots__ = ()

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        d = parse_vp8_descriptor(payload)
        return d.start_of_partition and d.partition_id == 0

    def _append(self, payload: Buffer) -> None:
        d = parse_vp8_descriptor(payload)
        if not self._buf:
            if not (d.start_of_partition and d.partition_id == 0):
                raise PayloadError("VP8 frame does not begin with partition 0")
            self._keyframe = vp8_keyframe(payload, d)
        self._buf += memoryview(payload)[d.size :]
