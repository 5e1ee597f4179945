"""What a recorder checks of a whole frame before it writes it, per codec (sans-IO).

The depacketizer proves a frame is complete; it cannot prove the bytes are a frame of the codec
(a publisher may send garbage with a valid payload descriptor). These checks read the few header
fields a muxer or decoder relies on first, so garbage is skipped (and the recorder waits for the
next key frame) instead of written: VP8's frame tag (RFC 6386 s9.1), VP9's frame marker (VP9
bitstream s6.2), H.264/HEVC NAL headers in Annex B (H.264 s7.3.1, H.265 s7.3.1.2), AV1's OBU
framing (AV1 s5.3), and an Opus TOC byte (RFC 6716 s3.1).

H.264 and HEVC key frames must carry their parameter sets for a file to play from them (browsers
do not always repeat them in-band: janus #630); :class:`ParameterSets` remembers the latest ones
and puts them back in front of a key frame that lacks them.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.av1 import split_obus
from trackmesh.codecs.h264 import START_CODE, split_annexb
from trackmesh.codecs.payload import PayloadError
from trackmesh.codecs.vp9 import vp9_frame_is_key, vp9_frame_size

__all__ = ["ParameterSets", "frame_size", "opus_channels", "plausible"]

_VP8_START: Final = b"\x9d\x01\x2a"
# H.264 nal_unit_type (Table 7-1): SPS, PPS. HEVC (Table 7-1): VPS, SPS, PPS.
_H264_PS: Final = {7: "sps", 8: "pps"}
_HEVC_PS: Final = {32: "vps", 33: "sps", 34: "pps"}


def _vp8_ok(frame: bytes, keyframe: bool) -> bool:
    if len(frame) < 3:
        return False
    tag = frame[0] | frame[1] << 8 | frame[2] << 16
    key = not tag & 1
    first_partition = (tag >> 5) & 0x7FFFF
    header = 10 if key else 3
    if header + first_partition > len(frame) or key != keyframe:
        return False
    return not key or frame[3:6] == _VP8_START


def _nal_ok(frame: bytes, hevc: bool) -> bool:
    units = split_annexb(frame)
    if not units:
        return False
    least = 2 if hevc else 1
    return all(len(u) >= least and not u[0] & 0x80 for u in units)


def plausible(codec: str, frame: bytes, keyframe: bool) -> bool:
    """Whether ``frame`` (in the codec's storage format, see codecs.payload.Frame) looks like a
    frame of ``codec`` whose key-frame flag is ``keyframe``."""
    try:
        if codec == "vp8":
            return _vp8_ok(frame, keyframe)
        if codec == "vp9":
            return bool(frame) and (not keyframe or vp9_frame_is_key(frame))
        if codec == "h264":
            return _nal_ok(frame, False)
        if codec == "h265":
            return _nal_ok(frame, True)
        if codec == "av1":
            return bool(split_obus(frame))
        return len(frame) > 0
    except PayloadError:
        return False


def frame_size(codec: str, frame: bytes) -> tuple[int, int]:
    """A key frame's (width, height) where the frame header says it (VP8, VP9), else (0, 0)."""
    try:
        if codec == "vp8" and len(frame) >= 10 and frame[3:6] == _VP8_START:
            return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
        if codec == "vp9":
            size = vp9_frame_size(frame)
            if size is not None:
                return size
    except PayloadError:
        pass
    return 0, 0


def opus_channels(packet: bytes) -> int:
    """1 or 2, from the TOC's stereo bit (RFC 6716 s3.1)."""
    return 2 if packet and packet[0] & 0x04 else 1


class ParameterSets:
    """The latest H.264 SPS/PPS or HEVC VPS/SPS/PPS of a stream, for key frames that lack them."""

    __slots__ = ("_kinds", "_sets", "hevc")

    def __init__(self, hevc: bool) -> None:
        self.hevc = hevc
        self._kinds = _HEVC_PS if hevc else _H264_PS
        self._sets: dict[str, bytes] = {}

    def _kind(self, unit: memoryview) -> str | None:
        t = (unit[0] >> 1) & 0x3F if self.hevc else unit[0] & 0x1F
        return self._kinds.get(t)

    def complete_keyframe(self, frame: bytes) -> bytes | None:
        """The key frame with every parameter set in front of it (its own, else the last seen),
        or None while some parameter set has never been seen (the frame cannot be decoded)."""
        own: dict[str, bytes] = {}
        for unit in split_annexb(frame):
            kind = self._kind(unit)
            if kind is not None:
                own[kind] = bytes(unit)
        self._sets.update(own)
        missing = [k for k in self._kinds.values() if k not in own]
        if not missing:
            return frame
        if any(k not in self._sets for k in missing):
            return None
        prefix = b"".join(START_CODE + self._sets[k] for k in missing)
        return prefix + frame
