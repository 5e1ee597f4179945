"""Media a WebRTC client publishes: SRTP-decrypted RTP in, one MediaPacket per packet out,
and the RTCP the server owes the sender (NACK, RR, transport-cc feedback, PLI/FIR, REMB).

One :class:`InboundTrack` per m-line the client sends on (published as one RemoteTrack); one
:class:`TrackStream` per RTP stream of it: a plain m-line has one, a simulcast m-line one per
rid (RFC 8853), numbered from 0 in the offer's rid order (Chrome orders them low to high). RTX
streams (RFC 4588) map onto the stream they repair and are unwrapped back to it.

SSRCs are learned, in this order (RFC 8843 s9.2 "receiving RTP"): ``a=ssrc`` lines of the
offer, the mid/rid/repaired-rid header extensions (RFC 8843 s15, RFC 8852 s3), and finally a
payload type that only one m-line uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from trackmesh.codecs.registry import is_keyframe
from trackmesh.codecs.vp8 import Vp8Descriptor, parse_vp8_descriptor, vp8_keyframe
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.core.tracks import RemoteTrack
from trackmesh.errors import RemoteProtocolError
from trackmesh.rtp.packet import RtpHeader, find_extension, read_mid, read_rid
from trackmesh.rtp.rtcp import SenderReport, build_remb
from trackmesh.rtp.streams.inbound import InboundStream, InboundStreams
from trackmesh.rtp.twcc import TwccRecorder
from trackmesh.sdp.codecs import EXT_AUDIO_LEVEL, EXT_MID, EXT_RID, EXT_RRID, EXT_TWCC
from trackmesh.transports.webrtc.answer import NegotiatedMedia

__all__ = ["InboundMedia", "InboundTrack", "TrackStream", "media_codec"]

_CODECS: Final = {
    "opus": MediaCodec.OPUS,
    "vp8": MediaCodec.VP8,
    "vp9": MediaCodec.VP9,
    "h264": MediaCodec.H264,
    "av1": MediaCodec.AV1,
    "h265": MediaCodec.H265,
    "pcma": MediaCodec.PCMA,
    "pcmu": MediaCodec.PCMU,
}


def media_codec(name: str) -> MediaCodec | None:
    return _CODECS.get(name.lower())


class TrackStream(InboundStream):
    """One RTP stream (a simulcast layer, or the only stream) of an :class:`InboundTrack`: the
    protocol-neutral receive state plus where it belongs (track, and spatial layer by rid)."""

    __slots__ = ("spatial", "track")

    def __init__(self, track: InboundTrack, spatial: int) -> None:
        self.track = track
        self.spatial = spatial
        super().__init__(track.nack)


class InboundTrack:
    """One m-line the client sends on, published as the RemoteTrack ``name``."""

    __slots__ = (
        "audio_level_id",
        "codecs",
        "fir",
        "keyframe_pending",
        "kind",
        "mid",
        "mid_id",
        "nack",
        "name",
        "pli",
        "remb",
        "rid_id",
        "rids",
        "rrid_id",
        "rtx_pts",
        "streams",
        "twcc_id",
        "video",
    )

    def __init__(self, media: NegotiatedMedia, name: str) -> None:
        self.mid = media.mid
        self.kind = media.kind
        self.name = name
        self.video = media.kind == "video"
        # payload type -> (codec, name for the key-frame detector)
        self.codecs: dict[int, tuple[MediaCodec, str]] = {}
        self.rtx_pts: dict[int, int] = {}  # RFC 4588 s8.1: rtx payload type -> apt
        feedback: set[str] = set()
        for c in media.codecs:
            codec = media_codec(c.name)
            if codec is None:
                continue
            self.codecs[c.payload_type] = (codec, c.name.lower())
            if c.rtx_payload_type is not None:
                self.rtx_pts[c.rtx_payload_type] = c.payload_type
            feedback.update(c.rtcp_feedback)
        self.nack = self.video and "nack" in feedback
        self.pli = "nack pli" in feedback
        self.fir = "ccm fir" in feedback
        self.remb = "goog-remb" in feedback
        ext = media.extensions
        self.mid_id = ext.get(EXT_MID, 0)
        self.rid_id = ext.get(EXT_RID, 0)
        self.rrid_id = ext.get(EXT_RRID, 0)
        self.twcc_id = ext.get(EXT_TWCC, 0)
        self.audio_level_id = ext.get(EXT_AUDIO_LEVEL, 0)
        self.rids = tuple(r.id for r in media.rids)
        self.streams = [TrackStream(self, i) for i in range(max(1, len(self.rids)))]
        self.keyframe_pending = False


class InboundMedia(InboundStreams[TrackStream]):
    """Every stream the client publishes, and the receiver-side RTCP for them.

    The per-SSRC state, NACKs and RRs are :class:`~trackmesh.rtp.streams.inbound.InboundStreams`';
    this adds what WebRTC needs: SSRCs learned from the mid/rid header extensions, RTX unwrapped
    by the m-line's payload types, transport-cc feedback, PLI/FIR/REMB per track as negotiated,
    and the MediaPacket handed to the published RemoteTrack.

    ``send_rtcp`` protects and queues one RTCP packet (it is a no-op before DTLS is up).
    ``remote_tracks`` is the endpoint's live dict: looked up per packet so a track that was
    unpublished (or republished) by a control is never fed through a stale object.
    """

    __slots__ = (
        "_mid_ids",
        "by_mid",
        "by_name",
        "counters",
        "remote_tracks",
        "twcc",
    )

    def __init__(
        self,
        tracks: list[InboundTrack],
        media: Mapping[str, NegotiatedMedia],
        remote_tracks: dict[str, RemoteTrack],
        sender_ssrc: int,
        send_rtcp: Callable[[bytes], None],
    ) -> None:
        super().__init__(sender_ssrc, send_rtcp)
        self.by_mid = {t.mid: t for t in tracks}
        self.by_name = {t.name: t for t in tracks}
        self.remote_tracks = remote_tracks
        for t in tracks:
            m = media[t.mid]
            # Without rids the offer's a=ssrc lines (and a=ssrc-group:FID, RFC 4588 s8.2) name
            # the streams up front.
            if not t.rids and m.remote_ssrcs:
                stream = t.streams[0]
                self.bind(stream, m.remote_ssrcs[0])
                rtx = m.remote_rtx_ssrcs.get(stream.ssrc)
                if rtx is not None:
                    self.bind_rtx(stream, rtx)
        self._mid_ids = sorted({t.mid_id for t in tracks if t.mid_id})
        self.twcc = TwccRecorder(sender_ssrc) if any(t.twcc_id for t in tracks) else None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "packets",
                "unknown_ssrc",
                "unknown_pt",
                "bad_payload",
                "padding",
                "rtx",
                "bad_rtx",
                "duplicate",
                "not_published",
            ),
            0,
        )

    # ---- the hot path -----------------------------------------------------------------------

    def on_rtp(self, now: float, data: bytes, h: RtpHeader, body: bytes | None = None) -> None:
        """One RTP packet from the client, parsed as ``h``: its header (and extensions) in ``data``,
        its decrypted payload at ``h.payload_offset`` of ``body`` (``data`` itself when None: a
        whole plaintext packet). Never raises on bad input."""
        if body is None:
            body = data
        ssrc = h.ssrc
        stream = self.by_ssrc.get(ssrc)
        rtx = False
        if stream is None:
            stream = self.by_rtx_ssrc.get(ssrc)
            if stream is None:
                found = self._learn(data, h)
                if found is None:
                    self.counters["unknown_ssrc"] += 1
                    return
                stream, rtx = found
            else:
                rtx = True
        track = stream.track
        if track.twcc_id and self.twcc is not None:
            try:
                loc = find_extension(data, h, track.twcc_id)
            except RemoteProtocolError:
                loc = None
            if loc is not None and loc[1] >= 2:
                # The transport-wide sequence counts every packet, RTX and padding included.
                self.twcc.record((data[loc[0]] << 8) | data[loc[0] + 1], now, ssrc)
        off = h.payload_offset
        size = h.payload_length
        seq = h.sequence_number
        pt = h.payload_type
        if rtx:
            apt = track.rtx_pts.get(pt)
            if size == 0:
                self.counters["padding"] += 1  # RTX padding probes (bandwidth probing)
                return
            if apt is None or size < 2:
                self.counters["bad_rtx"] += 1
                return
            # RFC 4588 s4: the original sequence number (OSN) leads the RTX payload.
            seq = (body[off] << 8) | body[off + 1]
            off += 2
            size -= 2
            pt = apt
            self.counters["rtx"] += 1
        elif size == 0:
            self.counters["padding"] += 1
            return
        entry = track.codecs.get(pt)
        if entry is None:
            self.counters["unknown_pt"] += 1
            return
        codec, name = entry
        # Zero-copy: the whole body when it is exactly the payload (GCM, no padding or RTX header).
        payload: bytes | memoryview = body if off == 0 and size == len(body) else memoryview(body)[off : off + size]
        level: int | None = None
        keyframe = False
        d8: Vp8Descriptor | None = None
        try:
            if track.video:
                if codec is MediaCodec.VP8:
                    # Parsed once here for every viewer: it travels on the packet (MediaPacket.meta).
                    d8 = parse_vp8_descriptor(payload)
                    keyframe = vp8_keyframe(payload, d8)
                else:
                    keyframe = is_keyframe(name, payload)
            elif track.audio_level_id:
                loc = find_extension(data, h, track.audio_level_id)
                if loc is not None:
                    level = data[loc[0]] & 0x7F  # RFC 6464 s3: -dBov, the V flag dropped
        except RemoteProtocolError:
            self.counters["bad_payload"] += 1
            return
        # Reception statistics, duplicates and loss detection follow the original stream's numbers.
        if not self.receive(stream, seq, now):
            self.counters["duplicate"] += 1
            return
        self.counters["packets"] += 1
        remote = self.remote_tracks.get(track.name)
        if remote is None:
            self.counters["not_published"] += 1
            return
        # Positional: the hot path's one allocation. Arrival time and the parsed descriptor travel with it.
        pkt = MediaPacket(
            codec, pt, seq, h.timestamp, h.marker, keyframe, payload, stream.spatial, 0, level, (), now, d8
        )  # fmt: skip
        remote.on_packet(pkt)


    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        """RFC 3550 s6.4.1: the RR's LSR/DLSR bookkeeping, and the stream's RTP -> NTP time for
        whoever records the track (``RemoteTrack.clock_sink``, with the stream's simulcast layer)."""
        super().on_sender_report(sr, now)
        stream = self.by_ssrc.get(sr.ssrc)
        if stream is None:
            return
        remote = self.remote_tracks.get(stream.track.name)
        if remote is not None and remote.clock_sink is not None:
            remote.clock_sink(now, stream.spatial, sr.rtp_timestamp, sr.ntp_timestamp)

    # ---- SSRC learning ----------------------------------------------------------------------

    def _learn(self, data: bytes, h: RtpHeader) -> tuple[TrackStream, bool] | None:
        try:
            return self._learn_unchecked(data, h)
        except RemoteProtocolError:
            return None

    def _learn_unchecked(self, data: bytes, h: RtpHeader) -> tuple[TrackStream, bool] | None:
        track: InboundTrack | None = None
        via_mid = False
        for ext_id in self._mid_ids:
            mid = read_mid(data, h, ext_id)
            if mid is not None:
                track = self.by_mid.get(mid)
                via_mid = True
                break
        if track is None and via_mid:
            return None  # it names an m-line we do not receive on (stopped, say): never guessed by payload type
        if track is None:
            owners = [t for t in self.by_mid.values() if h.payload_type in t.codecs or h.payload_type in t.rtx_pts]
            if len(owners) != 1:
                return None
            track = owners[0]
        rtx = h.payload_type in track.rtx_pts
        spatial = 0
        if track.rids:
            rid = read_rid(data, h, track.rid_id) if track.rid_id else None
            if rid is None and track.rrid_id:
                rid = read_rid(data, h, track.rrid_id)
                rtx = rid is not None or rtx
            if rid is None or rid not in track.rids:
                return None
            spatial = track.rids.index(rid)
        stream = track.streams[spatial]
        if not via_mid and (stream.rtx_ssrc if rtx else stream.ssrc) >= 0:
            # A payload type alone cannot replace a stream we already know (from a=ssrc or
            # earlier packets): it is a stray or spoofed SSRC, not a restart.
            return None
        if rtx:
            self.bind_rtx(stream, h.ssrc)
        else:
            # A stream that had another SSRC was restarted by the sender: bind forgets the old one.
            self.bind(stream, h.ssrc)
            if track.keyframe_pending:
                self.request_keyframe(track.name)
        return stream, rtx

    # ---- feedback to the sender ---------------------------------------------------------------

    def request_keyframe(self, track_name: str) -> bool:
        """PLI (RFC 4585 s6.3.1), or FIR (RFC 5104 s4.3.1) when only ccm fir was negotiated,
        to every known stream of the track. Remembered until a stream's SSRC is known."""
        track = self.by_name.get(track_name)
        if track is None:
            return False
        sent = False
        fir = track.fir and not track.pli
        for stream in track.streams:
            if stream.ssrc < 0:
                continue
            self._send_rtcp(stream.keyframe_request(self.sender_ssrc, fir))
            self.keyframe_requests += 1
            sent = True
        track.keyframe_pending = not sent
        return sent

    def on_keyframe_needed(self, stream: TrackStream, now: float) -> None:
        # The whole track's streams are asked, with the track's negotiated feedback.
        self.request_keyframe(stream.track.name)

    def send_remb(self, track_name: str, bitrate: int) -> bool:
        """REMB (draft-alvestrand-rmcat-remb-03 s2.2) for the track's streams, if negotiated."""
        track = self.by_name.get(track_name)
        if track is None or not track.remb:
            return False
        ssrcs = [s.ssrc for s in track.streams if s.ssrc >= 0]
        if not ssrcs:
            return False
        self._send_rtcp(build_remb(self.sender_ssrc, bitrate, ssrcs))
        return True

    def streams(self) -> list[TrackStream]:
        """Every stream, by m-line then rid order (the order of RR blocks)."""
        return [s for t in self.by_mid.values() for s in t.streams]

    # ---- renegotiation (m-lines added or stopped on a live connection) ----------------------

    def add_track(self, track: InboundTrack, media: NegotiatedMedia) -> None:
        """Receive on one more m-line; its SSRCs come from the offer's a=ssrc lines or, as for the first
        m-lines, are learned from the mid/rid header extensions (RFC 8843 s9.2)."""
        self.remove_track(track.mid)
        self.by_mid[track.mid] = track
        self.by_name[track.name] = track
        if not track.rids and media.remote_ssrcs and media.remote_ssrcs[0] not in self.by_ssrc:
            stream = track.streams[0]
            self.bind(stream, media.remote_ssrcs[0])
            rtx = media.remote_rtx_ssrcs.get(stream.ssrc)
            if rtx is not None and rtx not in self.by_rtx_ssrc:
                self.bind_rtx(stream, rtx)
        self._mid_ids = sorted({t.mid_id for t in self.by_mid.values() if t.mid_id})
        if track.twcc_id and self.twcc is None:
            self.twcc = TwccRecorder(self.sender_ssrc)

    def remove_track(self, mid: str) -> InboundTrack | None:
        """Stop receiving on m-line ``mid`` (port 0 or inactive): its SSRCs are forgotten, so a packet
        that still arrives on them is counted as unknown instead of reaching a track."""
        track = self.by_mid.pop(mid, None)
        if track is None:
            return None
        if self.by_name.get(track.name) is track:
            del self.by_name[track.name]
        for stream in track.streams:
            self.unbind(stream)
        self._mid_ids = sorted({t.mid_id for t in self.by_mid.values() if t.mid_id})
        return track

    # ---- timers --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        best = super().next_deadline()
        if self.twcc is not None:
            t = self.twcc.next_timeout()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timeout(self, now: float) -> None:
        if self.twcc is not None:
            for fb in self.twcc.handle_timeout(now):
                self._send_rtcp(fb)
        super().handle_timeout(now)
