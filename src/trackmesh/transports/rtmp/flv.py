"""FLV audio/video tag bodies as RTMP carries them (FLV spec v10.1 E.4.2/E.4.3) and Enhanced RTMP
(veovera enhanced-rtmp v1 and v2: ExVideoTagHeader, ExAudioTagHeader, ModEx, Multitrack).

:func:`parse_video` / :func:`parse_audio` return one packet per track (a plain tag has one, on
track 0). The codec is named by FourCC for both forms: legacy AVC (codec id 7) is ``avc1``, the
legacy HEVC id 12 some phone apps send is ``hvc1``, AAC (sound format 10) is ``mp4a``. Other
legacy codecs (Sorenson, VP6, MP3, ...) come back with their FourCC ``None`` and the raw body,
for the layer above to refuse by name.

The codec configuration is parsed from the sequence header, never taken from onMetaData:
:func:`video_config` hands avcC/hvcC to :mod:`trackmesh.codecs.h264` / :mod:`~trackmesh.codecs.hevc`.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.codecs.h264 import AvcConfig, parse_avcc_config
from trackmesh.codecs.hevc import HevcConfig, parse_hvcc_config
from trackmesh.codecs.payload import PayloadError
from trackmesh.transports.rtmp.errors import RtmpError

__all__ = [
    "AacConfig",
    "AudioPacket",
    "PacketType",
    "VideoPacket",
    "audio_tag",
    "parse_aac_config",
    "parse_audio",
    "parse_video",
    "video_config",
    "video_tag",
]


class PacketType:
    """Packet types, one numbering for video and audio (the legacy AVC/AAC types map onto it)."""

    SEQUENCE_START: Final = 0
    CODED_FRAMES: Final = 1
    SEQUENCE_END: Final = 2
    CODED_FRAMES_X: Final = 3  # video: coded frames without a composition time
    METADATA: Final = 4  # video: AMF colour/HDR metadata; audio: MultichannelConfig
    MPEG2TS_SEQUENCE_START: Final = 5
    MULTITRACK: Final = 6  # video value; audio uses 5 (mapped on parse)
    MODEX: Final = 7
    COMMAND: Final = 15  # video command frame (frame type 5): no media


# Video frame types (FLV E.4.3.1).
FRAME_KEY: Final = 1
FRAME_INTER: Final = 2
FRAME_DISPOSABLE: Final = 3
FRAME_GENERATED_KEY: Final = 4
FRAME_COMMAND: Final = 5

# Multitrack types (enhanced-rtmp v2).
_ONE_TRACK: Final = 0
_MANY_TRACKS: Final = 1
_MANY_TRACKS_MANY_CODECS: Final = 2

_LEGACY_VIDEO: Final = {7: "avc1", 12: "hvc1"}
_VIDEO_FOURCCS: Final = frozenset({"avc1", "hvc1", "av01", "vp08", "vp09"})
#: FourCCs whose coded frames carry a 24-bit composition time (the others have none).
_WITH_CTS: Final = frozenset({"avc1", "hvc1"})
_AUDIO_MULTITRACK: Final = 5


class VideoPacket:
    """One track's video: FourCC, frame type, packet type, composition time (ms), body."""

    __slots__ = ("composition_time", "data", "fourcc", "frame_type", "packet_type", "track_id")

    def __init__(
        self, fourcc: str | None, frame_type: int, packet_type: int, composition_time: int, track_id: int, data: bytes
    ) -> None:
        self.fourcc = fourcc
        self.frame_type = frame_type
        self.packet_type = packet_type
        self.composition_time = composition_time
        self.track_id = track_id
        self.data = data

    @property
    def is_keyframe(self) -> bool:
        return self.frame_type in (FRAME_KEY, FRAME_GENERATED_KEY)

    def __repr__(self) -> str:
        return (
            f"VideoPacket({self.fourcc}, frame={self.frame_type}, type={self.packet_type}, "
            f"cts={self.composition_time}, track={self.track_id}, len={len(self.data)})"
        )


class AudioPacket:
    """One track's audio: FourCC (``mp4a`` for AAC, ``Opus``, ...), packet type, body."""

    __slots__ = ("data", "fourcc", "packet_type", "sound_format", "track_id")

    def __init__(self, fourcc: str | None, sound_format: int, packet_type: int, track_id: int, data: bytes) -> None:
        self.fourcc = fourcc
        self.sound_format = sound_format
        self.packet_type = packet_type
        self.track_id = track_id
        self.data = data

    def __repr__(self) -> str:
        return f"AudioPacket({self.fourcc}, type={self.packet_type}, track={self.track_id}, len={len(self.data)})"


class _Cursor:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise RtmpError("FLV tag truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RtmpError("FLV tag truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u24(self) -> int:
        b = self.take(3)
        return (b[0] << 16) | (b[1] << 8) | b[2]

    def si24(self) -> int:
        v = self.u24()
        return v - (1 << 24) if v & 0x800000 else v

    def fourcc(self) -> str:
        return self.take(4).decode("latin-1")

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


def _skip_modex(cur: _Cursor) -> int:
    """Read ModEx blocks (v2): [size-1 (8 or 16 bits)] [data] [modExType<<4 | packetType];
    returns the packet type that follows. TimestampOffsetNano (type 0) is read and dropped:
    sub-millisecond offsets do not matter to RTP clocks of 90 kHz and 48 kHz."""
    while True:
        size = cur.u8() + 1
        if size == 256:
            size = cur.u16() + 1
        cur.take(size)
        b = cur.u8()
        packet_type = b & 0x0F
        if packet_type != PacketType.MODEX:
            return packet_type


def _tracks(cur: _Cursor, fourcc: str, multitrack_type: int) -> list[tuple[str, int, bytes]]:
    """Split a multitrack body into (fourcc, track id, body) per track."""
    out: list[tuple[str, int, bytes]] = []
    while cur.pos < len(cur.data):
        if multitrack_type == _MANY_TRACKS_MANY_CODECS:
            fourcc = cur.fourcc()
        track_id = cur.u8()
        if multitrack_type == _ONE_TRACK:
            out.append((fourcc, track_id, cur.rest()))
            break
        out.append((fourcc, track_id, cur.take(cur.u24())))
    if not out:
        raise RtmpError("multitrack tag without a track")
    return out


def _video_body(fourcc: str, frame_type: int, packet_type: int, track_id: int, body: bytes) -> VideoPacket:
    cts = 0
    if packet_type == PacketType.CODED_FRAMES and fourcc in _WITH_CTS:
        if len(body) < 3:
            raise RtmpError("coded frames without their composition time")
        v = (body[0] << 16) | (body[1] << 8) | body[2]
        cts = v - (1 << 24) if v & 0x800000 else v
        body = body[3:]
    return VideoPacket(fourcc, frame_type, packet_type, cts, track_id, body)


def parse_video(payload: bytes) -> list[VideoPacket]:
    """A video message body -> one :class:`VideoPacket` per track."""
    cur = _Cursor(payload)
    b0 = cur.u8()
    if not b0 & 0x80:
        frame_type = b0 >> 4
        codec_id = b0 & 0x0F
        fourcc = _LEGACY_VIDEO.get(codec_id)
        if frame_type == FRAME_COMMAND:
            return [VideoPacket(fourcc, frame_type, PacketType.COMMAND, 0, 0, cur.rest())]
        if fourcc is None:
            return [VideoPacket(None, frame_type, PacketType.CODED_FRAMES_X, 0, 0, cur.rest())]
        avc_type = cur.u8()
        cts = cur.si24()
        if avc_type > 2:
            raise RtmpError(f"AVC packet type {avc_type} is not 0, 1 or 2")
        return [VideoPacket(fourcc, frame_type, avc_type, cts if avc_type == 1 else 0, 0, cur.rest())]
    frame_type = (b0 >> 4) & 0x07
    packet_type = b0 & 0x0F
    if packet_type == PacketType.MODEX:
        packet_type = _skip_modex(cur)
    if frame_type == FRAME_COMMAND and packet_type != PacketType.MULTITRACK:
        return [VideoPacket(None, frame_type, PacketType.COMMAND, 0, 0, cur.rest())]
    if packet_type == PacketType.MULTITRACK:
        b = cur.u8()
        multitrack_type, packet_type = b >> 4, b & 0x0F
        if multitrack_type > _MANY_TRACKS_MANY_CODECS:
            raise RtmpError(f"multitrack type {multitrack_type} is unknown")
        if packet_type in (PacketType.MULTITRACK, PacketType.MODEX):
            raise RtmpError("multitrack packet type nests another multitrack or ModEx")
        fourcc = cur.fourcc() if multitrack_type != _MANY_TRACKS_MANY_CODECS else ""
        return [
            _video_body(fc, frame_type, packet_type, track, body)
            for fc, track, body in _tracks(cur, fourcc, multitrack_type)
        ]
    return [_video_body(cur.fourcc(), frame_type, packet_type, 0, cur.rest())]


def parse_audio(payload: bytes) -> list[AudioPacket]:
    """An audio message body -> one :class:`AudioPacket` per track."""
    cur = _Cursor(payload)
    b0 = cur.u8()
    sound_format = b0 >> 4
    if sound_format == 10:  # AAC: AACPacketType 0 = AudioSpecificConfig, 1 = raw frames
        aac_type = cur.u8()
        if aac_type > 1:
            raise RtmpError(f"AAC packet type {aac_type} is not 0 or 1")
        return [AudioPacket("mp4a", sound_format, aac_type, 0, cur.rest())]
    if sound_format != 9:  # 9 = ExHeader (enhanced-rtmp v1 audio)
        return [AudioPacket(None, sound_format, PacketType.CODED_FRAMES, 0, cur.rest())]
    packet_type = b0 & 0x0F
    if packet_type == PacketType.MODEX:
        packet_type = _skip_modex(cur)
    if packet_type == _AUDIO_MULTITRACK:
        b = cur.u8()
        multitrack_type, packet_type = b >> 4, b & 0x0F
        if multitrack_type > _MANY_TRACKS_MANY_CODECS:
            raise RtmpError(f"multitrack type {multitrack_type} is unknown")
        if packet_type in (_AUDIO_MULTITRACK, PacketType.MODEX):
            raise RtmpError("multitrack packet type nests another multitrack or ModEx")
        fourcc = cur.fourcc() if multitrack_type != _MANY_TRACKS_MANY_CODECS else ""
        return [
            AudioPacket(fc, sound_format, packet_type, track, body)
            for fc, track, body in _tracks(cur, fourcc, multitrack_type)
        ]
    return [AudioPacket(cur.fourcc(), sound_format, packet_type, 0, cur.rest())]


def video_config(packet: VideoPacket) -> AvcConfig | HevcConfig | None:
    """The decoder configuration of a sequence start: avcC for ``avc1``, hvcC for ``hvc1``;
    None for the other codecs (av1C and vpcC go to their depacketizers as they are)."""
    if packet.packet_type != PacketType.SEQUENCE_START:
        raise RtmpError("not a sequence start")
    try:
        if packet.fourcc == "avc1":
            return parse_avcc_config(packet.data)
        if packet.fourcc == "hvc1":
            return parse_hvcc_config(packet.data)
    except PayloadError as exc:
        raise RtmpError(f"{packet.fourcc} sequence header: {exc}") from exc
    return None


class AacConfig:
    """The start of an AudioSpecificConfig (ISO/IEC 14496-3 s1.6.2.1)."""

    __slots__ = ("channels", "object_type", "sample_rate")

    def __init__(self, object_type: int, sample_rate: int, channels: int) -> None:
        self.object_type = object_type
        self.sample_rate = sample_rate
        self.channels = channels


_AAC_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def parse_aac_config(data: bytes) -> AacConfig:
    """Object type, sampling rate and channel configuration of an AudioSpecificConfig."""
    if len(data) < 2:
        raise RtmpError("AudioSpecificConfig shorter than 2 bytes")
    bits = int.from_bytes(data[:6].ljust(6, b"\x00"), "big")
    avail = 48
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > min(avail, len(data) * 8):
            raise RtmpError("AudioSpecificConfig truncated")
        value = (bits >> (avail - pos - n)) & ((1 << n) - 1)
        pos += n
        return value

    object_type = read(5)
    if object_type == 31:
        object_type = 32 + read(6)
    index = read(4)
    if index == 15:
        rate = read(24)
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise RtmpError(f"AAC sampling frequency index {index} is reserved")
    return AacConfig(object_type, rate, read(4))


# --- writing (RTMP play/restream egress, test publishers) -----------------------------------------

_LEGACY_VIDEO_IDS: Final = {"avc1": 7}


def _si24(value: int) -> bytes:
    if not -(1 << 23) <= value < (1 << 23):
        raise ValueError(f"composition time {value} does not fit 24 bits")
    return (value & 0xFFFFFF).to_bytes(3, "big")


def _write_video_body(packet: VideoPacket) -> bytes:
    if packet.packet_type == PacketType.CODED_FRAMES and packet.fourcc in _WITH_CTS:
        return _si24(packet.composition_time) + packet.data
    return packet.data


def video_tag(packets: list[VideoPacket], enhanced: bool = True) -> bytes:
    """The body of one video message for these packets (one per track). ``enhanced=False`` writes
    the legacy AVC header (one ``avc1`` packet, types 0-2), what RTMP players before Enhanced RTMP
    read; otherwise an ExVideoTagHeader, multitrack when there are several packets (one FourCC:
    ManyTracks; several: ManyTracksManyCodecs)."""
    if not packets:
        raise ValueError("no packet to write")
    first = packets[0]
    if not enhanced:
        if len(packets) != 1 or first.fourcc not in _LEGACY_VIDEO_IDS or first.packet_type > 2:
            raise ValueError("a legacy tag carries one avc1 packet of type 0, 1 or 2")
        head = bytes(((first.frame_type << 4) | _LEGACY_VIDEO_IDS[first.fourcc], first.packet_type))
        return head + _si24(first.composition_time if first.packet_type == 1 else 0) + first.data
    if len(packets) == 1:
        if first.fourcc is None:
            raise ValueError("an enhanced tag needs a FourCC")
        head = bytes((0x80 | (first.frame_type << 4) | first.packet_type,))
        return head + first.fourcc.encode("latin-1") + _write_video_body(first)
    packet_type = first.packet_type
    if any(p.packet_type != packet_type for p in packets):
        raise ValueError("the tracks of one multitrack tag share a packet type")
    fourccs = {p.fourcc for p in packets}
    if None in fourccs:
        raise ValueError("an enhanced tag needs a FourCC")
    many_codecs = len(fourccs) > 1
    out = bytearray((0x80 | (first.frame_type << 4) | PacketType.MULTITRACK,))
    out.append(((_MANY_TRACKS_MANY_CODECS if many_codecs else _MANY_TRACKS) << 4) | packet_type)
    if not many_codecs:
        out += str(first.fourcc).encode("latin-1")
    for p in packets:
        if many_codecs:
            out += str(p.fourcc).encode("latin-1")
        body = _write_video_body(p)
        out.append(p.track_id)
        out += len(body).to_bytes(3, "big")
        out += body
    return bytes(out)


def audio_tag(packets: list[AudioPacket]) -> bytes:
    """The body of one audio message: AAC (``mp4a``, one packet) with the legacy header as every
    player reads it, other FourCCs with an ExAudioTagHeader (multitrack for several packets)."""
    if not packets:
        raise ValueError("no packet to write")
    first = packets[0]
    if len(packets) == 1 and first.fourcc == "mp4a":
        if first.packet_type > 1:
            raise ValueError("AAC packet type is 0 or 1")
        return bytes((0xAF, first.packet_type)) + first.data  # AAC, 44 kHz, 16 bit, stereo flags
    if len(packets) == 1:
        if first.fourcc is None:
            raise ValueError("an enhanced tag needs a FourCC")
        return bytes((0x90 | first.packet_type,)) + first.fourcc.encode("latin-1") + first.data
    packet_type = first.packet_type
    if any(p.packet_type != packet_type for p in packets):
        raise ValueError("the tracks of one multitrack tag share a packet type")
    fourccs = {p.fourcc for p in packets}
    if None in fourccs:
        raise ValueError("an enhanced tag needs a FourCC")
    many_codecs = len(fourccs) > 1
    out = bytearray((0x90 | _AUDIO_MULTITRACK,))
    out.append(((_MANY_TRACKS_MANY_CODECS if many_codecs else _MANY_TRACKS) << 4) | packet_type)
    if not many_codecs:
        out += str(first.fourcc).encode("latin-1")
    for p in packets:
        if many_codecs:
            out += str(p.fourcc).encode("latin-1")
        out.append(p.track_id)
        out += len(p.data).to_bytes(3, "big")
        out += p.data
    return bytes(out)
