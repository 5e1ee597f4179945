"""An in-memory WebRTC network for WebRtcPeer tests: a server (MediaWorker + in-process
registry/hub + SharedPortDemux + one outbox) and test clients built from the same sans-IO
primitives a browser-side stack would need (controlling ICE client, DTLS client, SRTP).

Everything runs on a virtual clock; datagrams are delivered synchronously by :meth:`Net.flush`.
"""

from __future__ import annotations

import itertools
from collections import deque
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.ids import SessionId
from trackmesh.core.worker import MediaWorker
from trackmesh.net import Address
from trackmesh.rtp.packet import RtpHeader, build_rtp_packet
from trackmesh.rtp.rtcp import RtcpPacket, parse_rtcp
from trackmesh.rtp.srtp import SrtpSession
from trackmesh.transports.webrtc.answer import AnswerPolicy, AnswerResult, LocalParams, answer_offer
from trackmesh.transports.webrtc.demux import PacketKind, SharedPortDemux, classify, is_rtcp
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.dtls.endpoint import DtlsApplicationData, DtlsConnected, DtlsEndpoint
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls
from trackmesh.transports.webrtc.events import Connected, Disconnected, IceSelected, Outbox, PeerEvent
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent, IceLiteClient, generate_credentials
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.whip_whep.session import PeerMode, WhipWhepSession, default_remote_names

P = TypeVar("P")
NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
SERVER_ADDR: Address = ("192.0.2.1", 4443)
_CERTS: list[DtlsCertificate] = []


def certificate() -> DtlsCertificate:
    """Certificates are slow-ish to make; a few are enough for every test."""
    if len(_CERTS) < 4:
        _CERTS.append(DtlsCertificate.generate(NOT_BEFORE))
        return _CERTS[-1]
    _CERTS.append(_CERTS.pop(0))
    return _CERTS[-1]


# Client-side extension ids (what a Chromium offer uses).
EXT_AUDIO_LEVEL, EXT_ABS, EXT_TWCC, EXT_MID, EXT_RID, EXT_RRID = 1, 2, 3, 4, 10, 11
VP8_KEY = b"\x10\x00\x9d\x01\x2a"  # S=1 PID=0, frame header P=0 (RFC 7741 s4.3)
VP8_DELTA = b"\x10\x01"  # S=1 PID=0, P=1: an inter frame


def _transport(ufrag: str, pwd: str, fingerprint: str) -> str:
    return (
        "c=IN IP4 0.0.0.0\r\n"
        f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"
    )


def make_offer(
    role: Literal["publish", "view"],
    ufrag: str,
    pwd: str,
    fingerprint: str,
    *,
    ssrcs: tuple[int, int, int] = (0, 0, 0),
    simulcast: bool = False,
    audio_pt: int = 111,
    video_pt: int = 96,
    rtx: bool = True,
) -> str:
    """A minimal BUNDLE offer: mid 0 audio (Opus), mid 1 video (VP8 + RTX).

    ``ssrcs`` = (audio, video, video rtx) announced with a=ssrc (publish, no simulcast)."""
    direction = "sendonly" if role == "publish" else "recvonly"
    lines = [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        f"m=audio 9 UDP/TLS/RTP/SAVPF {audio_pt}",
    ]
    text = "\r\n".join(lines) + "\r\n" + _transport(ufrag, pwd, fingerprint)
    text += (
        f"a=mid:0\r\na={direction}\r\n"
        f"a=extmap:{EXT_AUDIO_LEVEL} urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
        f"a=extmap:{EXT_ABS} http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
        f"a=extmap:{EXT_TWCC} http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
        f"a=extmap:{EXT_MID} urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        f"a=rtpmap:{audio_pt} opus/48000/2\r\na=rtcp-fb:{audio_pt} transport-cc\r\n"
    )
    if role == "publish" and not simulcast and ssrcs[0]:
        text += f"a=ssrc:{ssrcs[0]} cname:test\r\n"
    rtx_pt = video_pt + 1
    formats = f"{video_pt} {rtx_pt}" if rtx else f"{video_pt}"
    text += f"m=video 9 UDP/TLS/RTP/SAVPF {formats}\r\n" + _transport(ufrag, pwd, fingerprint)
    text += (
        f"a=mid:1\r\na={direction}\r\n"
        f"a=extmap:{EXT_ABS} http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
        f"a=extmap:{EXT_TWCC} http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
        f"a=extmap:{EXT_MID} urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        f"a=extmap:{EXT_RID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        f"a=extmap:{EXT_RRID} urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n"
        f"a=rtpmap:{video_pt} VP8/90000\r\n"
    )
    for fb in ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"):
        text += f"a=rtcp-fb:{video_pt} {fb}\r\n"
    if rtx:
        text += f"a=rtpmap:{rtx_pt} rtx/90000\r\na=fmtp:{rtx_pt} apt={video_pt}\r\n"
    if role == "publish" and simulcast:
        text += "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
    elif role == "publish" and ssrcs[1]:
        text += f"a=ssrc-group:FID {ssrcs[1]} {ssrcs[2]}\r\n"
        text += f"a=ssrc:{ssrcs[1]} cname:test\r\na=ssrc:{ssrcs[2]} cname:test\r\n"
    return text


class Client:
    """A WebRTC client: controlling ICE, DTLS client, SRTP; records what it receives."""

    def __init__(self, net: Net, addr: Address, offer_role: Literal["publish", "view"], **offer_kw: Any) -> None:
        self.net = net
        self.addr = addr
        self.cert = certificate()
        self.creds = generate_credentials()
        self.offer = make_offer(
            offer_role,
            self.creds.ufrag,
            self.creds.pwd,
            self.cert.fingerprint_sha256(),
            **offer_kw,
        )
        self.ice: IceLiteClient | None = None
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpSession | None = None
        self.answer: AnswerResult | None = None
        self.out: deque[bytes] = deque()
        self.rtp: list[tuple[RtpHeader, bytes]] = []
        self.rtcp: list[RtcpPacket] = []
        self.twcc_seq = 0
        self.ice_ok = 0
        self.lose: set[tuple[int, int]] = set()  # (ssrc, seq) the wire drops once on the way in
        self.app_data: list[bytes] = []  # DTLS application records from the server (SCTP, for a data channel)

    def start(self, answer: AnswerResult, server_fingerprint: str) -> None:
        self.answer = answer
        local = answer.answer.media[0]
        assert local.ice_ufrag is not None and local.ice_pwd is not None
        self.ice = IceLiteClient(remote_ufrag=local.ice_ufrag, remote_pwd=local.ice_pwd, local=self.creds)
        self.dtls = DtlsEndpoint("client", self.cert, [("sha-256", server_fingerprint)])
        self.send_check()

    def send_check(self) -> None:
        assert self.ice is not None
        self.out.append(self.ice.create_check(self.net.now))

    def receive(self, data: bytes) -> None:
        kind = classify(data[0])
        if kind is PacketKind.STUN:
            assert self.ice is not None
            result = self.ice.handle_response(self.net.now, data)
            if result is not None and result.ok:
                self.ice_ok += 1
                assert self.dtls is not None
                self.dtls.start(self.net.now)
                self._flush_dtls()
        elif kind is PacketKind.DTLS:
            assert self.dtls is not None
            self.dtls.handle_datagram(self.net.now, data)
            self._flush_dtls()
        elif kind is PacketKind.RTP:
            assert self.srtp is not None
            if is_rtcp(data):
                self.rtcp.extend(parse_rtcp(self.srtp.unprotect_rtcp(data)))
            else:
                key = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big"))
                if key in self.lose:
                    self.lose.discard(key)
                    return
                plain = self.srtp.unprotect_rtp(data)
                self.rtp.append((RtpHeader.parse(plain), plain))

    def _flush_dtls(self) -> None:
        assert self.dtls is not None
        while (d := self.dtls.poll_transmit()) is not None:
            self.out.append(d)
        while (ev := self.dtls.poll_event()) is not None:
            if isinstance(ev, DtlsConnected):
                self.srtp = srtp_sessions_from_dtls(ev, "client")
            elif isinstance(ev, DtlsApplicationData):
                self.app_data.append(ev.data)

    # ---- sending media -------------------------------------------------------------------

    def send_rtp(
        self,
        pt: int,
        seq: int,
        ts: int,
        ssrc: int,
        payload: bytes,
        *,
        mid: str | None = None,
        rid: str | None = None,
        rrid: str | None = None,
        marker: bool = False,
        level: int | None = None,
    ) -> None:
        ext: dict[int, bytes] = {}
        if mid is not None:
            ext[EXT_MID] = mid.encode()
        if rid is not None:
            ext[EXT_RID] = rid.encode()
        if rrid is not None:
            ext[EXT_RRID] = rrid.encode()
        if level is not None:
            ext[EXT_AUDIO_LEVEL] = bytes((level,))
        ext[EXT_TWCC] = self.twcc_seq.to_bytes(2, "big")
        self.twcc_seq = (self.twcc_seq + 1) & 0xFFFF
        assert self.srtp is not None
        pkt = build_rtp_packet(pt, seq, ts, ssrc, payload, marker=marker, extensions=ext)
        self.out.append(self.srtp.protect_rtp(pkt))

    def send_rtcp(self, packet: bytes) -> None:
        assert self.srtp is not None
        self.out.append(self.srtp.protect_rtcp(packet))

    # ---- what arrived --------------------------------------------------------------------

    def media(self, ssrc: int) -> list[tuple[RtpHeader, bytes]]:
        return [(h, p) for h, p in self.rtp if h.ssrc == ssrc]

    def payloads(self, ssrc: int) -> list[bytes]:
        return [p[h.payload_offset : h.payload_offset + h.payload_length] for h, p in self.media(ssrc)]

    def rtcp_of(self, cls: type[P]) -> list[P]:
        return [p for p in self.rtcp if isinstance(p, cls)]

    def local_ssrc(self, mid: str) -> int:
        assert self.answer is not None
        m = self.answer.by_mid(mid)
        assert m is not None and m.local_ssrc is not None
        return m.local_ssrc


class Net:
    """The server side (one worker) and the wire between it and the clients."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wallclock = 1_800_000_000.0
        self.registry = LocalRegistry()
        self.hub = LocalChannelHub()
        self.worker = MediaWorker(1, 0, "secret", self.registry, self.hub)
        self.cert = certificate()
        self.outbox: Outbox = deque()
        self.demux: SharedPortDemux[SessionId] = SharedPortDemux()
        self.peers: dict[SessionId, WebRtcPeer] = {}
        self.rooms: dict[SessionId, WhipWhepSession] = {}  # the WHIP/WHEP policy of each peer that has one
        self.clients: dict[Address, Client] = {}
        self.events: list[tuple[SessionId, PeerEvent]] = []
        self.unrouted = 0
        self._addrs = itertools.count(1)

    def connect(
        self,
        mode: PeerMode | None,
        room: str = "room",
        peer: str | None = None,
        *,
        handshake: bool = True,
        release_dtls: bool | None = None,
        **offer_kw: object,
    ) -> tuple[Client, WebRtcPeer]:
        """``release_dtls``: free the server's OpenSSL connection once connected (default: as the
        worker does, for WHIP/WHEP peers)."""
        n = next(self._addrs)
        addr: Address = (f"198.51.100.{n}", 50000 + n)
        client = Client(self, addr, "publish" if mode is PeerMode.WHIP else "view", **offer_kw)
        creds = generate_credentials()
        params = LocalParams(creds.ufrag, creds.pwd, self.cert.fingerprint_sha256(), SERVER_ADDR[0], SERVER_ADDR[1])
        policy = AnswerPolicy.whip() if mode is PeerMode.WHIP else AnswerPolicy.whep()
        answer = answer_offer(client.offer, params, policy)
        endpoint = self.worker.create_endpoint()
        ice = IceLiteAgent(local=creds)
        webrtc_peer = WebRtcPeer(
            self.now,
            endpoint,
            answer,
            ice,
            self.cert,
            self.outbox,
            wallclock=self.wallclock + (self.now - 1000.0),
            remote_names=default_remote_names,
            release_dtls=mode is not None if release_dtls is None else release_dtls,
        )
        if mode is not None:  # None: a bare peer, joined and named by the test (as the SDK transport does)
            self.rooms[endpoint.session] = WhipWhepSession(self.now, webrtc_peer, mode, room, peer or f"peer{n}")
        self.peers[endpoint.session] = webrtc_peer
        self.demux.register(creds.ufrag, endpoint.session)
        self.clients[addr] = client
        self.after_input()
        client.start(answer, self.cert.fingerprint_sha256())
        if handshake:
            self.flush()
        return client, webrtc_peer

    def server_input(self, data: bytes, addr: Address) -> None:
        routed = self.demux.route(data, addr)
        if routed is None or routed[0] not in self.peers:
            self.unrouted += 1
            return
        key, kind, stun = routed
        self.peers[key].handle_datagram(self.now, data, addr, kind, stun)
        self.after_input()

    def after_input(self) -> None:
        """What the asyncio driver does after every input."""
        for _ in range(100):
            ready = self.worker.take_ready()
            pending = False
            for ep in ready:
                peer = self.peers.get(ep.session)
                room = self.rooms.get(ep.session)
                if room is not None:
                    room.on_core_events(self.now)
                elif peer is not None:
                    peer.on_core_events(self.now)
            for session, peer in list(self.peers.items()):
                while (ev := peer.poll_event()) is not None:
                    pending = True
                    self.events.append((session, ev))
                    if isinstance(ev, IceSelected):
                        self.demux.bind(ev.addr, session)
                    elif isinstance(ev, Connected) and session in self.rooms:
                        self.rooms[session].on_connected(self.now)
                    elif isinstance(ev, Disconnected):
                        self.worker.close_endpoint(self.now, session, ev.reason)
                        self.demux.unregister(session)
            if not ready and not pending:
                return
        raise AssertionError("events never settle")

    def flush(self) -> None:
        """Deliver datagrams both ways until the wire is quiet."""
        for _ in range(10_000):
            moved = False
            while self.outbox:
                data, addr = self.outbox.popleft()
                client = self.clients.get(addr)
                if client is not None:
                    client.receive(data)
                moved = True
            for client in list(self.clients.values()):
                while client.out:
                    self.server_input(client.out.popleft(), client.addr)
                    moved = True
            if not moved:
                return
        raise AssertionError("the wire never goes quiet")

    def advance(self, seconds: float, *, keepalive: bool = True) -> None:
        """Move the virtual clock, firing every peer's and the worker's deadlines in order.

        With ``keepalive`` every client sends an ICE consent check each second (RFC 7675)."""
        end = self.now + seconds
        next_keepalive = self.now + 1.0
        for _ in range(1_000_000):
            deadlines = [d for p in self.peers.values() if (d := p.next_deadline()) is not None]
            if (w := self.worker.next_deadline()) is not None:
                deadlines.append(w)
            if keepalive:
                deadlines.append(next_keepalive)
            due = [d for d in deadlines if d <= end]
            if not due:
                break
            self.now = max(self.now, min(due))
            if keepalive and self.now >= next_keepalive:
                next_keepalive = self.now + 1.0
                for client in self.clients.values():
                    if client.ice is not None and client.srtp is not None:
                        client.send_check()
            self.worker.handle_timeout(self.now)
            for peer in list(self.peers.values()):
                d = peer.next_deadline()
                if d is not None and d <= self.now:
                    peer.handle_timeout(self.now)
            self.after_input()
            self.flush()
        else:
            raise AssertionError("a deadline never clears")
        self.now = end

    def peer_events(self, peer: WebRtcPeer) -> list[PeerEvent]:
        return [ev for s, ev in self.events if s == peer.endpoint.session]
