"""AAC (RTMP's audio) -> Opus (WebRTC's), with PyAV: decode, resample to 48 kHz stereo, encode
20 ms frames (RFC 7587 s4.2: the RTP clock is 48 kHz whatever the input rate).

AAC frames hold 1024 samples and Opus frames 960: the resampler's ``frame_size`` is the FIFO
between them (protocols.md s1.5). Output timestamps are one anchor (the first AAC frame's ms
timestamp at 48 kHz) plus the samples encoded since, so they are exact and gap-free; a jump of
the input timeline (an encoder's pause, a dropped queue) over ``RESYNC_MS`` re-anchors.

CPU-bound (about 4 % of a core per stereo stream, protocols.md s1.2): the driver runs it off the
worker's loop (runtime/rtmp_worker.py). No clock and no I/O here; errors are ``RtmpError``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Final

import av

from trackmesh.transports.rtmp.errors import RtmpError

__all__ = ["OPUS_FRAME_SAMPLES", "AacToOpus"]

OPUS_RATE: Final = 48000
OPUS_FRAME_SAMPLES: Final = 960  # 20 ms
RESYNC_MS: Final = 200


class AacToOpus:
    """One AAC track's transcoder. ``push(aac_frame, ts_ms)`` -> ``[(rtp_ts_48k, opus_packet)]``."""

    def __init__(self, audio_specific_config: bytes, bitrate: int = 96_000) -> None:
        try:
            self._dec: Any = av.CodecContext.create("aac", "r")
            self._dec.extradata = audio_specific_config
            self._dec.open()
            enc: Any = av.CodecContext.create("libopus", "w")
            enc.sample_rate = OPUS_RATE
            enc.layout = "stereo"
            enc.format = "s16"
            enc.bit_rate = bitrate
            enc.time_base = Fraction(1, OPUS_RATE)
            enc.open()
        except av.FFmpegError as exc:
            raise RtmpError(f"cannot set up AAC->Opus: {exc}") from None
        self._enc = enc
        self._resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME_SAMPLES
        )
        self._anchor: int | None = None  # 48 kHz timestamp of sample 0 of this run
        self._in_samples = 0  # 48 kHz samples fed to the encoder since the anchor
        self._out_packets = 0
        self.frames_in = 0
        self.packets_out = 0
        self.resyncs = 0

    def push(self, data: bytes, ts_ms: int) -> list[tuple[int, bytes]]:
        """One raw AAC frame (no ADTS header) with its RTMP timestamp (ms)."""
        if self._anchor is not None:
            expected_ms = (self._anchor + self._in_samples) // 48
            if abs(ts_ms - expected_ms) > RESYNC_MS:
                self.resyncs += 1
                self._anchor = None
        if self._anchor is None:
            self._anchor = ts_ms * 48
            self._in_samples = 0
            self._out_packets = 0
        self.frames_in += 1
        try:
            frames = self._dec.decode(av.Packet(data))
            out: list[tuple[int, bytes]] = []
            for frame in frames:
                frame.pts = None
                for chunk in self._resampler.resample(frame):
                    chunk.pts = self._in_samples
                    self._in_samples += chunk.samples
                    for packet in self._enc.encode(chunk):
                        out.append(self._stamp(bytes(packet)))
        except av.FFmpegError as exc:
            raise RtmpError(f"AAC frame not decodable: {exc}") from None
        return out

    def _stamp(self, payload: bytes) -> tuple[int, bytes]:
        assert self._anchor is not None
        ts = self._anchor + self._out_packets * OPUS_FRAME_SAMPLES  # unwrapped; RTP masks it
        self._out_packets += 1
        self.packets_out += 1
        return ts, payload
