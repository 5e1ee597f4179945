"""H.264 with B-frames -> H.264 without (PyAV: FFmpeg's decoder, libx264 with zero-latency
settings), for RTMP publishers whose encoder reorders frames (OBS and x264 defaults); and HEVC,
AV1 or VP9 -> the same H.264, the alternate rendition for viewers that cannot decode those.

libwebrtc does not reorder frames, so a B-frame stream stutters in browsers (protocols.md s1.5).
The decoder takes the access units in decode order (Annex B, parameter sets before key frames, as
:mod:`.ingest` makes them) and returns pictures in presentation order; libx264 with
``tune=zerolatency`` (no B-frames, no lookahead, one frame in, one frame out) re-encodes each at
once. A source key frame forces an output key frame, so the GOP structure (and the GOP cache that
answers viewers' key-frame requests) follows the encoder's.

CPU-bound: the driver runs it off the worker's loop. No clock and no I/O; errors are ``RtmpError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av

from trackmesh.transports.rtmp.errors import RtmpError

__all__ = ["H264Reencoder", "ReencodedFrame"]

MS: Final = Fraction(1, 1000)
#: Enhanced RTMP FourCC -> FFmpeg's decoder (dav1d for AV1: FFmpeg's own needs a hardware decoder).
DECODERS: Final = {"avc1": "h264", "hvc1": "hevc", "av01": "libdav1d", "vp09": "vp9"}


@dataclass(frozen=True, slots=True)
class ReencodedFrame:
    pts: int  # ms, the source's presentation time
    keyframe: bool
    data: bytes  # Annex B access unit


class H264Reencoder:
    """One video track's re-encoder. ``push(access_unit, dts, pts, keyframe)`` -> frames in order.
    ``source``: the track's FourCC (H.264 and HEVC in Annex B, AV1 and VP9 as sent)."""

    def __init__(self, preset: str = "veryfast", bitrate: int | None = None, source: str = "avc1") -> None:
        if source not in DECODERS:
            raise ValueError(f"no decoder for {source!r}: one of {sorted(DECODERS)}")
        self.source = source
        self._preset = preset
        self._bitrate = bitrate
        self._dec: Any = av.CodecContext.create(DECODERS[source], "r")
        self._enc: Any = None
        self._keys: set[int] = set()  # presentation times of source key frames not yet encoded
        self._started = False  # inter frames before the first key frame cannot be decoded
        self.frames_in = 0
        self.frames_out = 0

    def _encoder(self, width: int, height: int) -> Any:
        enc: Any = av.CodecContext.create("libx264", "w")
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuv420p"
        enc.time_base = MS
        enc.options = {"preset": self._preset, "tune": "zerolatency", "bframes": "0", "repeat-headers": "1"}
        if self._bitrate:
            enc.bit_rate = self._bitrate
        enc.open()
        return enc

    def push(self, data: bytes, dts: int, pts: int, keyframe: bool) -> list[ReencodedFrame]:
        self.frames_in += 1
        if keyframe:
            self._keys.add(pts)
            self._started = True
        elif not self._started:
            return []
        packet = av.Packet(data)
        packet.pts, packet.dts, packet.time_base = pts, dts, MS
        out: list[ReencodedFrame] = []
        try:
            for picture in self._dec.decode(packet):
                enc = self._enc
                if enc is None or (enc.width, enc.height) != (picture.width, picture.height):
                    enc = self._enc = self._encoder(picture.width, picture.height)
                ts = picture.pts if picture.pts is not None else pts
                key = ts in self._keys
                self._keys.discard(ts)
                frame = picture.reformat(format="yuv420p") if picture.format.name != "yuv420p" else picture
                frame.pts, frame.time_base = ts, MS
                frame.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
                for encoded in enc.encode(frame):
                    self.frames_out += 1
                    out.append(ReencodedFrame(int(encoded.pts), bool(encoded.is_keyframe), bytes(encoded)))
        except av.FFmpegError as exc:
            raise RtmpError(f"{self.source} frame not re-encodable: {exc}") from None
        if len(self._keys) > 64:  # key frames the decoder never returned (a broken stream)
            self._keys.clear()
        return out
