"""HEVC / H.265 over RTP (RFC 7798) and the hvcC record.

The NAL unit header is two octets: F(1) Type(6) LayerId(6) TID(3) (s1.1.4). Without
sprop-max-don-diff (what we negotiate) no DONL/DOND fields are present, so:

- :class:`HevcPacketizer`: an access unit (Annex B) -> single NAL unit packets, aggregation
  packets (AP, type 48, s4.4.2) for runs of small NAL units, fragmentation units (FU, type 49,
  s4.4.3) for NAL units above the MTU.
- :class:`HevcDepacketizer`: payloads -> Annex B access units; PACI (type 50) is a bad payload.
- Key frames: an IRAP picture (types 16-23, BLA/IDR/CRA) or a VPS/SPS.
- :func:`parse_hvcc_config`: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 s8.3.3.1),
  VPS/SPS/PPS out; Annex B <-> length-prefixed conversion is :mod:`trackmesh.codecs.h264`'s.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.codecs.h264 import START_CODE, split_annexb
from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError, check_mtu
from trackmesh.errors import LocalProtocolError

__all__ = [
    "HevcConfig",
    "HevcDepacketizer",
    "HevcPacketizer",
    "hevc_temporal_id",
    "is_hevc_keyframe",
    "parse_hvcc_config",
]

_U16: Final = struct.Struct("!H")

_IRAP_FIRST: Final = 16
_IRAP_LAST: Final = 23
_NAL_VPS: Final = 32
_NAL_SPS: Final = 33
_NAL_PPS: Final = 34
_NAL_AUD: Final = 35
_NAL_PREFIX_SEI: Final = 39
_NAL_AP: Final = 48
_NAL_FU: Final = 49


def _type(b0: int) -> int:
    return (b0 >> 1) & 0x3F


def _is_key_type(t: int) -> bool:
    return _IRAP_FIRST <= t <= _IRAP_LAST or t in (_NAL_VPS, _NAL_SPS)


def is_hevc_keyframe(payload: Buffer) -> bool:
    """Whether this RTP payload carries (the start of) an IRAP picture or a VPS/SPS."""
    end = len(payload)
    if end < 2:
        raise PayloadError("H.265 payload shorter than its NAL unit header")
    t = _type(payload[0])
    if t == _NAL_AP:
        pos = 2
        while pos < end:
            if pos + 2 > end:
                raise PayloadError("AP NAL size truncated")
            size = _U16.unpack_from(payload, pos)[0]
            pos += 2
            if size < 2 or pos + size > end:
                raise PayloadError(f"AP NAL unit of {size} bytes overruns the payload")
            if _is_key_type(_type(payload[pos])):
                return True
            pos += size
        return False
    if t == _NAL_FU:
        if end < 3:
            raise PayloadError("FU header missing")
        return bool(payload[2] & 0x80) and _is_key_type(payload[2] & 0x3F)
    return _is_key_type(t)


def hevc_temporal_id(payload: Buffer) -> int:
    """The temporal layer (TemporalId = nuh_temporal_id_plus1 - 1, H.265 s7.4.2.2) of this RTP
    payload's header: of its NAL unit, or the lowest of an AP's (RFC 7798 s4.4.2)."""
    if len(payload) < 2:
        raise PayloadError("H.265 payload shorter than its NAL unit header")
    tid = payload[1] & 0x07
    if tid == 0:
        raise PayloadError("H.265 NAL header with nuh_temporal_id_plus1 = 0")
    return tid - 1


class HevcConfig:
    """An hvcC record: profile/tier/level, the NAL length size and the parameter sets."""

    __slots__ = ("length_size", "level", "pps", "profile", "sps", "tier", "vps")

    def __init__(
        self,
        profile: int,
        tier: int,
        level: int,
        length_size: int,
        vps: list[bytes],
        sps: list[bytes],
        pps: list[bytes],
    ) -> None:
        self.profile = profile
        self.tier = tier
        self.level = level
        self.length_size = length_size
        self.vps = vps
        self.sps = sps
        self.pps = pps

    def parameter_sets_annexb(self) -> bytes:
        """VPS, SPS, PPS as Annex B, to put before the first IRAP access unit."""
        out = bytearray()
        for unit in (*self.vps, *self.sps, *self.pps):
            out += START_CODE + unit
        return bytes(out)


def parse_hvcc_config(record: Buffer) -> HevcConfig:
    """Parse hvcC: 22 fixed octets (version 1 ... lengthSizeMinusOne at octet 21), numOfArrays,
    then per array: completeness|reserved|NAL type, numNalus(16), (length(16), NAL unit)*."""
    end = len(record)
    if end < 23:
        raise PayloadError("hvcC shorter than its fixed header")
    if record[0] != 1:
        raise PayloadError(f"hvcC version {record[0]} is not 1")
    length_size = (record[21] & 0x03) + 1
    if length_size == 3:
        raise PayloadError("hvcC NAL length size 3 is not allowed")
    sets: dict[int, list[bytes]] = {_NAL_VPS: [], _NAL_SPS: [], _NAL_PPS: []}
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > end:
            raise PayloadError("hvcC truncated at an array header")
        nal_type = record[pos] & 0x3F
        count = _U16.unpack_from(record, pos + 1)[0]
        pos += 3
        for _ in range(count):
            if pos + 2 > end:
                raise PayloadError("hvcC truncated at a NAL unit length")
            size = _U16.unpack_from(record, pos)[0]
            pos += 2
            if size == 0 or pos + size > end:
                raise PayloadError("hvcC NAL unit overruns the record")
            if nal_type in sets:
                sets[nal_type].append(bytes(record[pos : pos + size]))
            pos += size
    b1 = record[1]
    return HevcConfig(b1 & 0x1F, (b1 >> 5) & 1, record[12], length_size, sets[_NAL_VPS], sets[_NAL_SPS], sets[_NAL_PPS])


class HevcPacketizer:
    """Annex B access unit -> RTP payloads (RFC 7798 s4.4.1 single, s4.4.2 AP, s4.4.3 FU)."""

    __slots__ = ()

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 4)
        units = split_annexb(frame)
        if not units:
            raise PayloadError("empty H.265 access unit")
        for unit in units:
            if len(unit) < 2:
                raise LocalProtocolError("H.265 NAL unit shorter than its header")
        out: list[bytes] = []
        group: list[memoryview] = []
        group_size = 2  # the AP's own header

        def flush() -> None:
            if len(group) == 1:
                out.append(bytes(group[0]))
            elif group:
                # s4.4.2: F is the OR of the Fs, LayerId and TID the lowest of the aggregated units.
                f = max(u[0] & 0x80 for u in group)
                layer = min(((u[0] & 0x01) << 5) | (u[1] >> 3) for u in group)
                tid = min(u[1] & 0x07 for u in group)
                ap = bytearray([f | (_NAL_AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid])
                for u in group:
                    ap += _U16.pack(len(u)) + u
                out.append(bytes(ap))
            group.clear()

        for unit in units:
            size = len(unit)
            if group_size + 2 + size <= mtu:
                group.append(unit)
                group_size += 2 + size
                continue
            flush()
            group_size = 2
            if 4 + size <= mtu:
                group.append(unit)
                group_size += 2 + size
                continue
            if size <= mtu:
                out.append(bytes(unit))
                continue
            # s4.4.3: PayloadHdr (type 49, LayerId and TID kept), FU header S|E|FuType.
            hdr = bytes([(unit[0] & 0x81) | (_NAL_FU << 1), unit[1]])
            nal_type = _type(unit[0])
            room = mtu - 3
            pos = 2
            while pos < size:
                fu = nal_type | (0x80 if pos == 2 else 0) | (0x40 if pos + room >= size else 0)
                out.append(hdr + bytes([fu]) + unit[pos : pos + room])
                pos += room
        flush()
        return out


def _starts_au(t: int, after_header: int, after_loss: bool) -> bool:
    """H.265 s7.4.2.4.4: only an access unit delimiter proves an access unit begins. Without
    loss, a VPS, SPS, prefix SEI or the first slice segment of a picture
    (first_slice_segment_in_pic_flag, the first slice bit) is taken for one."""
    if t == _NAL_AUD:
        return True
    if after_loss:
        return False
    if t in (_NAL_VPS, _NAL_SPS, _NAL_PREFIX_SEI):
        return True
    return t < 32 and bool(after_header & 0x80)


class HevcDepacketizer(Depacketizer):
    """RTP payloads -> Annex B access units; key frame = an IRAP picture is present."""

    __slots__ = ("_in_fu",)

    def __init__(self) -> None:
        super().__init__()
        self._in_fu = False

    def _reset(self) -> None:
        self._in_fu = False

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        if len(payload) < 3:
            return False
        t = _type(payload[0])
        if t == _NAL_AP:
            return len(payload) > 6 and _starts_au(_type(payload[4]), payload[6], after_loss)
        if t == _NAL_FU:
            started = bool(payload[2] & 0x80) and len(payload) > 3
            return started and _starts_au(payload[2] & 0x3F, payload[3], after_loss)
        return _starts_au(t, payload[2], after_loss)

    def _unit(self, unit: Buffer) -> None:
        if len(unit) < 2:
            raise PayloadError("H.265 NAL unit shorter than its header")
        t = _type(unit[0])
        if t >= _NAL_AP:
            raise PayloadError(f"NAL unit type {t} inside an H.265 access unit")
        if _IRAP_FIRST <= t <= _IRAP_LAST:
            self._keyframe = True
        self._buf += START_CODE
        self._buf += unit

    def _append(self, payload: Buffer) -> None:
        end = len(payload)
        if end < 2:
            raise PayloadError("H.265 payload shorter than its NAL unit header")
        if payload[0] & 0x80:
            raise PayloadError("H.265 NAL header has the forbidden bit set")
        t = _type(payload[0])
        if t == _NAL_FU:
            if end < 4:
                raise PayloadError("FU without payload")
            fu = payload[2]
            if fu & 0x80:
                if self._in_fu or fu & 0x40:
                    raise PayloadError("FU start inside a fragmented NAL unit, or with S and E set")
                self._unit(bytes([(payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]]))
                self._in_fu = True
            elif not self._in_fu:
                raise PayloadError("FU continues a NAL unit that did not start")
            self._buf += memoryview(payload)[3:]
            if fu & 0x40:
                self._in_fu = False
            return
        if self._in_fu:
            raise PayloadError("a NAL unit arrived inside a fragmented one")
        if t == _NAL_AP:
            pos = 2
            if end == 2:
                raise PayloadError("empty aggregation packet")
            while pos < end:
                if pos + 2 > end:
                    raise PayloadError("AP NAL size truncated")
                size = _U16.unpack_from(payload, pos)[0]
                pos += 2
                if size == 0 or pos + size > end:
                    raise PayloadError(f"AP NAL unit of {size} bytes overruns the payload")
                self._unit(memoryview(payload)[pos : pos + size])
                pos += size
            return
        self._unit(payload)

    def _complete(self) -> bool:
        return not self._in_fu
