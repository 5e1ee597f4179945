"""LOC objects of a MoQ publisher's track -> the core's RTP packets, sans-IO (docs/moq.md, "Publish
into a room over MoQ").

Each object is one frame (draft-ietf-moq-loc); the codec comes from the publisher's MSF catalog
(its WebCodecs codec string, :func:`media_codec`). The frame is cut into RTP payloads by the shared
packetizer of its codec (``codecs.registry``), with the track's own sequence numbers, the RTP
timestamp from the LOC Timestamp (microseconds over the codec clock; an object without one gets
the arrival time), and the marker on a video frame's last packet (RFC 6184 s5.1, RFC 7741 s4.1).

Video: object 0 of a group is a key frame (a group is a join point: draft-ietf-moq-transport
s2.3); nothing is sent before the first group starts, so viewers start on a key frame. A MoQ
publisher cannot be asked for a key frame: a viewer's request is answered by the publisher's next
group (:attr:`LocToRtp.keyframe_requests` counts them). A frame the packetizer refuses (malformed)
is dropped and counted, and video then waits for the next group.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.payload import Packetizer, PayloadError
from trackmesh.codecs.registry import packetizer
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.errors import LocalProtocolError

from .errors import MoqDecodeError
from .loc import decode_loc_properties
from .rtp_to_loc import clock_rate

__all__ = ["DEFAULT_MTU", "PAYLOAD_TYPES", "LocToRtp", "media_codec"]

DEFAULT_MTU: Final = 1200
#: The payload type written into packets (informative: each viewer's SDP maps codecs to its own).
PAYLOAD_TYPES: Final = {
    MediaCodec.VP8: 96,
    MediaCodec.VP9: 98,
    MediaCodec.H264: 102,
    MediaCodec.AV1: 45,
    MediaCodec.OPUS: 111,
    MediaCodec.PCMU: 0,
    MediaCodec.PCMA: 8,
}
_PREFIXES: Final = (
    ("vp8", MediaCodec.VP8, "vp8"),
    ("vp09", MediaCodec.VP9, "vp9"),
    ("vp9", MediaCodec.VP9, "vp9"),
    ("avc1", MediaCodec.H264, "h264"),
    ("avc3", MediaCodec.H264, "h264"),
    ("av01", MediaCodec.AV1, "av1"),
    ("opus", MediaCodec.OPUS, "opus"),
    ("ulaw", MediaCodec.PCMU, "pcmu"),
    ("alaw", MediaCodec.PCMA, "pcma"),
)
_VIDEO: Final = frozenset({MediaCodec.VP8, MediaCodec.VP9, MediaCodec.H264, MediaCodec.AV1})


def media_codec(codec: str) -> tuple[MediaCodec, str] | None:
    """A WebCodecs codec string's core codec and registry name; None for one we cannot carry."""
    lowered = codec.lower()
    for prefix, media, name in _PREFIXES:
        if lowered == prefix or lowered.startswith(prefix + "."):
            return media, name
    return None


class LocToRtp:
    """One track. Counters: ``frames`` sent, ``packets``, ``waiting_frames`` (video before a
    group starts), ``bad_frames`` (refused by the packetizer or with bad LOC properties),
    ``keyframe_requests`` (viewers' requests, answered by the next group)."""

    def __init__(self, codec: MediaCodec, name: str, mtu: int = DEFAULT_MTU, ssrc_seq: int = 0) -> None:
        self.codec = codec
        self.video = codec in _VIDEO
        self.rate = clock_rate(name)
        self.mtu = mtu
        self._packetizer: Packetizer = packetizer(name)
        self._pt = PAYLOAD_TYPES[codec]
        self.seq = ssrc_seq & 0xFFFF
        self._waiting = self.video
        self._last_ts: int | None = None
        self.frames = 0
        self.packets = 0
        self.waiting_frames = 0
        self.bad_frames = 0
        self.keyframe_requests = 0

    def _timestamp(self, extensions: bytes, now: float) -> int:
        us: int | None = None
        if extensions:
            try:
                us = decode_loc_properties(extensions).timestamp_us
            except MoqDecodeError:
                self.bad_frames += 1
        if us is None:
            return int(now * self.rate) & 0xFFFFFFFF
        return (us * self.rate // 1_000_000) & 0xFFFFFFFF

    def object(self, object_id: int, payload: bytes, extensions: bytes, now: float) -> list[MediaPacket]:
        """The packets of one object (``object_id`` 0: the first of its group)."""
        keyframe = self.video and object_id == 0
        if self.video:
            if keyframe:
                self._waiting = False
            elif self._waiting:
                self.waiting_frames += 1
                return []
        if not payload:
            return []  # an Object Status (end of group...), not a frame
        ts = self._timestamp(extensions, now)
        try:
            payloads = self._packetizer.packetize(payload, self.mtu)
        except (PayloadError, LocalProtocolError):
            self.bad_frames += 1
            self._waiting = self.video
            return []
        out = []
        last = len(payloads) - 1
        for i, chunk in enumerate(payloads):
            marker = self.video and i == last
            out.append(MediaPacket(self.codec, self._pt, self.seq, ts, marker, keyframe, chunk, arrival=now))
            self.seq = (self.seq + 1) & 0xFFFF
        self.frames += 1
        self.packets += len(out)
        return out
