"""Media a WebRTC client views: the LocalTrack sink that turns the core's MediaPackets into this
viewer's SRTP stream, answers its NACKs, picks simulcast layers and writes its sender reports.

Per packet (hot path): pick the layer, rewrite seq/ts into one continuous space
(:class:`SeqTsRewriter`, so switching source or layer is seamless, RFC 7667 s3.7), write the
viewer's SSRC, payload type and the header extensions we own (transport-cc sequence,
abs-send-time) into one reusable buffer, SRTP-protect, queue. The plaintext is kept in a
:class:`RetransmitBuffer` so NACKs are answered here, never forwarded to the publisher.
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.codecs.layers import (
    MAX_TEMPORAL,
    SeqSkipper,
    Vp8Layers,
    Vp9Layers,
    vp8_descriptor,
    vp9_descriptor,
    vp9_numbers_end,
)
from trackmesh.codecs.vp8 import Vp8Descriptor
from trackmesh.core.controls import RequestKeyframe
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.core.tracks import ALTERNATE_REPEAT, LocalTrack
from trackmesh.net import Address
from trackmesh.rtp.srtp import RtpSender, SrtpError, SrtpSession
from trackmesh.rtp.streams.outbound import OutboundStream, ntp_timestamp
from trackmesh.rtp.twcc import BandwidthEstimator, TwccSendHistory
from trackmesh.sdp.codecs import EXT_ABS_SEND_TIME, EXT_TWCC
from trackmesh.transports.webrtc.answer import NegotiatedMedia
from trackmesh.transports.webrtc.events import Outbox
from trackmesh.transports.webrtc.media_in import media_codec

__all__ = ["OutboundTrack", "SendContext"]

_U16: Final = struct.Struct("!H")
#: Layer bitrates are measured over windows of this many seconds.
RATE_WINDOW: Final = 1.0
#: A layer is chosen only if its bitrate plus this headroom fits the viewer's estimate.
HEADROOM: Final = 1.15
#: While a layer switch waits for a key frame, the request is repeated this often.
KEYFRAME_RETRY: Final = 1.0
MAX_LAYERS: Final = 4
#: probe_cap's default: probe no higher than max_spatial.
_CAP: Final = -1
_VP8: Final = MediaCodec.VP8
_VP9: Final = MediaCodec.VP9


class SendContext:
    """What every outgoing stream of one peer shares: keys, address, the transport-wide
    sequence space (one per connection, draft-holmer-rmcat-transport-wide-cc s2) and the
    connection's bandwidth estimate."""

    __slots__ = (
        "addr",
        "bwe",
        "estimate",
        "history",
        "outbox",
        "own_estimate",
        "srtp",
        "twcc_seq",
        "wall_offset",
    )

    def __init__(self, outbox: Outbox, wall_offset: float) -> None:
        self.outbox = outbox
        self.wall_offset = wall_offset  # wallclock (Unix seconds) = now + wall_offset
        self.srtp: SrtpSession | None = None
        self.addr: Address | None = None
        self.twcc_seq = 0
        self.history = TwccSendHistory()
        self.bwe = BandwidthEstimator()
        self.estimate: float | None = None  # bits per second; None until the viewer reports
        # True when the estimate comes from our BandwidthEstimator (transport-cc feedback),
        # False when the viewer told us its own (REMB): only ours can be probed upwards.
        self.own_estimate = False

    def ntp(self, now: float) -> int:
        """64-bit NTP timestamp (RFC 3550 s4) of monotonic ``now``."""
        return ntp_timestamp(now, self.wall_offset)


class OutboundTrack(OutboundStream):
    """One m-line the server sends on, fed by LocalTrack ``local`` (this object is its sink).

    The per-SSRC send state (rewriter, header template, retransmission ring, SR counts) is
    :class:`~trackmesh.rtp.streams.outbound.OutboundStream`'s; this adds SRTP bound to the
    DTLS session, the connection's transport-wide sequence and bandwidth estimate, and
    simulcast/SVC layer selection. :meth:`on_media` is the per-viewer hot path: it reads the
    inherited attributes directly and writes the header inline (as ``OutboundStream.header``
    and ``sent`` do), so the split costs no call per forwarded packet.
    """

    __slots__ = (
        "_alt_at",
        "_bytes",
        "_channel",
        "_endpoint",
        "_generation",
        "_kf_requested",
        "_nack",
        "_rates",
        "_replay",
        "_sender",
        "_sender_srtp",
        "_svc",
        "_tbytes",
        "_trates",
        "_win_end",
        "_win_start",
        "counters",
        "ctx",
        "current",
        "kind",
        "local",
        "max_spatial",
        "mid",
        "min_spatial",
        "pending",
        "probe_cap",
        "skipper",
        "video",
        "vp8",
        "vp9",
    )

    def __init__(self, media: NegotiatedMedia, local: LocalTrack, endpoint: Endpoint, ctx: SendContext) -> None:
        if media.local_ssrc is None:
            raise ValueError(f"m-line {media.mid} has no local SSRC: it is not a sending m-line")
        self.mid = media.mid
        self.kind = media.kind
        self.video = media.kind == "video"
        self.local = local
        self.ctx = ctx
        self._endpoint = endpoint
        # The viewer's payload type for each codec (the first one offered wins, e.g. among
        # several H.264 profiles), and the RTX payload type for each media payload type.
        pts: dict[MediaCodec, int] = {}
        rtx_pts: dict[int, int] = {}
        for c in media.codecs:
            codec = media_codec(c.name)
            if codec is not None and codec not in pts:
                pts[codec] = c.payload_type
                if c.rtx_payload_type is not None:
                    rtx_pts[c.payload_type] = c.rtx_payload_type
        super().__init__(
            media.local_ssrc,
            media.local_rtx_ssrc,
            pts,
            rtx_pts,
            media.codecs[0].clock_rate if media.codecs else 90000,
            ring_size=512 if self.video else 64,
            twcc_id=media.extensions.get(EXT_TWCC, 0),
            abs_id=media.extensions.get(EXT_ABS_SEND_TIME, 0),
        )
        # Generic NACK negotiated (RFC 4585 s4.2): without it the viewer never asks for a packet again
        # (most audio m-lines: browsers offer only transport-cc for Opus), so nothing is kept for it.
        # Keeping it anyway cost every audio viewer a ring and kept its sources' payloads alive 1.3 s.
        self._nack = any("nack" in c.rtcp_feedback for c in media.codecs)
        # The SRTP protector of this SSRC, bound to the session it came from (a new DTLS
        # handshake brings a new session, hence new keys and a new rollover counter).
        self._sender: RtpSender | None = None
        self._sender_srtp: SrtpSession | None = None
        self._generation = 0
        self._channel: int | None = None
        self.current = -1  # spatial layer being forwarded (-1: none yet, waiting for a key frame)
        self.pending = 0  # layer to switch to at its next key frame (-1: none)
        self.max_spatial: int | None = None
        # A floor under the estimate-driven choice (an SDK receiver's min_spatial): with no
        # layer fitting the estimate, the lowest layer at or above it, not layer 0.
        self.min_spatial: int | None = None
        # The highest layer an upward probe may aim at (see reselect); _CAP: max_spatial.
        self.probe_cap: int | None = _CAP
        # Layers inside one codec stream: VP8 temporal layers, VP9 SVC spatial and temporal.
        self.vp8 = Vp8Layers()
        self.vp9 = Vp9Layers()
        self.skipper = SeqSkipper()
        self._svc = False  # VP9 with spatial layers on this one SSRC (a SID > 0 was seen)
        self._kf_requested = -1e18
        self._alt_at = -1e18  # when this viewer last asked for the alternate rendition
        self._replay = 0  # the GOP replay (MediaPacket.replay) this viewer started on
        self._bytes = [0] * MAX_LAYERS
        self._rates = [0.0] * MAX_LAYERS
        # Per temporal layer (TID) of the forwarded spatial layer, before the temporal filter.
        self._tbytes = [0] * (MAX_TEMPORAL + 1)
        self._trates = [0.0] * (MAX_TEMPORAL + 1)
        self._win_start: float | None = None
        self._win_end = 0.0
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "not_connected",
                "codec_not_negotiated",
                "layer_filtered",
                "waiting_keyframe",
                "temporal_filtered",
                "svc_filtered",
                "bad_payload",
                "stale",
                "protect_failed",
                "switches",
                "nack_hits",
                "nack_misses",
                "replay_skipped",
                "alternate_skipped",
            ),
            0,
        )
        local.sink = self.on_media

    # ---- the hot path ----------------------------------------------------------------------

    def _not_taken(self, pkt: MediaPacket, pt: int | None) -> None:
        """A packet of a codec this viewer did not negotiate, or an alternate rendition of one it did
        (it takes the original). An original it cannot decode: ask for the alternate, once a second
        while it keeps coming (the publisher stops the alternate when nobody asks any more)."""
        if pt is not None:
            self.counters["alternate_skipped"] += 1
            return
        self.counters["codec_not_negotiated"] += 1
        now = pkt.arrival
        if self.video and pkt.alternate_of is None and now >= self._alt_at + ALTERNATE_REPEAT:
            self._alt_at = now
            self.local.request_alternate(now)

    def on_media(self, pkt: MediaPacket) -> None:
        """The LocalTrack sink: one packet of the source (shared, never mutated)."""
        ctx = self.ctx
        srtp = ctx.srtp
        addr = ctx.addr
        if srtp is None or addr is None:
            self.counters["not_connected"] += 1
            return
        sender = self._sender
        if srtp is not self._sender_srtp or sender is None:
            sender = self._sender = srtp.rtp_sender(self.ssrc)
            self._sender_srtp = srtp
        pt = self.pts.get(pkt.codec)
        alternate_of = pkt.alternate_of
        if pt is None or (alternate_of is not None and alternate_of in self.pts):
            self._not_taken(pkt, pt)
            return
        now = pkt.arrival  # this sink runs inside the publisher's input: its now is the packet's
        payload = pkt.payload
        size = len(payload)
        spatial = pkt.spatial
        if self.local.channel != self._channel:
            self._on_new_source()
        codec = pkt.codec
        if self.video:
            layer = spatial
            d9 = None
            if codec is _VP9:
                d9 = vp9_descriptor(pkt)
                if d9 is not None and d9.spatial_id:
                    layer = d9.spatial_id  # SVC: every spatial layer on this one stream
                    self._svc = True
            if layer < MAX_LAYERS:
                self._bytes[layer] += size
            if now >= self._win_end:
                self._roll(now)
            replay = pkt.replay
            if replay and replay != self._replay:
                # A publisher's GOP re-sent for a viewer that waits for a key frame: a viewer
                # already playing has these packets, one still waiting starts on this key frame.
                if self.current >= 0 or not pkt.keyframe:
                    self.counters["replay_skipped"] += 1
                    return
                self._replay = replay
            if spatial != self.current:
                if spatial == self.pending and pkt.keyframe:
                    # Switch only at a key frame of the target layer: the viewer's decoder
                    # cannot use inter frames of a stream it never saw (RFC 7667 s3.7).
                    self.current = spatial
                    self.pending = -1
                    self.counters["switches"] += 1
                else:
                    self.counters["layer_filtered" if self.current >= 0 else "waiting_keyframe"] += 1
                    return
        key = (self._generation << 8) | spatial
        out = self.rewriter.rewrite(key, pkt.seq, pkt.ts, now)
        if out is None:
            self.counters["stale"] += 1
            return
        seq, ts = out
        marker = pkt.marker
        hlen = self._hlen
        buf = self._buf
        dlen = 0
        if codec is _VP8:
            if size and payload[0] & 0x80:
                # X: picture id / TL0PICIDX / TID present (RFC 7741 s4.2): filter temporal
                # layers; renumber in a copy of the descriptor placed after our header.
                d8 = pkt.meta  # parsed by the receiving side, or below by the first viewer
                if not isinstance(d8, Vp8Descriptor):
                    d8 = vp8_descriptor(pkt)
                if d8 is not None:
                    self._tbytes[d8.temporal_id] += size
                    vp8 = self.vp8
                    if vp8.idle and key == vp8.key:
                        # Nothing to filter or renumber (the common case): just remember it.
                        vp8.last = d8
                        if d8.temporal_id > vp8.tid_seen:
                            vp8.tid_seen = d8.temporal_id
                    elif r := vp8.process(d8, pkt.keyframe, key):
                        if r < 0:
                            self._skip(seq)
                            self.counters["temporal_filtered"] += 1
                            return
                        dlen = d8.size
                        buf[hlen : hlen + dlen] = payload[:dlen]
                        vp8.rewrite(buf, hlen, d8)
        elif codec is _VP9:
            if d9 is None:
                self._skip(seq)
                self.counters["bad_payload"] += 1
                return
            vp9 = self.vp9
            if d9.spatial_id <= vp9.current:
                self._tbytes[d9.temporal_id] += size
            m = vp9.forward(d9, pkt.keyframe, pkt.ts, key)
            if m < 0:
                self._skip(seq)
                self.counters["svc_filtered"] += 1
                return
            marker = marker or m == 1
            if vp9.renumber:
                # Picture id / TL0PICIDX continuous for this viewer (layers.Vp9Layers).
                dlen = vp9_numbers_end(d9)  # the rest (e.g. a long SS) is sent as it is
                buf[hlen : hlen + dlen] = payload[:dlen]
                vp9.rewrite(buf, hlen, d9)
        if self.skipper.skipped:
            seq = self.skipper.map(seq)
        # The whole header in one pack (only the extensions negotiated: see _header_struct).
        # It is the AAD of GCM (RFC 7714 s7.1); the payload is not copied: SRTP encrypts it
        # from the source's buffer and the retransmission ring keeps a reference to it, shared
        # by every viewer. Only a renumbered VP8 descriptor makes this viewer's payload its own.
        b0, words, tid, aid = self._hvals
        b1 = (0x80 | pt) if marker else pt
        mode = self._hmode
        tseq = -1
        if mode & 1:
            tseq = ctx.twcc_seq
            ctx.twcc_seq = (tseq + 1) & 0xFFFF
        if mode & 2:
            # abs-send-time: 6.18 fixed-point seconds, 24 bits (webrtc.org abs-send-time).
            a = int((now + ctx.wall_offset) * 262144.0) & 0xFFFFFF
            if mode == 3:
                hdr = self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, tid, tseq, aid, a >> 8, a & 0xFF)
            else:
                hdr = self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, aid, a >> 8, a & 0xFF)
        elif mode:
            hdr = self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, tid, tseq)
        else:
            hdr = self._hst.pack(b0, b1, seq, ts, self.ssrc)
        body = payload if not dlen else self._view[hlen : hlen + dlen].tobytes() + payload[dlen:]
        try:
            protected = sender.protect(hdr, body, seq)
        except SrtpError:
            self.counters["protect_failed"] += 1
            return
        if not self._nack:
            pass
        elif dlen:
            # The ring keeps this viewer's rewritten descriptor after its header and a view of the source's
            # payload past the descriptor (shared with every viewer), not the private copy SRTP needed:
            # OutboundStream.retransmission splits them again at the header length.
            self.ring.put(seq, hdr + body[:dlen], memoryview(payload)[dlen:], now)
        else:
            self.ring.put(seq, hdr, body, now)
        ctx.outbox.append((protected, addr))
        if tseq >= 0:
            ctx.history.on_sent(tseq, len(protected), now)
        self.packets += 1
        self.octets += size
        self.last_ts = ts
        capture = pkt.capture  # the source's clock for ts when it has one (MediaPacket.capture)
        self.last_ts_at = capture if capture else now

    def _skip(self, seq: int) -> None:
        """A packet of the selected source is not forwarded: close its hole in our sequence
        space, unless it arrived late (older than one already mapped: that slot stays a hole,
        as for a packet lost on the way, since later numbers are already out)."""
        if seq == self.rewriter.last_seq:
            self.skipper.drop(seq)

    # ---- simulcast layers --------------------------------------------------------------------

    def _on_new_source(self) -> None:
        # A new source (Switch/Subscribe, or the same track republished): a fresh rewriter key
        # makes the next packet a switch point with continuous numbers, and video waits for a
        # key frame of the new source.
        self._channel = self.local.channel
        self.new_source()

    def new_source(self) -> None:
        self._generation += 1
        # Replay numbers are per source (a publisher's key-frame cache, core/tracks.py): one this
        # viewer started on says nothing about the next source's.
        self._replay = 0
        if self.video:
            self.current = -1
            if self.pending < 0:
                self.pending = self._best_layer() if self._win_start is not None else 0

    def _roll(self, now: float) -> None:
        if self._win_start is None:
            self._win_start = now
            self._win_end = now + RATE_WINDOW
            return
        elapsed = max(now - self._win_start, 1e-3)
        scale = 8.0 / elapsed
        for i in range(MAX_LAYERS):
            self._rates[i] = self._bytes[i] * scale
            self._bytes[i] = 0
        tb = self._tbytes
        for i in range(MAX_TEMPORAL + 1):
            self._trates[i] = tb[i] * scale
            tb[i] = 0
        self._win_start = now
        self._win_end = now + RATE_WINDOW
        self.reselect(now)

    @property
    def layer_rates(self) -> list[float]:
        """Bits per second of each incoming layer over the last complete window: what a
        viewer of that layer costs. For VP9 SVC a layer needs every layer below it, so the
        rates are cumulative."""
        if self._svc:
            total = 0.0
            out = []
            for r in self._rates:
                total += r
                out.append(total if r > 0 else 0.0)
            return out
        return list(self._rates)

    @property
    def temporal_rates(self) -> list[float]:
        """Bits per second of the forwarded spatial layer with temporal layers 0..t (index t),
        over the last window, up to the highest TID seen; empty without temporal layers."""
        top = max((i for i, r in enumerate(self._trates) if r > 0), default=0)
        if top == 0:
            return []
        total = 0.0
        out = []
        for r in self._trates[: top + 1]:
            total += r
            out.append(total)
        return out

    @property
    def source_bps(self) -> float:
        """Bits per second of every incoming layer together."""
        return sum(self._rates)

    @property
    def spatial_layer(self) -> int:
        """The spatial layer being forwarded (simulcast stream or VP9 SVC layer)."""
        return max(self.vp9.current if self._svc else self.current, 0)

    @property
    def temporal_layer(self) -> int:
        """The highest temporal layer being forwarded (0 when the stream has none)."""
        if self._svc:
            return max(min(self.vp9.t_current, MAX_TEMPORAL), 0)
        return max(min(self.vp8.current, self.vp8.tid_seen), 0)

    def _best_layer(self) -> int:
        available = [i for i, r in enumerate(self._rates) if r > 0]
        if not available:
            return max(self.current, 0)
        cap = self.max_spatial
        allowed = [i for i in available if cap is None or i <= cap] or [min(available)]
        estimate = self.ctx.estimate
        if estimate is None:
            return max(allowed)
        # Headroom to move to a layer, none to stay on the current one: a sender's layers
        # grow as its own estimate ramps up, which must not bounce a viewer off a layer the
        # estimate still covers.
        low = self._lowest(allowed)
        rates = self._rates
        fits = [i for i in allowed if i >= low and rates[i] * (1.0 if i == self.current else HEADROOM) <= estimate]
        return max(fits) if fits else low

    def _lowest(self, allowed: list[int]) -> int:
        """The lowest layer of ``allowed`` the estimate may bring this viewer down to."""
        floor = self.min_spatial
        if floor is None:
            return min(allowed)
        return min((i for i in allowed if i >= floor), default=max(allowed))

    def _next_layer_up(self, layer: int) -> int | None:
        cap = self.max_spatial if self.probe_cap == _CAP else self.probe_cap
        for i in range(layer + 1, MAX_LAYERS):
            if cap is not None and i > cap:
                return None
            if self._rates[i] > 0:
                return i
        return None

    def reselect(self, now: float) -> None:
        """Choose the layer for the current estimate; a change waits for its key frame.

        When the estimate is our own (transport-cc feedback) and the next layer up does not
        fit, ask the estimator to probe for it: the estimate is capped near the rate a viewer
        already gets, so without trying it a viewer on a low layer would never move up.

        ``probe_cap`` lets the probe aim above ``max_spatial``: an SDK session caps
        ``max_spatial`` at what its share of the estimate carries (core.bitrate) and sets
        ``probe_cap`` to the receiver's configured limit, so the estimate can grow past the
        cap, and the next allocation raises the cap.
        """
        if not self.video:
            return
        if self._svc:
            self._svc_reselect(now)
            return
        target = self._best_layer()
        ctx = self.ctx
        if ctx.estimate is not None and ctx.own_estimate and self.pending < 0 and target == self.current:
            up = self._next_layer_up(target)
            if up is not None and ctx.bwe.probe(self._rates[up] * HEADROOM, now):
                ctx.estimate = ctx.bwe.estimate
                target = self._best_layer()
        if target == self.current:
            self.pending = -1
            return
        if target != self.pending or now >= self._kf_requested + KEYFRAME_RETRY:
            self.pending = target
            self._kf_requested = now
            self._endpoint.control(now, RequestKeyframe(self.local.name))

    def _svc_reselect(self, now: float) -> None:
        """VP9 SVC: the highest spatial layer whose cumulative rate fits the estimate (and the
        cap); moving up needs a picture whose upper layer is not inter-picture predicted,
        in practice a key frame with most encoders, so one is requested while it waits."""
        rates = self.layer_rates
        available = [i for i, r in enumerate(rates) if r > 0]
        cap = self.max_spatial
        vp9 = self.vp9
        if not available:
            vp9.target = MAX_LAYERS - 1 if cap is None else cap
            return
        allowed = [i for i in available if cap is None or i <= cap] or [min(available)]
        ctx = self.ctx

        def choose() -> int:
            estimate = ctx.estimate
            if estimate is None:
                return max(allowed)
            low = self._lowest(allowed)
            fits = [i for i in allowed if i >= low and rates[i] * (1.0 if i == vp9.current else HEADROOM) <= estimate]
            return max(fits) if fits else low

        target = choose()
        if ctx.estimate is not None and ctx.own_estimate and target == vp9.current:
            # As for simulcast (reselect): probe for the next allowed layer up, else our own
            # estimate stays near what this viewer already gets and it never moves up.
            pcap = cap if self.probe_cap == _CAP else self.probe_cap
            up = next((i for i in available if i > target and (pcap is None or i <= pcap)), None)
            if up is not None and ctx.bwe.probe(rates[up] * HEADROOM, now):
                ctx.estimate = ctx.bwe.estimate
                target = choose()
        vp9.target = target
        if target > vp9.current >= 0 and now >= self._kf_requested + KEYFRAME_RETRY:
            self._kf_requested = now
            self._endpoint.control(now, RequestKeyframe(self.local.name))

    def set_max_spatial(self, now: float, layer: int | None) -> None:
        self.max_spatial = layer
        if not self._svc:
            self.vp9.target = MAX_LAYERS - 1 if layer is None else layer
        self.reselect(now)

    def set_max_temporal(self, now: float, layer: int | None) -> None:
        """Cap the temporal layer forwarded (VP8 TID, VP9 TID); None lifts the cap. Lower
        layers take effect at the next frame, higher ones at the next switching point."""
        target = MAX_TEMPORAL if layer is None else max(layer, 0)
        self.vp8.set_target(target)
        self.vp9.t_target = target

    # ---- retransmission and reports ------------------------------------------------------

    def on_nack(self, now: float, lost: list[int]) -> None:
        """Answer a viewer's generic NACK (RFC 4585 s6.2.1) from the ring: RTX (RFC 4588 s4)
        when negotiated, else the same packet again."""
        ctx = self.ctx
        srtp, addr = ctx.srtp, ctx.addr
        if srtp is None or addr is None:
            return
        for seq in lost:
            packet = self.retransmission(seq, now)
            if packet is None:
                self.counters["nack_misses"] += 1
                continue
            self.counters["nack_hits"] += 1
            ssrc, out_seq, hdr, body = packet
            sender = srtp.rtp_sender(ssrc)
            tseq = -1
            if self.twcc_pos >= 0:
                # Every packet on the wire gets its own transport-wide number.
                tseq = ctx.twcc_seq
                ctx.twcc_seq = (tseq + 1) & 0xFFFF
                _U16.pack_into(hdr, self.twcc_pos, tseq)
            try:
                protected = sender.protect(bytes(hdr), body, out_seq)
            except SrtpError:
                self.counters["protect_failed"] += 1
                continue
            ctx.outbox.append((protected, addr))
            if tseq >= 0:
                ctx.history.on_sent(tseq, len(protected), now)
