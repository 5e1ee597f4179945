"""Keyframe detection and VP8 descriptor access without decoding media.

An SFU must know where a decodable point starts (to switch a viewer or a simulcast layer
only on a keyframe) and, for VP8, must rewrite picture ids so a viewer sees one continuous
stream. Only the RTP payload descriptors and the first bytes of the codec frame header are
read: VP8 per RFC 7741 s4.2-4.3, VP9 per RFC 9628 (draft-ietf-payload-vp9) s4.2, and H.264
per RFC 6184 s5.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from trackmesh.errors import LocalProtocolError, ProtocolError

__all__ = [
    "PayloadError",
    "Vp8Descriptor",
    "is_h264_keyframe",
    "is_keyframe",
    "is_vp8_keyframe",
    "is_vp9_keyframe",
    "parse_vp8_descriptor",
    "rewrite_vp8_picture_id",
    "rewrite_vp8_tl0picidx",
    "vp8_keyframe",
]

_U16: Final = struct.Struct("!H")

# H.264 NAL unit types (RFC 6184 s5.2 table 1; ITU-T H.264 table 7-1).
_NAL_IDR: Final = 5
_NAL_SPS: Final = 7
_NAL_STAP_A: Final = 24
_NAL_FU_A: Final = 28
_NAL_FU_B: Final = 29


class PayloadError(ProtocolError):
    """A malformed codec payload descriptor."""


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


def is_vp9_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """RFC 9628 s4.2: not inter-predicted (P=0), beginning of a frame (B=1), spatial layer 0.

    The first descriptor octet is I|P|L|F|B|E|V|Z; the layer octet (present when L=1) after
    the picture id carries TID(3)|U|SID(3)|D.
    """
    end = len(payload)
    if end == 0:
        raise PayloadError("empty VP9 payload")
    b0 = payload[0]
    if b0 & 0x40 or not b0 & 0x08:
        return False
    pos = 1
    if b0 & 0x80:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at picture id")
        pos += 2 if payload[pos] & 0x80 else 1
    if b0 & 0x20:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at layer indices")
        if (payload[pos] >> 1) & 0x07 != 0:
            return False
    return True


def is_h264_keyframe(payload: bytes | bytearray | memoryview) -> bool:
    """RFC 6184: an IDR slice (5) or SPS (7) as a single NAL, inside a STAP-A (s5.7.1), or
    starting a FU-A/FU-B (s5.8)."""
    end = len(payload)
    if end == 0:
        raise PayloadError("empty H.264 payload")
    nal = payload[0] & 0x1F
    if nal in (_NAL_IDR, _NAL_SPS):
        return True
    if nal == _NAL_STAP_A:
        pos = 1
        while pos < end:
            if pos + 2 > end:
                raise PayloadError("STAP-A NAL size truncated")
            size = _U16.unpack_from(payload, pos)[0]
            pos += 2
            if size == 0 or pos + size > end:
                raise PayloadError(f"STAP-A NAL unit of {size} bytes overruns the payload")
            inner = payload[pos] & 0x1F
            if inner in (_NAL_IDR, _NAL_SPS):
                return True
            pos += size
        return False
    if nal in (_NAL_FU_A, _NAL_FU_B):
        if end < 2:
            raise PayloadError("FU header missing")
        fu = payload[1]
        return bool(fu & 0x80) and (fu & 0x1F) in (_NAL_IDR, _NAL_SPS)
    return False


_Detector = Callable[[bytes | bytearray | memoryview], bool]
_BY_NAME: Final[dict[str, _Detector]] = {
    "vp8": is_vp8_keyframe,
    "vp9": is_vp9_keyframe,
    "h264": is_h264_keyframe,
}
# Also index the SDP spellings directly (rtpmap encoding names are case-insensitive, RFC 4855
# s3) so the per-packet lookup needs no str.lower().
_DETECTORS: Final[dict[str, _Detector]] = {**_BY_NAME, **{k.upper(): v for k, v in _BY_NAME.items()}}


def is_keyframe(codec: str, payload: bytes | bytearray | memoryview) -> bool:
    """Whether this RTP payload starts a keyframe; ``codec`` is "vp8", "vp9" or "h264"."""
    detector = _DETECTORS.get(codec)
    if detector is None:
        detector = _DETECTORS.get(codec.lower())
        if detector is None:
            raise LocalProtocolError(f"no keyframe detector for codec {codec!r}")
    return detector(payload)
