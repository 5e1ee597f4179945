"""The VP9 RTP payload descriptor (RFC 9628 s4.2), parsed without decoding media.

An SFU forwarding VP9 SVC (all spatial layers on one SSRC) reads, per packet, which spatial
and temporal layer it belongs to (SID, TID), where a layer frame begins and ends (B, E),
whether it is predicted from earlier pictures (P) and whether it is a temporal switching-up
point (U). The first octet is I|P|L|F|B|E|V|Z; then, in order and each only when flagged:
the picture id (I; 7 bits, or 15 with M=1), the layer indices TID(3)|U|SID(3)|D (L), then
TL0PICIDX in non-flexible mode (L, F=0) or up to three P_DIFF octets in flexible mode (F, P;
each with an N bit saying another follows), then the scalability structure (V, s4.2.1).
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.keyframe import PayloadError

__all__ = ["Vp9Descriptor", "parse_vp9_descriptor"]

_MAX_P_DIFF: Final = 3


class Vp9Descriptor:
    """One packet's VP9 payload descriptor; absent optional fields are -1 (SID/TID are 0
    without layer indices, as for a stream with a single layer)."""

    __slots__ = (
        "begin",
        "end",
        "flexible",
        "inter_layer",
        "inter_picture",
        "not_upper_ref",
        "picture_id",
        "picture_id_long",
        "picture_id_offset",
        "size",
        "spatial_id",
        "ss_layers",
        "switch_up",
        "temporal_id",
        "tl0picidx",
        "tl0picidx_offset",
    )

    begin: bool
    end: bool
    flexible: bool
    inter_layer: bool
    inter_picture: bool
    not_upper_ref: bool
    picture_id: int
    picture_id_long: bool
    picture_id_offset: int
    size: int
    spatial_id: int
    ss_layers: int
    switch_up: bool
    temporal_id: int
    tl0picidx: int
    tl0picidx_offset: int


def parse_vp9_descriptor(data: bytes | bytearray | memoryview, offset: int = 0) -> Vp9Descriptor:
    """Parse the descriptor at ``offset``; raises :class:`PayloadError` on truncation."""
    end = len(data)
    if offset >= end:
        raise PayloadError("empty VP9 payload")
    b0 = data[offset]
    d = Vp9Descriptor.__new__(Vp9Descriptor)
    d.inter_picture = bool(b0 & 0x40)
    d.flexible = bool(b0 & 0x10)
    d.begin = bool(b0 & 0x08)
    d.end = bool(b0 & 0x04)
    d.not_upper_ref = bool(b0 & 0x01)
    d.picture_id = d.tl0picidx = d.picture_id_offset = d.tl0picidx_offset = -1
    d.picture_id_long = False
    d.spatial_id = d.temporal_id = 0
    d.switch_up = d.inter_layer = False
    d.ss_layers = 0
    pos = offset + 1
    if b0 & 0x80:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at picture id")
        d.picture_id_offset = pos
        if data[pos] & 0x80:
            if pos + 2 > end:
                raise PayloadError("VP9 descriptor truncated in 15-bit picture id")
            d.picture_id = ((data[pos] & 0x7F) << 8) | data[pos + 1]
            d.picture_id_long = True
            pos += 2
        else:
            d.picture_id = data[pos]
            pos += 1
    if b0 & 0x20:
        if pos >= end:
            raise PayloadError("VP9 descriptor truncated at layer indices")
        b = data[pos]
        pos += 1
        d.temporal_id = b >> 5
        d.switch_up = bool(b & 0x10)
        d.spatial_id = (b >> 1) & 0x07
        d.inter_layer = bool(b & 0x01)
        if not d.flexible:
            if pos >= end:
                raise PayloadError("VP9 descriptor truncated at TL0PICIDX")
            d.tl0picidx_offset = pos
            d.tl0picidx = data[pos]
            pos += 1
    if d.flexible and d.inter_picture:
        for i in range(_MAX_P_DIFF + 1):
            if i == _MAX_P_DIFF:
                raise PayloadError("VP9 descriptor has more than 3 reference indices")
            if pos >= end:
                raise PayloadError("VP9 descriptor truncated at P_DIFF")
            n = data[pos] & 0x01
            pos += 1
            if not n:
                break
    if b0 & 0x02:
        pos = _skip_ss(data, pos, end, d)
    d.size = pos - offset
    return d


def _skip_ss(data: bytes | bytearray | memoryview, pos: int, end: int, d: Vp9Descriptor) -> int:
    """Step over the scalability structure (s4.2.1): N_S(3)|Y|G|-, then N_S+1 resolutions
    (4 octets each) when Y, then when G a picture group of N_G entries TID(3)|U|R(2)|-
    each followed by R P_DIFF octets."""
    if pos >= end:
        raise PayloadError("VP9 scalability structure truncated")
    b = data[pos]
    pos += 1
    layers = (b >> 5) + 1
    d.ss_layers = layers
    if b & 0x10:
        pos += 4 * layers
    if b & 0x08:
        if pos >= end:
            raise PayloadError("VP9 scalability structure truncated at N_G")
        groups = data[pos]
        pos += 1
        for _ in range(groups):
            if pos >= end:
                raise PayloadError("VP9 picture group truncated")
            pos += 1 + ((data[pos] >> 2) & 0x03)
    if pos > end:
        raise PayloadError("VP9 scalability structure overruns the payload")
    return pos
