"""Ingest frames -> core :class:`~trackmesh.core.model.MediaPacket` (sans-IO): the last step
before a room's RemoteTrack.

Each frame from :mod:`.ingest` is cut into RTP payloads by the shared packetizer of its codec
(``codecs.registry``: RFC 6184 for H.264, RFC 7798 for HEVC, RFC 9628 for VP9, the AV1 RTP spec, RFC 7587
for Opus) with its own
sequence numbers per track (each rendition of a multitrack stream is a track: its own simulcast
layer, ``MediaPacket.spatial``), the frame's RTP timestamp (90 kHz from the presentation time for
video, 48 kHz for Opus) and the marker on the last packet of a video frame (RFC 6184 s5.1).

Only codecs the core's :class:`~trackmesh.core.model.MediaCodec` names can become packets: H.264,
HEVC, VP9, AV1 and Opus. AAC needs the AAC->Opus transcoder; for it (and unknown codecs)
:meth:`RtmpMedia.video`/:meth:`RtmpMedia.audio` return no packets and count the frame in
``not_carried`` (the layer above says why, once).

Pacing (RTMP bursts a whole key frame at once) and the capture clock of the sender reports are
the publisher's (``bridge.py``); this module only builds the packets.
"""

from __future__ import annotations

from typing import Final

from trackmesh.codecs.payload import Packetizer
from trackmesh.codecs.registry import packetizer
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.transports.rtmp.ingest import AudioFrame, VideoFrame

__all__ = ["DEFAULT_MTU", "PAYLOAD_TYPES", "RtmpMedia"]

DEFAULT_MTU: Final = 1200
_VIDEO: Final = {
    "avc1": (MediaCodec.H264, "h264"),
    "vp09": (MediaCodec.VP9, "vp9"),
    "av01": (MediaCodec.AV1, "av1"),
    "hvc1": (MediaCodec.H265, "h265"),
}
_AUDIO: Final = {"Opus": (MediaCodec.OPUS, "opus")}
#: The payload type written into packets (informative: each viewer's SDP maps codecs to its own).
PAYLOAD_TYPES: Final = {
    MediaCodec.H264: 102,
    MediaCodec.VP9: 98,
    MediaCodec.AV1: 45,
    MediaCodec.H265: 49,
    MediaCodec.OPUS: 111,
}


class _Track:
    __slots__ = ("codec", "packetizer", "seq")

    def __init__(self, codec: MediaCodec, name: str) -> None:
        self.codec = codec
        self.packetizer: Packetizer = packetizer(name)
        self.seq = 0


class RtmpMedia:
    """Per publishing stream: frames in, MediaPackets out, one sequence space per track."""

    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        self.mtu = mtu
        self._tracks: dict[tuple[str, int, str], _Track] = {}
        self.not_carried = 0

    def _track(self, kind: str, track_id: int, fourcc: str) -> _Track | None:
        key = (kind, track_id, fourcc)
        track = self._tracks.get(key)
        if track is None:
            entry = (_VIDEO if kind == "video" else _AUDIO).get(fourcc)
            if entry is None:
                return None
            track = self._tracks[key] = _Track(*entry)
        return track

    def _packets(
        self,
        track: _Track,
        payloads: list[bytes],
        ts: int,
        keyframe: bool,
        video: bool,
        now: float,
        capture: float,
        spatial: int = 0,
        alternate_of: MediaCodec | None = None,
    ) -> list[MediaPacket]:
        out = []
        last = len(payloads) - 1
        pt = PAYLOAD_TYPES[track.codec]
        for i, payload in enumerate(payloads):
            # Audio: the marker is for the first packet after silence (RFC 3551 s4.1); Opus
            # frames from RTMP are contiguous, so it stays clear.
            marker = video and i == last
            out.append(
                MediaPacket(
                    track.codec,
                    pt,
                    track.seq,
                    ts,
                    marker,
                    keyframe,
                    payload,
                    spatial,
                    arrival=now,
                    capture=capture,
                    alternate_of=alternate_of,
                )
            )
            track.seq = (track.seq + 1) & 0xFFFF
        return out

    def video(
        self,
        frame: VideoFrame,
        now: float,
        capture: float = 0.0,
        spatial: int = 0,
        alternate_of: MediaCodec | None = None,
    ) -> list[MediaPacket]:
        """``now``: when the frame's message arrived (the driver's clock), the packets' arrival;
        ``capture``: the frame's time on the publisher's clock (``MediaPacket.capture``);
        ``spatial``: the simulcast layer of the frame's rendition (multitrack, ``bridge.py``);
        ``alternate_of``: the original codec, for the alternate rendition's packets."""
        track = self._track("video", frame.track_id, frame.fourcc)
        if track is None:
            self.not_carried += 1
            return []
        payloads = track.packetizer.packetize(frame.data, self.mtu)
        return self._packets(
            track, payloads, frame.rtp_timestamp, frame.keyframe, True, now, capture, spatial, alternate_of
        )

    def audio(self, frame: AudioFrame, now: float, capture: float = 0.0) -> list[MediaPacket]:
        track = self._track("audio", frame.track_id, frame.fourcc)
        if track is None:
            self.not_carried += 1
            return []
        payloads = track.packetizer.packetize(frame.data, self.mtu)
        return self._packets(track, payloads, (frame.timestamp * 48) & 0xFFFFFFFF, False, False, now, capture)
