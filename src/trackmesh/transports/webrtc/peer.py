"""WebRtcPeer: one WebRTC client connection bound to one core Endpoint (sans-IO).

The peer owns the connection's ICE-lite agent, DTLS server (we answer ``a=setup:passive``,
RFC 8842 s5.2) and SRTP session, and maps the negotiated m-lines onto the core: every m-line
the client sends on is a RemoteTrack (:mod:`.media_in`), every m-line it receives on is
a LocalTrack whose sink writes this viewer's SRTP stream (:mod:`.media_out`).

Driver contract (all calls synchronous, ``now`` monotonic seconds):

- every datagram routed to this peer -> :meth:`WebRtcPeer.handle_datagram`;
- at :meth:`WebRtcPeer.next_deadline` -> :meth:`WebRtcPeer.handle_timeout`;
- when the core marks the endpoint ready (``worker.take_ready()``) ->
  :meth:`WebRtcPeer.on_core_events`;
- after each input: send every datagram in the shared ``outbox``, and drain
  :meth:`WebRtcPeer.poll_event` (IceSelected -> demux.bind, Disconnected -> close the
  endpoint in the worker and unbind).

Datagrams go to one worker-wide outbox because a publisher's packet produces its viewers'
packets synchronously inside the publisher's ``handle_datagram``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from trackmesh.core.controls import CreateLocalTrack, Join, Publish, RequestKeyframe, Subscribe, Switch
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ControlError
from trackmesh.core.events import (
    BitrateTarget,
    Closed,
    EndpointEvent,
    KeyframeRequested,
    LocalTrackStateChanged,
    TrackStarted,
    TrackStopped,
)
from trackmesh.core.model import JoinOptions, LocalTrackState, TrackKind, TrackSource
from trackmesh.errors import LocalProtocolError, ProtocolError
from trackmesh.net import Address
from trackmesh.rtp.packet import RtpHeader
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
from trackmesh.rtp.srtp import GcmBackend, SrtpError, SrtpSession
from trackmesh.transports.webrtc.answer import AnswerResult, NegotiatedMedia
from trackmesh.transports.webrtc.demux import PacketKind, classify, is_rtcp
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
    Connected,
    Disconnected,
    IceSelected,
    Outbox,
    PeerEvent,
    PeerMode,
    SharedClock,
)
from trackmesh.transports.webrtc.ice.agent import IceConnected, IceDisconnected, IceLiteAgent, IceSelectedAddressChanged
from trackmesh.transports.webrtc.media_in import InboundMedia, InboundTrack
from trackmesh.transports.webrtc.media_out import OutboundTrack, SendContext

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "PeerSetupError",
    "TrackNamer",
    "WebRtcPeer",
    "default_local_names",
    "default_remote_names",
]

#: ICE and DTLS must both complete this long after the session is created, or it is closed.
#: Without it a session whose client never sends a check holds its endpoint (and the client's
#: slot) forever: no other timer starts before the first check (issue 17).
DEFAULT_CONNECT_TIMEOUT = 15.0

#: RFC 3550 s6.2 allows reports this often for the few streams of one connection; browsers
#: send theirs about once a second, and A/V sync in the viewer needs fresh SRs.
SR_INTERVAL = 1.0

#: Names every m-line of an answer: mid -> track name (None: the m-line carries no track).
TrackNamer = Callable[[tuple[NegotiatedMedia, ...]], dict[str, str]]


def _sending(m: NegotiatedMedia) -> bool:
    return m.kind in ("audio", "video") and m.direction in ("sendonly", "sendrecv")


def _receiving(m: NegotiatedMedia) -> bool:
    return m.kind in ("audio", "video") and m.direction in ("recvonly", "sendrecv")


def default_remote_names(media: tuple[NegotiatedMedia, ...]) -> dict[str, str]:
    """WHIP naming (atm0s): the first audio m-line is "audio_main", the first video one
    "video_main"; any further one is "<kind>_<mid>"."""
    names: dict[str, str] = {}
    seen: set[str] = set()
    for m in media:
        if _receiving(m):
            names[m.mid] = f"{m.kind}_main" if m.kind not in seen else f"{m.kind}_{m.mid}"
            seen.add(m.kind)
    return names


def default_local_names(media: tuple[NegotiatedMedia, ...]) -> dict[str, str]:
    """WHEP naming: "audio_0", "video_0", then "audio_1"... in m-line order."""
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for m in media:
        if _sending(m):
            n = counts.get(m.kind, 0)
            counts[m.kind] = n + 1
            names[m.mid] = f"{m.kind}_{n}"
    return names


class PeerSetupError(ProtocolError):
    """The core refused a control the peer needs to set itself up (bad room/peer name...)."""

    def __init__(self, error: ControlError) -> None:
        super().__init__(error.message)
        self.error = error


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
        mode: PeerMode,
        wallclock: float,
        clock: SharedClock | None = None,
        room: str | None = None,
        peer: str | None = None,
        remote_names: TrackNamer = default_remote_names,
        local_names: TrackNamer = default_local_names,
        gcm_backend: GcmBackend = "libsrtp",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self.endpoint = endpoint
        self.answer = answer
        self.mode = mode
        self.ice = ice
        self.outbox = outbox
        self.clock = clock if clock is not None else SharedClock(now)
        self.clock.advance(now)
        if ice.remote_ufrag is None:
            ice.set_remote_credentials(answer.transport.ice_ufrag, answer.transport.ice_pwd)
        self.dtls = DtlsEndpoint("server", certificate, [(f.algorithm, f.value) for f in answer.transport.fingerprints])
        self._gcm_backend: GcmBackend = gcm_backend
        self.ctx = SendContext(outbox, self.clock, wallclock - now)
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
            ),
            0,
        )

        media = tuple(m for m in answer.media if m.kind in ("audio", "video"))
        by_mid = {m.mid: m for m in media}
        sending = [m for m in media if _sending(m)]
        # RTCP from us needs a sender SSRC (RFC 4585 s6.1): one we announced, else a fixed one.
        fallback = (endpoint.session * 2654435761) & 0xFFFFFFFF or 1
        self.sender_ssrc = next((m.local_ssrc for m in sending if m.local_ssrc is not None), fallback)
        rnames = remote_names(media)
        inbound = [InboundTrack(m, rnames[m.mid]) for m in media if _receiving(m) and m.mid in rnames]
        self.inbound = InboundMedia(inbound, by_mid, endpoint.remote_tracks, self.sender_ssrc, self.send_rtcp)
        self.outbound: dict[str, OutboundTrack] = {}  # by mid
        self._out_by_ssrc: dict[int, OutboundTrack] = {}
        self._local_names = local_names(media)
        self._follow: list[tuple[TrackKind, str]] = []
        #: Receives each DTLS application record (SCTP packets, RFC 8261) as ``(now, data)``; the
        #: SDK transport sets it to feed its data channels. Without it records are only counted.
        self.on_application_data: Callable[[float, bytes], None] | None = None

        if mode is not PeerMode.SDK:
            if room is None or peer is None:
                raise ValueError("WHIP and WHEP peers need a room and a peer name")
            whep = mode is PeerMode.WHEP
            # A WHEP viewer is invisible in the room: it announces neither itself nor tracks.
            options = JoinOptions(publish_peer=False, publish_tracks=False) if whep else JoinOptions()
            self._check(endpoint.control(now, Join(room, peer, options)))
            if whep:
                for m in sending:
                    name = self._local_names.get(m.mid)
                    if name is None:
                        continue
                    kind = TrackKind(m.kind)
                    self._check(endpoint.control(now, CreateLocalTrack(name, kind)))
                    self.bind_local_track(m.mid, name)
                    self._follow.append((kind, name))
                self._follow_sources(now)

    @staticmethod
    def _check(err: ControlError | None) -> None:
        if err is not None:
            raise PeerSetupError(err)

    # ---- configuration ---------------------------------------------------------------------

    def bind_local_track(self, mid: str, local_track: str) -> OutboundTrack:
        """Send LocalTrack ``local_track`` (already created) on sending m-line ``mid``."""
        media = self.answer.by_mid(mid)
        local = self.endpoint.local_track(local_track)
        if media is None or not _sending(media) or local is None:
            raise ValueError(f"no sending m-line {mid!r} or no local track {local_track!r}")
        out = OutboundTrack(media, local, self.endpoint, self.ctx)
        self.outbound[mid] = out
        self._out_by_ssrc[out.ssrc] = out
        if out.rtx_ssrc is not None:
            self._out_by_ssrc[out.rtx_ssrc] = out
        if self.connected and self._next_sr is None:
            self._next_sr = self.clock.now + SR_INTERVAL  # the first m-line we send on, added by renegotiation
        return out

    def update_media(
        self, now: float, answer: AnswerResult, removed: Iterable[str], added_remote: Mapping[str, str]
    ) -> None:
        """Renegotiation on the same transport (RFC 8829 s5.3.2 subsequent answer): adopt ``answer``, stop the
        m-lines ``removed`` (port 0 or inactive now) and receive on the m-lines ``added_remote`` (mid -> track
        name). New m-lines we send on are bound by the caller with :meth:`bind_local_track` afterwards. ICE,
        DTLS and SRTP are untouched; the SSRCs of m-lines that stay are the caller's to keep (``send_ssrcs``)."""
        self.clock.advance(now)
        self.answer = answer
        bye: list[int] = []
        for mid in removed:
            self.inbound.remove_track(mid)
            out = self.outbound.pop(mid, None)
            if out is None:
                continue
            for ssrc in (out.ssrc, out.rtx_ssrc):
                if ssrc is not None and self._out_by_ssrc.get(ssrc) is out:
                    del self._out_by_ssrc[ssrc]
            bye.append(out.ssrc)
        if bye and self.srtp is not None:
            # RFC 3550 s6.6: the streams of a stopped m-line end with a BYE.
            self.send_rtcp(build_bye(bye, "m-line stopped"))
        for mid, name in added_remote.items():
            media = answer.by_mid(mid)
            if media is not None and _receiving(media):
                self.inbound.add_track(InboundTrack(media, name), media)

    def set_max_spatial(self, now: float, layer: int | None, local_track: str | None = None) -> None:
        """Cap the simulcast layer sent on one (or every) video LocalTrack; None lifts it."""
        self.clock.advance(now)
        for out in self.outbound.values():
            if out.video and (local_track is None or out.local.name == local_track):
                out.set_max_spatial(now, layer)

    def set_max_temporal(self, now: float, layer: int | None, local_track: str | None = None) -> None:
        """Cap the temporal layer sent on one (or every) video LocalTrack; None lifts it."""
        self.clock.advance(now)
        for out in self.outbound.values():
            if out.video and (local_track is None or out.local.name == local_track):
                out.set_max_temporal(now, layer)

    # ---- inputs ---------------------------------------------------------------------------

    def handle_datagram(self, now: float, data: bytes, addr: Address) -> None:
        """One UDP payload from ``addr``. Bad input is dropped and counted, never raised."""
        self.clock.advance(now)
        self.counters["datagrams"] += 1
        if self.closed:
            self.counters["after_close"] += 1
            return
        if not data:
            self.counters["empty"] += 1
            return
        try:
            kind = classify(data[0])
            if kind is PacketKind.RTP:
                srtp = self.srtp
                if srtp is None:
                    self.counters["media_before_dtls"] += 1
                elif is_rtcp(data):
                    self._on_rtcp(now, srtp, data, addr)
                else:
                    self._on_rtp(now, srtp, data, addr)
            elif kind is PacketKind.STUN:
                response = self.ice.handle_stun(now, data, addr)
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
        except (ValueError, IndexError, KeyError, struct.error):
            # Every parser raises ProtocolError (a ValueError) on bad input and is expected to
            # be caught below this point; this is the last line that keeps one malformed
            # datagram from taking down the worker's loop.
            self.counters["handler_errors"] += 1

    def _on_rtp(self, now: float, srtp: SrtpSession, data: bytes, addr: Address) -> None:
        try:
            plain = srtp.unprotect_rtp(data)
        except SrtpError:
            self.counters["srtp_dropped"] += 1
            return
        # Authenticated media proves the pair alive (an ICE-lite agent sends no checks; libnice
        # keeps a pair up with unauthenticated indications only): see ice.py.
        self.ice.note_activity(now, addr)
        try:
            h = RtpHeader.parse(plain)
        except ProtocolError:
            self.counters["rtp_malformed"] += 1
            return
        self.inbound.on_rtp(now, plain, h)

    def _on_rtcp(self, now: float, srtp: SrtpSession, data: bytes, addr: Address) -> None:
        try:
            plain = srtp.unprotect_rtcp(data)
        except SrtpError:
            self.counters["srtcp_dropped"] += 1
            return
        self.ice.note_activity(now, addr)
        try:
            packets = parse_rtcp(plain)
        except ProtocolError:
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
        self.clock.advance(now)
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
                sr = out.sender_report(now)
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

    def poll_event(self) -> PeerEvent | None:
        return self._events.popleft() if self._events else None

    def close(self, now: float, reason: str) -> None:
        """End the connection from our side: RTCP BYE (RFC 3550 s6.6), DTLS close_notify."""
        self.clock.advance(now)
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
                self._on_connected(now)
            elif isinstance(ev, DtlsFailed):
                self._disconnect(f"dtls failed: {ev.reason}")
            elif isinstance(ev, DtlsClosed):
                self._disconnect("dtls closed")
            elif isinstance(ev, DtlsApplicationData):
                self.counters["dtls_application_data"] += 1
                if source is not None:
                    self.ice.note_activity(now, source)  # an authenticated record (SCTP): alive
                if self.on_application_data is not None:
                    self.on_application_data(now, ev.data)

    def _on_connected(self, now: float) -> None:
        self.connected = True
        self._connect_deadline = None
        self._events.append(Connected())
        if self.outbound:
            self._next_sr = now + SR_INTERVAL
        if self.mode is PeerMode.WHIP:
            for track in self.inbound.by_mid.values():
                self.endpoint.control(now, Publish(track.name, TrackKind(track.kind)))
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
        except (ProtocolError, LocalProtocolError):
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
        self.clock.advance(now)
        rest: list[EndpointEvent] = []
        follow = False
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
                follow = True
                rest.append(ev)
            elif isinstance(ev, TrackStarted | TrackStopped):
                follow = True
                rest.append(ev)
            elif isinstance(ev, Closed):
                self._disconnect(ev.reason)
                rest.append(ev)
            else:
                rest.append(ev)
        if follow and self._follow and not self.endpoint.closed:
            self._follow_sources(now)
        return rest

    def _follow_sources(self, now: float) -> None:
        """WHEP auto-follow (atm0s): each LocalTrack follows the first live track of its kind
        in the room; when that stops, the next live one; with none, it waits (a republished
        track of the same name resumes through the channel by itself)."""
        tracks = self.endpoint.room_tracks()
        for kind, name in self._follow:
            local = self.endpoint.local_track(name)
            if local is None:
                continue
            live = [t for t in tracks if t.kind is kind]
            if not live:
                continue
            src = local.source
            if src is not None and any(t.peer == src.peer and t.track == src.track for t in live):
                continue
            first = TrackSource(live[0].peer, live[0].track)
            ctl = Subscribe(name, first) if local.channel is None else Switch(name, first)
            self.endpoint.control(now, ctl)
