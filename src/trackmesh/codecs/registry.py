"""Codec modules by SDP encoding name (rtpmap names are case-insensitive, RFC 4855 s3).

Transports know a payload type's encoding name from SDP (or FLV/SIP equivalents) and look up
the key-frame detector, packetizer or depacketizer here instead of importing every codec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from trackmesh.codecs.av1 import Av1Depacketizer, Av1Packetizer, is_av1_keyframe
from trackmesh.codecs.g711 import G711Depacketizer, G711Packetizer
from trackmesh.codecs.h264 import H264Depacketizer, H264Packetizer, is_h264_keyframe
from trackmesh.codecs.hevc import HevcDepacketizer, HevcPacketizer, is_hevc_keyframe
from trackmesh.codecs.opus import OpusDepacketizer, OpusPacketizer
from trackmesh.codecs.payload import Buffer, Depacketizer, Packetizer
from trackmesh.codecs.vp8 import Vp8Depacketizer, Vp8Packetizer, is_vp8_keyframe
from trackmesh.codecs.vp9 import Vp9Depacketizer, Vp9Packetizer, is_vp9_keyframe
from trackmesh.errors import LocalProtocolError

__all__ = ["depacketizer", "is_keyframe", "packetizer"]

_Detector = Callable[[Buffer], bool]
_BY_NAME: Final[dict[str, _Detector]] = {
    "vp8": is_vp8_keyframe,
    "vp9": is_vp9_keyframe,
    "h264": is_h264_keyframe,
    "h265": is_hevc_keyframe,
    "av1": is_av1_keyframe,
}
# Also index the SDP spellings directly so the per-packet lookup needs no str.lower().
_DETECTORS: Final[dict[str, _Detector]] = {**_BY_NAME, **{k.upper(): v for k, v in _BY_NAME.items()}}

_CODECS: Final[dict[str, tuple[Callable[[], Packetizer], Callable[[], Depacketizer]]]] = {
    "vp8": (Vp8Packetizer, Vp8Depacketizer),
    "vp9": (Vp9Packetizer, Vp9Depacketizer),
    "h264": (H264Packetizer, H264Depacketizer),
    "h265": (HevcPacketizer, HevcDepacketizer),
    "av1": (Av1Packetizer, Av1Depacketizer),
    "opus": (OpusPacketizer, OpusDepacketizer),
    "pcmu": (G711Packetizer, G711Depacketizer),
    "pcma": (G711Packetizer, G711Depacketizer),
}


def is_keyframe(codec: str, payload: Buffer) -> bool:
    """Whether this RTP payload starts a key frame; ``codec`` is a video encoding name
    ("vp8", "VP9", "H264", "H265", "AV1"); PayloadError when the payload is malformed."""
    detector = _DETECTORS.get(codec)
    if detector is None:
        detector = _DETECTORS.get(codec.lower())
        if detector is None:
            raise LocalProtocolError(f"no keyframe detector for codec {codec!r}")
    return detector(payload)


def _lookup(codec: str) -> tuple[Callable[[], Packetizer], Callable[[], Depacketizer]]:
    entry = _CODECS.get(codec.lower())
    if entry is None:
        raise LocalProtocolError(f"no payload format for codec {codec!r}")
    return entry


def packetizer(codec: str) -> Packetizer:
    """A new packetizer for this encoding name (G.711 at 20 ms)."""
    return _lookup(codec)[0]()


def depacketizer(codec: str) -> Depacketizer:
    """A new depacketizer for this encoding name."""
    return _lookup(codec)[1]()
