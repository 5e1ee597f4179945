"""WebRtcPeer: one WebRTC client connection bound to one core Endpoint (sans-IO).

The peer owns the connection's ICE-lite agent, DTLS server (we answer ``a=setup:passive``,
RFC 8842 s5.2) and SRTP session, and maps the negotiated m-lines onto the core: every m-line
the client sends on is a RemoteTrack (:mod:`.media_in`), every m-line it receives on is
a LocalTrack whose sink writes this viewer's SRTP stream (:mod:`.media_out`). What the
connection means in a room (join, publish, what a viewer follows) is the layer above's:
:mod:`trackmesh.transports.whip_whep.session`, :mod:`trackmesh.transports.sdk.session`.

Driver contract (all calls synchronous, ``now`` monotonic seconds):

- every datagram routed to this peer -> :meth:`WebRtcPeer.handle_datagram`, with what the
  demultiplexer found (kind, parsed STUN message);
- at :meth:`WebRtcPeer.next_deadline` -> :meth:`WebRtcPeer.handle_timeout`;
- when the core marks the endpoint ready (``worker.take_ready()``) ->
  :meth:`WebRtcPeer.on_core_events`;
- after each input: send every datagram in the shared ``outbox``, and drain
  :meth:`WebRtcPeer.poll_event` (IceSelected -> demux.bind, Disconnected -> close the
  endpoint in the worker and unbind, Connected and ApplicationData -> the session above).

Datagrams go to one worker-wide outbox because a publisher's packet produces its viewers'
packets synchronously inside the publisher's ``handle_datagram``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from trackmesh.core.controls import RequestKeyframe
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import (
    BitrateTarget,
    Closed,
    EndpointEvent,
    KeyframeRequested,
    LocalTrackStateChanged,
)
from trackmesh.core.model import LocalTrackState
from trackmesh.errors import ProtocolError, RemoteProtocolError
from trackmesh.net import Address
from trackmesh.rtp.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    SenderReport,
    TransportCcFeedback,
    build_bye,
    parse_rtcp,
)
from trackmesh.rtp.srtp import DEFAULT_GCM_BACKEND, GcmBackend, SrtpError, SrtpSession
from trackmesh.transports.webrtc.answer import AnswerResult, NegotiatedMedia
from trackmesh.transports.webrtc.demux import PacketKind, is_rtcp
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.dtls.endpoint import (
    DtlsApplicationData,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsFailed,
    DtlsState,
)
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls
from trackmesh.transports.webrtc.events import (
    ApplicationData,
    Connected,
    Disconnected,
    IceSelected,
    Outbox,
    PeerEvent,
)
from trackmesh.transports.webrtc.ice.agent import IceConnected, IceDisconnected, IceLiteAgent, IceSelectedAddressChanged
from trackmesh.transports.webrtc.ice.stun import StunMessage
from trackmesh.transports.webrtc.media_in import InboundMedia, InboundTrack
from trackmesh.transports.webrtc.media_out import OutboundTrack, SendContext

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "TrackNamer", "WebRtcPeer", "receiving", "sending"]

#: ICE and DTLS must both complete this long after the session is created, or it is closed.
#: Without it a session whose client never sends a check holds its endpoint (and the client's
#: slot) forever: no other timer starts before the first check (issue 17).
DEFAULT_CONNECT_TIMEOUT = 15.0

#: RFC 3550 s6.2 allows reports this often for the few streams of one connection; browsers
#: send theirs about once a second, and A/V sync in the viewer needs fresh SRs.
SR_INTERVAL = 1.0

#: Names every m-line of an answer: mid -> track name (None: the m-line carries no track).
TrackNamer = Callable[[tuple[NegotiatedMedia, ...]], dict[str, str]]


def sending(m: NegotiatedMedia) -> bool:
    """We send media on this m-line (the client receives)."""
    return m.kind in ("audio", "video") and m.direction in ("sendonly", "sendrecv")


def receiving(m: NegotiatedMedia) -> bool:
    """We receive media on this m-line (the client sends)."""
    return m.kind in ("audio", "video") and m.direction in ("recvonly", "sendrecv")


class WebRtcPeer:
    """One client connection. See the module docstring for the driver's call sequence."""

    def __init__(
        self,
        now: float,
        endpoint: Endpoint,
        answer: AnswerResult,
        ice: IceLiteAgent,
        certificate: DtlsCertificate,
        outbox: Outbox,
        *,
        wallclock: float,
        remote_names: TrackNamer,
        gcm_backend: GcmBackend = DEFAULT_GCM_BACKEND,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        release_dtls: bool = False,
    ) -> None:
        """``release_dtls``: free OpenSSL's DTLS connection once the SRTP keys are exported (about
        90 KB per peer, issue 19); a data channel's SCTP packets then go on in records the DTLS
        endpoint protects itself (``dtls/records.py``, AEAD suites; with another suite it keeps
        OpenSSL)."""
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self.endpoint = endpoint
        self.answer = answer
        self.ice = ice
        self.outbox = outbox
        if ice.remote_ufrag is None:
            ice.set_remote_credentials(answer.transport.ice_ufrag, answer.transport.ice_pwd)
        self.dtls = DtlsEndpoint("server", certificate, [(f.algorithm, f.value) for f in answer.transport.fingerprints])
        self._gcm_backend: GcmBackend = gcm_backend
        self._release_dtls = release_dtls
        self.ctx = SendContext(outbox, wallclock - now)
        self.srtp: SrtpSession | None = None
        self.connected = False
        self.closed = False
        self.connect_timeout = connect_timeout
        self._connect_deadline: float | None = now + connect_timeout
        self._events: deque[PeerEvent] = deque()
        self._dtls_addr: Address | None = None
        self._next_sr: float | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "datagrams",
                "unknown_kind",
                "empty",
                "after_close",
                "media_before_dtls",
                "srtp_dropped",
                "srtcp_dropped",
                "rtp_malformed",
                "rtcp_malformed",
                "rtp_without_receiver",
                "rtcp_unknown_ssrc",
                "rtcp_not_sent",
                "dtls_application_data",
                "handler_errors",
                "keyframe_requests_received",  # PLIs and FIR entries from the viewer
                # What m-lines stopped by renegotiation had sent, so totals never go down.
                "removed_out_packets",
                "removed_out_octets",
                "removed_out_nacked",
                "removed_out_retransmitted",
            ),
            0,
        )
        self.bytes_received = 0  # every datagram routed to this peer (read by the node's metrics)

        media = tuple(m for m in answer.media if m.kind in ("audio", "video"))
        by_mid = {m.mid: m for m in media}
        # RTCP from us needs a sender SSRC (RFC 4585 s6.1): one we announced, else a fixed one.
        fallback = (endpoint.session * 2654435761) & 0xFFFFFFFF or 1
        self.sender_ssrc = next((m.local_ssrc for m in media if sending(m) and m.local_ssrc is not None), fallback)
        rnames = remote_names(media)
        inbound = [InboundTrack(m, rnames[m.mid]) for m in media if receiving(m) and m.mid in rnames]
        self.inbound = InboundMedia(inbound, by_mid, endpoint.remote_tracks, self.sender_ssrc, self.send_rtcp)
        self.outbound: dict[str, OutboundTrack] = {}  # by mid
        self._out_by_ssrc: dict[int, OutboundTrack] = {}

    # ---- configuration ---------------------------------------------------------------------

    def bind_local_track(self, now: float, mid: str, local_track: str) -> OutboundTrack:
        """Send LocalTrack ``local_track`` (already created) on sending m-line ``mid``."""
        media = self.answer.by_mid(mid)
        local = self.endpoint.local_track(local_track)
        if media is None or not sending(media) or local is None:
            raise ValueError(f"no sending m-line {mid!r} or no local track {local_track!r}")
        out = OutboundTrack(media, local, self.endpoint, self.ctx)
        self.outbound[mid] = out
        self._out_by_ssrc[out.ssrc] = out
        if out.rtx_ssrc is not None:
            self._out_by_ssrc[out.rtx_ssrc] = out
        if self.connected and self._next_sr is None:
            self._next_sr = now + SR_INTERVAL  # the first m-line we send on, added by renegotiation
        return out

    def update_media(
        self, now: float, answer: AnswerResult, removed: Iterable[str], added_remote: Mapping[str, str]
    ) -> None:
        """Renegotiation on the same transport (RFC 8829 s5.3.2 subsequent answer): adopt ``answer``, stop the
        m-lines ``removed`` (port 0 or inactive now) and receive on the m-lines ``added_remote`` (mid -> track
        name). New m-lines we send on are bound by the caller with :meth:`bind_local_track` afterwards. ICE,
        DTLS and SRTP are untouched; the SSRCs of m-lines that stay are the caller's to keep (``send_ssrcs``)."""
        self.answer = answer
        bye: list[int] = []
        for mid in removed:
            self.inbound.remove_track(mid)
            out = self.outbound.pop(mid, None)
            if out is None:
                continue
            c = self.counters
            c["removed_out_packets"] += out.packets
            c["removed_out_octets"] += out.octets
            c["removed_out_nacked"] += out.counters["nack_hits"] + out.counters["nack_misses"]
            c["removed_out_retransmitted"] += out.counters["nack_hits"]
            for ssrc in (out.ssrc, out.rtx_ssrc):
                if ssrc is not None and self._out_by_ssrc.get(ssrc) is out:
                    del self._out_by_ssrc[ssrc]
            bye.append(out.ssrc)
        if bye and self.srtp is not None:
            # RFC 3550 s6.6: the streams of a stopped m-line end with a BYE.
            self.send_rtcp(build_bye(bye, "m-line stopped"))
        for mid, name in added_remote.items():
            media = answer.by_mid(mid)
            if media is not None and receiving(media):
                self.inbound.add_track(InboundTrack(media, name), media)

    def set_max_spatial(self, now: float, layer: int | None, local_track: str | None = None) -> None:
        """Cap the simulcast layer sent on one (or every) video LocalTrack; None lifts it."""
        for out in self.outbound.values():
            if out.video and (local_track is None or out.local.name == local_track):
                out.set_max_spatial(now, layer)

    def set_max_temporal(self, now: float, layer: int | None, local_track: str | None = None) -> None:
        """Cap the temporal layer sent on one (or every) video LocalTrack; None lifts it."""
        for out in self.outbound.values():
            if out.video and (local_track is None or out.local.name == local_track):
                out.set_max_temporal(now, layer)

    # ---- inputs ---------------------------------------------------------------------------

    def handle_datagram(
        self, now: float, data: bytes, addr: Address, kind: PacketKind, stun: StunMessage | None = None
    ) -> None:
        """One UDP payload from ``addr`` as the port's demultiplexer sorted it (:data:`.demux.Routed`):
        its ``kind`` and, for STUN, the parsed message. Bad input is dropped and counted; only
        :class:`~trackmesh.errors.RemoteProtocolError` is caught here (h11's rule): any other
        exception is a bug of ours and leaves, so that tests see it (the driver survives it)."""
        self.counters["datagrams"] += 1
        self.bytes_received += len(data)
        if self.closed:
            self.counters["after_close"] += 1
            return
        if not data:
            self.counters["empty"] += 1
            return
        try:
            if kind is PacketKind.RTP:
                srtp = self.srtp
                if srtp is None:
                    self.counters["media_before_dtls"] += 1
                elif is_rtcp(data):
                    self._on_rtcp(now, srtp, data, addr)
                else:
                    self._on_rtp(now, srtp, data, addr)
            elif kind is PacketKind.STUN:
                response = self.ice.handle_stun(now, data, addr, stun)
                if response is not None:
                    self.outbox.append((response, addr))
                self._poll_ice(now)
            elif kind is PacketKind.DTLS:
                if self._dtls_addr is None:
                    self._dtls_addr = addr
                self.dtls.handle_datagram(now, data)
                self._poll_dtls(now, addr)
            else:
                self.counters["unknown_kind"] += 1
        except RemoteProtocolError:
            # The parsers below catch their own errors and count them by kind; this keeps one
            # malformed datagram that slipped past them from taking the peer down.
            self.counters["handler_errors"] += 1

    def _on_rtp(self, now: float, srtp: SrtpSession, data: bytes, addr: Address) -> None:
        # One parse: with GCM the header is parsed before decryption and read from ``data`` (``head``),
        # the payload from ``body`` (its decrypted copy); see SrtpSession.unprotect_rtp_parsed.
        try:
            h, head, body = srtp.unprotect_rtp_parsed(data)
        except SrtpError:
            self.counters["srtp_dropped"] += 1
            return
        except RemoteProtocolError:
            self.ice.note_activity(now, addr)  # authenticated, but its header is malformed
            self.counters["rtp_malformed"] += 1
            return
        # Authenticated media proves the pair alive (an ICE-lite agent sends no checks; libnice
        # keeps a pair up with unauthenticated indications only): see ice.py.
        self.ice.note_activity(now, addr)
        self.inbound.on_rtp(now, head, h, body)

    def _on_rtcp(self, now: float, srtp: SrtpSession, data: bytes, addr: Address) -> None:
        try:
            plain = srtp.unprotect_rtcp(data)
        except SrtpError:
            self.counters["srtcp_dropped"] += 1
            return
        self.ice.note_activity(now, addr)
        try:
            packets = parse_rtcp(plain)
        except RemoteProtocolError:
            self.counters["rtcp_malformed"] += 1
            return
        estimate_changed = False
        for p in packets:
            if isinstance(p, Nack):
                out = self._out_by_ssrc.get(p.media_ssrc)
                if out is None:
                    self.counters["rtcp_unknown_ssrc"] += 1
                else:
                    out.on_nack(now, p.lost)
            elif isinstance(p, Pli | Fir):
                ssrcs = [p.media_ssrc] if isinstance(p, Pli) else [e[0] for e in p.entries]
                self.counters["keyframe_requests_received"] += len(ssrcs)
                for ssrc in ssrcs:
                    out = self._out_by_ssrc.get(ssrc)
                    if out is None:
                        self.counters["rtcp_unknown_ssrc"] += 1
                    else:
                        # Merged and rate-limited with every other viewer's by the core.
                        self.endpoint.control(now, RequestKeyframe(out.local.name))
            elif isinstance(p, TransportCcFeedback):
                results = self.ctx.history.on_feedback(p)
                if results:
                    self.ctx.estimate = self.ctx.bwe.on_feedback(results, now)
                    self.ctx.own_estimate = True
                    # Mirrored for the session summary (debug log when the session closes).
                    self.counters["bwe_probes"] = self.ctx.bwe.probes
                    self.counters["bwe_probes_failed"] = self.ctx.bwe.probes_failed
                    self.counters["bwe_decreases_delay"] = self.ctx.bwe.decreases_delay
                    self.counters["bwe_decreases_loss"] = self.ctx.bwe.decreases_loss
                    estimate_changed = True
            elif isinstance(p, Remb):
                self.ctx.estimate = float(p.bitrate)
                self.ctx.own_estimate = False
                estimate_changed = True
            elif isinstance(p, SenderReport):
                self.inbound.on_sender_report(p, now)
            if isinstance(p, SenderReport | ReceiverReport):
                # Report blocks about the streams we send (RFC 3550 s6.4): loss, jitter, RTT.
                for block in p.reports:
                    out = self._out_by_ssrc.get(block.ssrc)
                    if out is not None and block.ssrc == out.ssrc:  # not its RTX stream's
                        out.reception.on_block(block, now)
        if estimate_changed:
            for out in self.outbound.values():
                out.reselect(now)

    def handle_timeout(self, now: float) -> None:
        if self.closed:
            return
        if self._connect_deadline is not None and now >= self._connect_deadline:
            done = "ICE nominated, DTLS not done" if self.ice.selected_address is not None else "no ICE nomination"
            self._disconnect(f"connect timeout: not connected within {self.connect_timeout:g} s ({done})")
            return
        self.ice.handle_timeout(now)
        self._poll_ice(now)
        if self.closed:
            return
        self.dtls.handle_timeout(now)
        self._poll_dtls(now)
        if not self.connected:
            return
        self.inbound.handle_timeout(now)
        if self._next_sr is not None and now >= self._next_sr:
            self._next_sr = now + SR_INTERVAL
            for out in self.outbound.values():
                sr = out.sender_report(now, self.ctx.ntp(now))
                if sr is not None:
                    self.send_rtcp(sr)

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        candidates = [self._connect_deadline, self.ice.next_deadline(), self.dtls.next_deadline()]
        if self.connected:
            candidates.append(self.inbound.next_deadline())
            candidates.append(self._next_sr)
        return min((d for d in candidates if d is not None), default=None)

    def media_deadline(self) -> float | None:
        """The only deadline an SRTP media packet (not RTCP) can bring forward: the inbound streams' (a new
        gap's NACK, TWCC feedback, the first receiver report). Everything else :meth:`next_deadline` takes
        is untouched by one (DTLS, the connect timer, sender reports) or only moves later (ICE consent,
        refreshed by authenticated media), so a driver reschedules the peer after such a packet with
        this alone instead of every timer of the connection (issue 19: timers were 12 % of a meeting's CPU)."""
        if self.closed or not self.connected:
            return None
        return self.inbound.next_deadline()

    def has_events(self) -> bool:
        return bool(self._events)

    def poll_event(self) -> PeerEvent | None:
        return self._events.popleft() if self._events else None

    def close(self, now: float, reason: str) -> None:
        """End the connection from our side: RTCP BYE (RFC 3550 s6.6), DTLS close_notify."""
        if self.closed:
            return
        if self.srtp is not None and self.outbound:
            self.send_rtcp(build_bye([o.ssrc for o in self.outbound.values()], reason[:255] or None))
        self._disconnect(reason)

    # ---- ICE, DTLS ------------------------------------------------------------------------

    def _poll_ice(self, now: float) -> None:
        while (ev := self.ice.poll_event()) is not None:
            if isinstance(ev, IceConnected | IceSelectedAddressChanged):
                self.ctx.addr = ev.addr
                self._events.append(IceSelected(ev.addr))
            elif isinstance(ev, IceDisconnected):
                self._disconnect(f"ice: {ev.reason}")

    def _poll_dtls(self, now: float, source: Address | None = None) -> None:
        addr = self.ctx.addr or self._dtls_addr
        while (datagram := self.dtls.poll_transmit()) is not None:
            if addr is not None:
                self.outbox.append((datagram, addr))
        while (ev := self.dtls.poll_event()) is not None:
            if isinstance(ev, DtlsConnected):
                try:
                    self.srtp = srtp_sessions_from_dtls(ev, "server", gcm_backend=self._gcm_backend)
                except SrtpError as exc:
                    self._disconnect(f"dtls: {exc}")
                    return
                self.ctx.srtp = self.srtp
                if self.ctx.addr is None:
                    self.ctx.addr = addr
                if self._release_dtls:
                    # DTLS carries only application data (SCTP), alerts and a lost final flight's
                    # resend from now on, which the endpoint handles without OpenSSL.
                    self.dtls.release_connection()
                self._on_connected(now)
            elif isinstance(ev, DtlsFailed):
                self._disconnect(f"dtls failed: {ev.reason}")
            elif isinstance(ev, DtlsClosed):
                self._disconnect("dtls closed")
            elif isinstance(ev, DtlsApplicationData):
                self.counters["dtls_application_data"] += 1
                if source is not None:
                    self.ice.note_activity(now, source)  # an authenticated record (SCTP): alive
                self._events.append(ApplicationData(ev.data))

    def _on_connected(self, now: float) -> None:
        self.connected = True
        self._connect_deadline = None
        self._events.append(Connected())
        if self.outbound:
            self._next_sr = now + SR_INTERVAL
        # Viewers attached before the keys existed could not receive the key frame their
        # attachment asked for: ask again now that they can.
        for out in self.outbound.values():
            if out.video and out.local.channel is not None:
                self.endpoint.control(now, RequestKeyframe(out.local.name))

    def _disconnect(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.ice.close()
        if self.dtls.state is DtlsState.CONNECTED:
            self.dtls.close()  # close_notify (RFC 5246 s7.2.1) goes out with this flush
            addr = self.ctx.addr or self._dtls_addr
            while (datagram := self.dtls.poll_transmit()) is not None:
                if addr is not None:
                    self.outbox.append((datagram, addr))
        else:
            self.dtls.close()
        self.ctx.srtp = None
        self.ctx.addr = None
        self.srtp = None
        self._events.append(Disconnected(reason))

    def send_application_data(self, data: bytes) -> bool:
        """Send one DTLS application record (an SCTP packet); False when DTLS is not up."""
        if self.closed or self.dtls.state is not DtlsState.CONNECTED:
            return False
        try:
            self.dtls.send_application_data(data)
        except ProtocolError:
            return False
        addr = self.ctx.addr or self._dtls_addr
        while (datagram := self.dtls.poll_transmit()) is not None:
            if addr is not None:
                self.outbox.append((datagram, addr))
        return True

    # ---- RTCP out --------------------------------------------------------------------------

    def send_rtcp(self, packet: bytes) -> None:
        """Protect and queue one RTCP packet; reduced-size RTCP (RFC 5506) is fine with
        rtcp-mux peers, so feedback is not padded into compounds."""
        srtp, addr = self.srtp, self.ctx.addr
        if srtp is None or addr is None:
            self.counters["rtcp_not_sent"] += 1
            return
        try:
            self.outbox.append((srtp.protect_rtcp(packet), addr))
        except SrtpError:
            self.counters["rtcp_not_sent"] += 1

    # ---- core events -----------------------------------------------------------------------

    def on_core_events(self, now: float) -> list[EndpointEvent]:
        """Drain the endpoint's events; returns those this peer does not act on itself (room
        events for an SDK transport to relay)."""
        rest: list[EndpointEvent] = []
        while (ev := self.endpoint.poll_event()) is not None:
            if isinstance(ev, KeyframeRequested):
                self.inbound.request_keyframe(ev.track)
            elif isinstance(ev, BitrateTarget):
                self.inbound.send_remb(ev.track, ev.bitrate_bps)
            elif isinstance(ev, LocalTrackStateChanged):
                if ev.state is LocalTrackState.ACTIVE:
                    for out in self.outbound.values():
                        if out.local.name == ev.local_track:
                            # The source (re)started: its numbering is new even on the same
                            # channel, so the rewriter must treat it as a switch.
                            out.new_source()
                rest.append(ev)
            elif isinstance(ev, Closed):
                self._disconnect(ev.reason)
                rest.append(ev)
            else:
                rest.append(ev)
        return rest
