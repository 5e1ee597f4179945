"""What a catalog or a player needs from an H.264 sequence parameter set (ITU-T H.264 s7.3.2.1.1):
the picture size in pixels after cropping, and the ``avc1.PPCCLL`` codec string (RFC 6381 s3.3:
profile_idc, the constraint flags byte, level_idc). Sans-IO, no state.

The SPS is read with its emulation prevention bytes removed (s7.4.1: ``00 00 03``), as
exp-Golomb fields (s9.1). Anything malformed or truncated is ``None``, never an exception.
"""

from __future__ import annotations

from typing import Final

__all__ = ["avc1_codec_string", "sps_picture_size"]

#: profile_idc values whose SPS carries chroma_format_idc and the bit depths (s7.3.2.1.1).
_HIGH_PROFILES: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_MAX_UE_BITS: Final = 31


class _Bits:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise IndexError("SPS truncated")
            value = value << 1 | (self.data[byte] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > _MAX_UE_BITS:
                raise ValueError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """The RBSP: ``00 00 03`` loses its 03 (s7.4.1)."""
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def avc1_codec_string(sps: bytes) -> str | None:
    """``avc1.PPCCLL`` from an SPS NAL unit (with its header byte); None if it is not one."""
    if len(sps) < 4 or sps[0] & 0x1F != 7:
        return None
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


def sps_picture_size(sps: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels of an SPS NAL unit (with its header byte), cropping applied."""
    if len(sps) < 4 or sps[0] & 0x1F != 7:
        return None
    try:
        return _size(_Bits(_unescape(sps[1:])))
    except (IndexError, ValueError):
        return None


def _size(bits: _Bits) -> tuple[int, int] | None:
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma > 3:
            return None
        if chroma == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if bits.u(1):
                    _scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > 255:
            return None
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        return None
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if bits.u(1):  # frame_cropping_flag: crop units per eq. 7-19 to 7-22
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        unit_x = 1 if chroma in (0, 3) else 2
        unit_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        return None
    return width, height
