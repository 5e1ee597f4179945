"""FLV/Enhanced RTMP tags -> access units ready for the codecs/ packetizers (sans-IO).

Fed the :class:`~.events.VideoData`/:class:`~.events.AudioData` of one publishing stream, an
:class:`Ingest` returns what the room bridge needs, per track:

- :class:`ConfigChanged` when a sequence header arrives (avcC/hvcC parsed by codecs.h264/hevc;
  av1C/vpcC/AudioSpecificConfig/OpusHead kept as bytes). The codec comes from here, never from
  onMetaData (anchors-turn2.md s1.3: encoders mislabel it).
- :class:`VideoFrame`: for ``avc1``/``hvc1`` an Annex B access unit with the parameter sets put
  before every key frame (late viewers and PLI answers need them; protocols.md s1.5) and access
  unit delimiters dropped; ``av01``/``vp09`` frames as sent. Decode and presentation times in ms
  and the 90 kHz RTP timestamp of the presentation time (RFC 6184 s5.1: the sampling instant).
- :class:`BFramesDetected` once per track, on the first non-zero composition time: browsers
  stutter on B-frames (libwebrtc does not reorder), so the layer above transcodes or refuses.
- :class:`AudioFrame`: AAC raw frames or Opus packets with their timestamp.

Frames before their track's sequence header cannot be converted (no NAL length size) and are
dropped and counted; codecs we do not carry produce one :class:`UnsupportedCodec` per track.
Malformed bodies raise :class:`~.errors.RtmpError` like every parser here.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackmesh.codecs.h264 import START_CODE, AvcConfig
from trackmesh.codecs.hevc import HevcConfig
from trackmesh.transports.rtmp import flv
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.flv import PacketType

__all__ = [
    "AudioFrame",
    "BFramesDetected",
    "ConfigChanged",
    "Ingest",
    "IngestOutput",
    "UnsupportedCodec",
    "VideoFrame",
]

#: Video FourCCs carried into rooms (RTP payload formats exist for all four).
VIDEO_CODECS = frozenset({"avc1", "hvc1", "av01", "vp09"})
AUDIO_CODECS = frozenset({"mp4a", "Opus"})


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    kind: str  # "video" | "audio"
    fourcc: str
    track_id: int
    config: AvcConfig | HevcConfig | bytes


@dataclass(frozen=True, slots=True)
class VideoFrame:
    fourcc: str
    track_id: int
    dts: int
    pts: int
    keyframe: bool
    data: bytes

    @property
    def rtp_timestamp(self) -> int:
        return (self.pts * 90) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class AudioFrame:
    fourcc: str
    track_id: int
    timestamp: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BFramesDetected:
    track_id: int
    composition_time: int


@dataclass(frozen=True, slots=True)
class UnsupportedCodec:
    kind: str
    track_id: int
    name: str  # the FourCC, or "codec id N" / "sound format N" for legacy ids


IngestOutput = ConfigChanged | VideoFrame | AudioFrame | BFramesDetected | UnsupportedCodec

# NAL unit types: access unit delimiters are dropped, parameter sets detected.
_H264_AUD = 9
_H264_PARAMS = frozenset({7, 8})
_HEVC_AUD = 35
_HEVC_PARAMS = frozenset({32, 33, 34})


def _annexb(data: bytes, length_size: int, hevc: bool) -> tuple[bytes, bool]:
    """Length-prefixed NAL units -> Annex B without AUDs; also whether parameter sets are in it."""
    out = bytearray()
    has_params = False
    pos, end = 0, len(data)
    while pos < end:
        if pos + length_size > end:
            raise RtmpError("NAL length prefix truncated")
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > end:
            raise RtmpError(f"NAL unit of {size} bytes overruns the frame")
        nal_type = (data[pos] >> 1) & 0x3F if hevc else data[pos] & 0x1F
        if nal_type != (_HEVC_AUD if hevc else _H264_AUD):
            has_params = has_params or nal_type in (_HEVC_PARAMS if hevc else _H264_PARAMS)
            out += START_CODE
            out += data[pos : pos + size]
        pos += size
    return bytes(out), has_params


class Ingest:
    """The tag-to-frame state of one publishing stream (all its tracks)."""

    def __init__(self) -> None:
        self._video: dict[int, tuple[str, AvcConfig | HevcConfig | bytes]] = {}
        self._audio: dict[int, tuple[str, bytes]] = {}
        self._bframes_seen: set[int] = set()
        self._unsupported: set[tuple[str, int]] = set()
        self.dropped_before_config = 0

    def video(self, timestamp: int, payload: bytes) -> list[IngestOutput]:
        out: list[IngestOutput] = []
        for packet in flv.parse_video(payload):
            if packet.packet_type in (PacketType.COMMAND, PacketType.METADATA, PacketType.SEQUENCE_END):
                continue
            fourcc = packet.fourcc
            if fourcc not in VIDEO_CODECS:
                self._report_unsupported(out, "video", packet.track_id, fourcc or f"codec id {payload[0] & 0x0F}")
                continue
            if packet.packet_type == PacketType.SEQUENCE_START:
                config = flv.video_config(packet)
                stored: AvcConfig | HevcConfig | bytes = config if config is not None else packet.data
                self._video[packet.track_id] = (fourcc, stored)
                out.append(ConfigChanged("video", fourcc, packet.track_id, stored))
                continue
            if packet.packet_type not in (PacketType.CODED_FRAMES, PacketType.CODED_FRAMES_X):
                continue
            known = self._video.get(packet.track_id)
            if known is None or known[0] != fourcc:
                self.dropped_before_config += 1
                continue
            cts = packet.composition_time
            if cts != 0 and packet.track_id not in self._bframes_seen:
                self._bframes_seen.add(packet.track_id)
                out.append(BFramesDetected(packet.track_id, cts))
            params = known[1]
            data = packet.data
            if isinstance(params, AvcConfig | HevcConfig):
                data, has_params = _annexb(data, params.length_size, isinstance(params, HevcConfig))
                if packet.is_keyframe and not has_params:
                    data = params.parameter_sets_annexb() + data
            if data:
                out.append(VideoFrame(fourcc, packet.track_id, timestamp, timestamp + cts, packet.is_keyframe, data))
        return out

    def audio(self, timestamp: int, payload: bytes) -> list[IngestOutput]:
        out: list[IngestOutput] = []
        for packet in flv.parse_audio(payload):
            fourcc = packet.fourcc
            if fourcc not in AUDIO_CODECS:
                self._report_unsupported(out, "audio", packet.track_id, fourcc or f"sound format {packet.sound_format}")
                continue
            if packet.packet_type == PacketType.SEQUENCE_START:
                if fourcc == "mp4a":
                    flv.parse_aac_config(packet.data)  # refuse a malformed config here, not in a decoder
                self._audio[packet.track_id] = (fourcc, packet.data)
                out.append(ConfigChanged("audio", fourcc, packet.track_id, packet.data))
            elif packet.packet_type == PacketType.CODED_FRAMES:
                known = self._audio.get(packet.track_id)
                # Opus may come without an OpusHead (it is optional for plain stereo); AAC may not.
                if (known is None and fourcc == "mp4a") or (known is not None and known[0] != fourcc):
                    self.dropped_before_config += 1
                    continue
                if packet.data:
                    out.append(AudioFrame(fourcc, packet.track_id, timestamp, packet.data))
        return out

    def _report_unsupported(self, out: list[IngestOutput], kind: str, track_id: int, name: str) -> None:
        if (kind, track_id) not in self._unsupported:
            self._unsupported.add((kind, track_id))
            out.append(UnsupportedCodec(kind, track_id, name))
