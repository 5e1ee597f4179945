"""One recorded file, written with PyAV (FFmpeg's muxers), no transcode. A driver: it does I/O.

- WebM (Matroska) for VP8, VP9, AV1 and Opus: clusters of at most :data:`FRAGMENT` seconds.
- Fragmented MP4 for H.264 and HEVC: an empty ``moov`` delayed until the first key frame
  (``delay_moov``: FFmpeg builds avcC/hvcC from the parameter sets the recorder put in front of it),
  then ``moof``/``mdat`` fragments of at most :data:`FRAGMENT` seconds.

Every packet is flushed to the operating system as soon as the muxer emits it
(``flush_packets``), so a killed node (SIGKILL) leaves a file that plays up to its last whole
fragment: at most ``FRAGMENT`` plus the writer's queue interval behind. ``close`` writes the
trailer (WebM cues and duration, MP4 ``mfra``), which makes the file seekable.

Opus needs its identification header (RFC 7845 s5.1) as codec private data in WebM: the stream is
declared through the libopus encoder context, whose header FFmpeg writes (nothing is encoded).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Final

import av
from av.container import OutputContainer
from av.stream import Stream

from .track import Sample, SegmentStart

__all__ = ["FRAGMENT", "SegmentMuxer"]

#: Longest stretch of media held in the muxer before it reaches the file (seconds).
FRAGMENT: Final = 0.5
_CODEC_NAMES: Final = {"vp8": "vp8", "vp9": "vp9", "av1": "av1", "h264": "h264", "h265": "hevc"}


class SegmentMuxer:
    """Writes one segment's samples to ``path``; ``bytes`` counts the media written."""

    def __init__(self, path: Path, start: SegmentStart, metadata: dict[str, str]) -> None:
        self.path = path
        self.bytes = 0
        self._time_base = Fraction(1, start.rate)
        fragment_us = str(int(FRAGMENT * 1_000_000))
        if start.container == "mp4":
            options = {
                "movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof+use_metadata_tags",
                "frag_duration": fragment_us,
                "flush_packets": "1",
            }
        else:
            options = {"cluster_time_limit": str(int(FRAGMENT * 1000)), "flush_packets": "1"}
        container = av.open(str(path), "w", format=start.container, options=options)
        assert isinstance(container, OutputContainer)
        self._container = container
        stream: Stream
        try:
            if start.codec == "opus":
                audio = container.add_stream("libopus", rate=start.rate)
                audio.codec_context.layout = "stereo" if start.channels == 2 else "mono"
                stream = audio
            else:
                stream = container.add_mux_stream(
                    _CODEC_NAMES[start.codec], width=start.width or 640, height=start.height or 480
                )
            stream.time_base = self._time_base
            container.metadata.update(metadata)
        except BaseException:
            container.close()
            raise
        self._stream = stream

    def write(self, sample: Sample) -> None:
        packet = av.Packet(sample.data)
        packet.stream = self._stream
        packet.time_base = self._time_base
        packet.pts = packet.dts = sample.pts
        packet.is_keyframe = sample.keyframe
        self._container.mux(packet)
        self.bytes += len(sample.data)

    def close(self) -> None:
        """Write the trailer and close the file."""
        self._container.close()
