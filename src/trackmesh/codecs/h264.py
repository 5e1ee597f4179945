"""H.264 over RTP (RFC 6184, packetization-mode 1) and the byte formats around it.

- Key frames from the payload alone: an IDR slice or SPS as a single NAL, inside a STAP-A
  (s5.7.1) or starting an FU-A (s5.8).
- :class:`H264Packetizer`: an access unit (Annex B) -> single NAL unit packets, STAP-A for runs
  of small NAL units (parameter sets), FU-A for NAL units above the MTU (s5.6, s5.7.1, s5.8).
- :class:`H264Depacketizer`: payloads -> Annex B access units; STAP-B, MTAP and FU-B belong to
  the interleaved mode (packetization-mode 2) we never negotiate, so they are bad payloads.
- Annex B (start codes, ITU-T H.264 Annex B) <-> AVCC (length-prefixed, ISO/IEC 14496-15 s5.3)
  and the avcC decoder configuration record (s5.3.3.1), which RTMP/FLV and MP4 carry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from trackmesh.codecs.payload import Buffer, Depacketizer, PayloadError, check_mtu
from trackmesh.errors import LocalProtocolError

__all__ = [
    "START_CODE",
    "AvcConfig",
    "H264Depacketizer",
    "H264Packetizer",
    "annexb_to_avcc",
    "avcc_to_annexb",
    "build_avcc_config",
    "is_h264_keyframe",
    "parse_avcc_config",
    "split_annexb",
]

START_CODE: Final = b"\x00\x00\x00\x01"
_U16: Final = struct.Struct("!H")

# NAL unit types (RFC 6184 s5.2 table 1; ITU-T H.264 table 7-1).
_NAL_SLICE: Final = 1
_NAL_IDR: Final = 5
_NAL_SEI: Final = 6
_NAL_SPS: Final = 7
_NAL_PPS: Final = 8
_NAL_AUD: Final = 9
_NAL_STAP_A: Final = 24
_NAL_FU_A: Final = 28
_NAL_FU_B: Final = 29


def is_h264_keyframe(payload: Buffer) -> bool:
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


# --- Annex B / AVCC ---------------------------------------------------------------------------


def split_annexb(data: Buffer) -> list[memoryview]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes; trailing zero bytes of
    a unit belong to the next start code, H.264 B.2). Bytes before the first start code are
    ignored; data without any start code is one NAL unit."""
    raw = data if isinstance(data, bytes) else bytes(data)
    view = memoryview(raw)
    starts: list[int] = []
    pos = raw.find(b"\x00\x00\x01")
    if pos < 0:
        return [view] if raw else []
    while pos >= 0:
        starts.append(pos + 3)
        pos = raw.find(b"\x00\x00\x01", pos + 3)
    units = []
    for i, begin in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(raw)
        while end > begin and raw[end - 1] == 0:
            end -= 1
        if end > begin:
            units.append(view[begin:end])
    return units


def _join_annexb(units: Iterable[Buffer]) -> bytes:
    out = bytearray()
    for unit in units:
        out += START_CODE
        out += unit
    return bytes(out)


def _length_units(data: Buffer, length_size: int) -> list[memoryview]:
    if length_size not in (1, 2, 4):
        raise LocalProtocolError(f"NAL length size {length_size} is not 1, 2 or 4")
    view = memoryview(bytes(data))
    units = []
    pos, end = 0, len(view)
    while pos < end:
        if pos + length_size > end:
            raise PayloadError("NAL length prefix truncated")
        size = int.from_bytes(view[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > end:
            raise PayloadError(f"NAL unit of {size} bytes overruns the buffer")
        units.append(view[pos : pos + size])
        pos += size
    return units


def annexb_to_avcc(data: Buffer, length_size: int = 4) -> bytes:
    """Annex B -> length-prefixed NAL units (ISO/IEC 14496-15 s5.3.2; HEVC uses the same layout)."""
    if length_size not in (1, 2, 4):
        raise LocalProtocolError(f"NAL length size {length_size} is not 1, 2 or 4")
    out = bytearray()
    limit = 1 << (8 * length_size)
    for unit in split_annexb(data):
        if len(unit) >= limit:
            raise LocalProtocolError(f"NAL unit of {len(unit)} bytes does not fit a {length_size}-byte length")
        out += len(unit).to_bytes(length_size, "big")
        out += unit
    return bytes(out)


def avcc_to_annexb(data: Buffer, length_size: int = 4) -> bytes:
    """Length-prefixed NAL units -> Annex B with 4-byte start codes; PayloadError if malformed."""
    return _join_annexb(_length_units(data, length_size))


class AvcConfig:
    """An AVCDecoderConfigurationRecord (avcC, ISO/IEC 14496-15 s5.3.3.1)."""

    __slots__ = ("length_size", "level", "pps", "profile", "profile_compat", "sps")

    def __init__(
        self, profile: int, profile_compat: int, level: int, length_size: int, sps: list[bytes], pps: list[bytes]
    ) -> None:
        self.profile = profile
        self.profile_compat = profile_compat
        self.level = level
        self.length_size = length_size
        self.sps = sps
        self.pps = pps

    def parameter_sets_annexb(self) -> bytes:
        """SPS then PPS as Annex B, to put before the first IDR access unit."""
        return _join_annexb([*self.sps, *self.pps])


def parse_avcc_config(record: Buffer) -> AvcConfig:
    """Parse avcC: version 1, profile, compatibility, level, lengthSizeMinusOne, then the SPS and
    PPS arrays (16-bit lengths). Extra profile-specific bytes at the end are ignored."""
    end = len(record)
    if end < 7:
        raise PayloadError("avcC shorter than its fixed header")
    if record[0] != 1:
        raise PayloadError(f"avcC version {record[0]} is not 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        raise PayloadError("avcC NAL length size 3 is not allowed")
    pos = 5
    arrays: list[list[bytes]] = []
    for mask in (0x1F, 0xFF):
        if pos >= end:
            raise PayloadError("avcC truncated at a parameter set count")
        count = record[pos] & mask
        pos += 1
        sets = []
        for _ in range(count):
            if pos + 2 > end:
                raise PayloadError("avcC truncated at a parameter set length")
            size = _U16.unpack_from(record, pos)[0]
            pos += 2
            if size == 0 or pos + size > end:
                raise PayloadError("avcC parameter set overruns the record")
            sets.append(bytes(record[pos : pos + size]))
            pos += size
        arrays.append(sets)
    return AvcConfig(record[1], record[2], record[3], length_size, arrays[0], arrays[1])


def build_avcc_config(sps: list[bytes], pps: list[bytes], length_size: int = 4) -> bytes:
    """An avcC record for these parameter sets; profile, compatibility and level come from the
    first SPS (its bytes 1-3, H.264 s7.3.2.1.1)."""
    if not sps or len(sps[0]) < 4 or length_size not in (1, 2, 4):
        raise LocalProtocolError("avcC needs an SPS of at least 4 bytes and a length size of 1, 2 or 4")
    if len(sps) > 31 or len(pps) > 255:
        raise LocalProtocolError("avcC holds at most 31 SPS and 255 PPS")
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFC | (length_size - 1), 0xE0 | len(sps)])
    for s in sps:
        out += _U16.pack(len(s)) + s
    out.append(len(pps))
    for p in pps:
        out += _U16.pack(len(p)) + p
    return bytes(out)


# --- RTP packetization mode 1 -----------------------------------------------------------------


class H264Packetizer:
    """Annex B access unit -> RTP payloads (RFC 6184 s5.6 single NAL, s5.7.1 STAP-A, s5.8 FU-A)."""

    __slots__ = ()

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]:
        check_mtu(mtu, 3)
        units = split_annexb(frame)
        if not units:
            raise PayloadError("empty H.264 access unit")
        out: list[bytes] = []
        stap = bytearray()  # a STAP-A being filled: header octet, then size|NAL pairs
        stap_count = 0

        def flush_stap() -> None:
            nonlocal stap_count
            if stap_count == 1:
                out.append(bytes(stap[3:]))  # one NAL alone goes as itself
            elif stap_count > 1:
                out.append(bytes(stap))
            stap.clear()
            stap_count = 0

        for unit in units:
            size = len(unit)
            if (len(stap) if stap_count else 1) + 2 + size <= mtu:
                if not stap_count:
                    stap.append(0)
                # s5.7.1: F is the OR of the aggregated Fs, NRI their maximum.
                hdr = stap[0]
                stap[0] = (hdr & 0x80) | (unit[0] & 0x80) | max(hdr & 0x60, unit[0] & 0x60) | _NAL_STAP_A
                stap += _U16.pack(size)
                stap += unit
                stap_count += 1
                continue
            flush_stap()
            if size <= mtu:
                out.append(bytes(unit))
                continue
            # s5.8: FU indicator F|NRI|28, FU header S|E|R|type; the NAL header octet is not sent.
            indicator = (unit[0] & 0xE0) | _NAL_FU_A
            nal_type = unit[0] & 0x1F
            room = mtu - 2
            pos, end = 1, size
            while pos < end:
                fu = nal_type | (0x80 if pos == 1 else 0) | (0x40 if pos + room >= end else 0)
                out.append(bytes([indicator, fu]) + unit[pos : pos + room])
                pos += room
        flush_stap()
        return out


def _starts_au(nal: int, first_payload_byte: int, after_loss: bool) -> bool:
    """H.264 s7.4.1.2.3: only an access unit delimiter proves an access unit begins (SEI and
    parameter sets may precede the first slice, and may be what was lost). Without loss, an SEI,
    SPS or the first slice of a picture (first_mb_in_slice = 0: its ue(v) code is the single bit 1)
    is taken for one."""
    if nal == _NAL_AUD:
        return True
    if after_loss:
        return False
    if nal in (_NAL_SEI, _NAL_SPS):
        return True
    return nal in (_NAL_SLICE, _NAL_IDR) and bool(first_payload_byte & 0x80)


class H264Depacketizer(Depacketizer):
    """RTP payloads -> Annex B access units; key frame = an IDR slice is present."""

    __slots__ = ("_in_fu",)

    def __init__(self) -> None:
        super().__init__()
        self._in_fu = False

    def _reset(self) -> None:
        self._in_fu = False

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        if len(payload) < 2:
            return False
        nal = payload[0] & 0x1F
        if nal == _NAL_STAP_A:
            return len(payload) > 4 and _starts_au(payload[3] & 0x1F, payload[4], after_loss)
        if nal == _NAL_FU_A:
            started = bool(payload[1] & 0x80) and len(payload) > 2
            return started and _starts_au(payload[1] & 0x1F, payload[2], after_loss)
        return _starts_au(nal, payload[1], after_loss)

    def _unit(self, unit: Buffer) -> None:
        nal = unit[0] & 0x1F
        if nal == 0 or nal >= _NAL_STAP_A:
            raise PayloadError(f"NAL unit type {nal} inside an H.264 access unit")
        if nal == _NAL_IDR:
            self._keyframe = True
        self._buf += START_CODE
        self._buf += unit

    def _append(self, payload: Buffer) -> None:
        end = len(payload)
        if end == 0:
            raise PayloadError("empty H.264 payload")
        if payload[0] & 0x80:
            raise PayloadError("H.264 NAL header has the forbidden bit set")
        nal = payload[0] & 0x1F
        if nal == _NAL_FU_A:
            if end < 3:
                raise PayloadError("FU-A without payload")
            fu = payload[1]
            if fu & 0x80:
                if self._in_fu or fu & 0x40:
                    raise PayloadError("FU-A start inside a fragmented NAL unit, or with S and E set")
                self._unit(bytes([(payload[0] & 0xE0) | (fu & 0x1F)]))
                self._in_fu = True
            elif not self._in_fu:
                raise PayloadError("FU-A continues a NAL unit that did not start")
            self._buf += memoryview(payload)[2:]
            if fu & 0x40:
                self._in_fu = False
            return
        if self._in_fu:
            raise PayloadError("a NAL unit arrived inside a fragmented one")
        if nal == _NAL_STAP_A:
            pos = 1
            if end == 1:
                raise PayloadError("empty STAP-A")
            while pos < end:
                if pos + 2 > end:
                    raise PayloadError("STAP-A NAL size truncated")
                size = _U16.unpack_from(payload, pos)[0]
                pos += 2
                if size == 0 or pos + size > end:
                    raise PayloadError(f"STAP-A NAL unit of {size} bytes overruns the payload")
                self._unit(memoryview(payload)[pos : pos + size])
                pos += size
            return
        self._unit(payload)

    def _complete(self) -> bool:
        return not self._in_fu
