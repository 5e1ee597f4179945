"""The load generator's WebRTC transport: one UDP socket, ICE, DTLS, SRTP; no decoding.

Built on trackmesh's own sans-IO pieces used from the *client* side:

- ICE: against an ICE-lite server (trackmesh) we are controlling and nominate with
  :class:`IceLiteClient` checks carrying USE-CANDIDATE. Against a full agent (Janus) we also
  answer the checks it sends us with :func:`stun.build_binding_success`, keyed with our own
  password; when Janus made the offer it is the controlling side and nominates.
- DTLS: :class:`DtlsEndpoint` as client (or server when the remote SDP says ``setup:active``),
  offering exactly one SRTP profile in ``use_srtp``.
- SRTP: :func:`srtp_sessions_from_dtls`.

Media sent and received is hashed (:func:`recording.payload_key`) and matched against the
shared send log by :class:`trackmesh.loadtest.stats.Meter`. A transport bound to a loopback
address (every run that starts its own server) sends only inside 127.0.0.0/8 (checked here, once per
remote address). Only ``trackmesh-bench --url`` binds elsewhere: the address the kernel routes
towards the deployment the user named, whose answers then name the media addresses to reach.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trackmesh.errors import ProtocolError
from trackmesh.rtp.srtp import SrtpProfile, SrtpSession
from trackmesh.sdp import model as sdplib
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.dtls.endpoint import DtlsApplicationData, DtlsConnected, DtlsEndpoint, DtlsFailed
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls
from trackmesh.transports.webrtc.ice import stun
from trackmesh.transports.webrtc.ice.agent import IceLiteClient, generate_credentials

if TYPE_CHECKING:
    from trackmesh.loadtest.headers import HeaderSink

__all__ = ["HeaderReceiver", "RemoteParams", "Transport", "check_loopback", "is_loopback"]

Address = tuple[str, int]
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Linux SO_TIMESTAMPNS (== SCM_TIMESTAMPNS, asm-generic/socket.h; not exported by Python): the
# kernel stamps each datagram with CLOCK_REALTIME when it is queued on the socket, so latency
# does not include the time the generator's own loop took to get to it.
SO_TIMESTAMPNS = 35
# Linux SO_RXQ_OVFL (asm-generic/socket.h): each datagram carries the socket's cumulative count of
# datagrams the kernel dropped because the receive buffer was full, i.e. loss caused by the
# generator falling behind, which must not be blamed on the server.
SO_RXQ_OVFL = 40
_TIMESPEC = struct.Struct("qq")
_U32 = struct.Struct("I")
_ANC_SIZE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)


def kernel_timestamp(ancdata: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return float(sec + nsec * 1e-9)
    return time.time()


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host) in _LOOPBACK


def check_loopback(host: str) -> None:
    """Refuse any destination outside 127.0.0.0/8 (network safety: the bench never leaves lo)."""
    if ipaddress.ip_address(host) not in _LOOPBACK:
        raise RuntimeError(f"refusing to send to {host}: the benchmark only talks to 127.0.0.0/8")


@dataclass
class RemoteParams:
    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[Address]
    ice_lite: bool
    pt_kind: dict[int, int]  # payload type -> recording.AUDIO / VIDEO
    mids: dict[str, str]  # mid -> "audio" / "video"

    @classmethod
    def from_sdp(cls, text: str, *, loopback_only: bool = True) -> RemoteParams:
        """``loopback_only``: keep only 127.x candidates; otherwise only the IPv4 ones outside 127/8
        (a transport bound to a routable address cannot reach the remote's loopback)."""
        sd = sdplib.parse(text)
        m0 = sd.media[0]
        ufrag = m0.ice_ufrag or sd.ice_ufrag
        pwd = m0.ice_pwd or sd.ice_pwd
        fps = m0.fingerprints or sd.fingerprints
        setup = m0.setup or sd.setup or "actpass"
        if not ufrag or not pwd or not fps:
            raise ValueError("remote SDP lacks ICE credentials or a fingerprint")
        cands: list[tuple[int, Address]] = []
        pt_kind: dict[int, int] = {}
        mids: dict[str, str] = {}
        for m in sd.media:
            for c in m.candidates:
                if c.transport.lower() == "udp" and c.component == 1 and _ipv4(c.address, loopback_only):
                    cands.append((c.priority, (c.address, c.port)))
            if m.mid is not None:
                mids[m.mid] = m.kind
            for r in m.rtpmaps:
                enc = r.encoding.lower()
                if enc == "opus":
                    pt_kind[r.payload_type] = 0
                elif enc == "vp8":
                    pt_kind[r.payload_type] = 1
        cands.sort(key=lambda pc: -pc[0])
        seen: list[Address] = []
        for _, a in cands:
            if a not in seen:
                seen.append(a)
        return cls(ufrag, pwd, [(f.algorithm, f.value) for f in fps], setup, seen, sd.ice_lite, pt_kind, mids)


def _ipv4(address: str, loopback: bool) -> bool:
    """An IPv4 literal on the wanted side of 127.0.0.0/8 (mDNS names and IPv6 are skipped)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.version == 4 and (ip in _LOOPBACK) == loopback


class Transport:
    """One WebRTC transport (BUNDLE, rtcp-mux) on its own non-blocking UDP socket."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        local_ip: str,
        profile: SrtpProfile,
        cert: DtlsCertificate,
        on_rtp: Callable[[bytes, float], None] | None = None,  # (plain RTP, kernel arrival time.time())
        *,
        rcvbuf: int = 1 << 20,
    ) -> None:
        #: Bound to loopback (every run that starts its own server): every destination is checked to be in
        #: 127.0.0.0/8. Otherwise ``--url`` chose ``local_ip`` as the route to the deployment it names.
        self.loopback_only = is_loopback(local_ip)
        self.loop = loop
        self.profile = profile
        self.cert = cert
        self.on_rtp = on_rtp
        self.creds = generate_credentials()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        self.sock.bind((local_ip, 0))
        self.sock.setblocking(False)
        self.local_addr: Address = self.sock.getsockname()
        self.remote: RemoteParams | None = None
        self.remote_addr: Address | None = None
        self.ice: IceLiteClient | None = None
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpSession | None = None
        self.connected: asyncio.Future[float] = loop.create_future()
        #: When ICE worked (our check answered, or the remote's nominating check came), ``time.monotonic()``;
        #: ``connected``'s result is when DTLS finished (join phases, loadtest/join_trace.py).
        self.ice_at: float | None = None
        #: DTLS application records (SCTP packets, RFC 8261) as ``(monotonic now, data)``: the SDK data channel.
        self.on_app_data: Callable[[float, bytes], None] | None = None
        #: Decrypted RTCP from the remote as ``(plain, monotonic now)`` (a publisher answering PLI/FIR);
        #: None: RTCP is counted and dropped unread.
        self.on_rtcp: Callable[[bytes, float], None] | None = None
        self.closed = False
        self.counters = dict.fromkeys(
            ("rx", "stun_in", "stun_answered", "dtls_in", "dtls_early_resend", "rtcp_in", "srtp_errors", "send_errors",
             "unknown", "rx_dropped", "srtcp_errors"), 0
        )
        self._controlling = False
        self._timer: asyncio.TimerHandle | None = None
        self._check_until = 0.0
        #: Header-only subscriber (headers.py): once SRTP is up, its datagrams are read by ``_header_rx`` and
        #: RTP goes to ``_header_sink`` undecrypted.
        self._header_rx: HeaderReceiver | None = None
        self._header_sink: HeaderSink | None = None
        self._header_mode = False
        loop.add_reader(self.sock.fileno(), self._readable)

    def count_headers_only(self, receiver: HeaderReceiver, sink: HeaderSink) -> None:
        """Never decrypt RTP: once DTLS is up, count it from its clear header in ``sink`` (a header-only subscriber,
        headers.py), reading this socket through ``receiver``. ICE, DTLS and RTCP are handled as before."""
        self._header_rx = receiver
        self._header_sink = sink

    def switch_to_headers(self) -> None:
        """Hand the socket to the header receiver (done when DTLS is up; bench/generator_receive.py calls it
        on a transport whose SRTP it set itself)."""
        if self._header_rx is None or self._header_mode or self.closed:
            return
        self._header_mode = True
        self.loop.remove_reader(self.sock.fileno())
        self._header_rx.add(self)

    # -- SDP -------------------------------------------------------------------------------

    def transport_lines(self, setup: str, *, candidate: bool, lite: bool = False) -> str:
        lines = [
            f"a=ice-ufrag:{self.creds.ufrag}",
            f"a=ice-pwd:{self.creds.pwd}",
            f"a=fingerprint:sha-256 {self.cert.fingerprint_sha256()}",
            f"a=setup:{setup}",
            "a=rtcp-mux",
        ]
        if candidate:
            host, port = self.local_addr
            lines.append(f"a=candidate:1 1 udp 2130706431 {host} {port} typ host")
            lines.append("a=end-of-candidates")
        return "\r\n".join(lines) + "\r\n"

    # -- connection --------------------------------------------------------------------------

    def start(self, remote_sdp: str, *, controlling: bool) -> None:
        """Begin ICE (and DTLS once a path works) with the peer described by ``remote_sdp``."""
        self.remote = rp = RemoteParams.from_sdp(remote_sdp, loopback_only=self.loopback_only)
        if not rp.candidates:
            wanted = "127.x" if self.loopback_only else "IPv4 (outside 127/8)"
            raise RuntimeError(f"remote SDP has no {wanted} UDP candidate")
        if self.loopback_only:
            for host, _ in rp.candidates:
                check_loopback(host)
        self.remote_addr = rp.candidates[0]
        role: Literal["client", "server"] = "server" if rp.setup == "active" else "client"
        self.dtls = DtlsEndpoint(role, self.cert, rp.fingerprints, [self.profile])
        self._controlling = controlling
        if controlling:
            self.ice = IceLiteClient(remote_ufrag=rp.ufrag, remote_pwd=rp.pwd, local=self.creds)
            self._check_until = time.monotonic() + 10.0
            self._send_check()
        self._arm(0.05)

    def _send_check(self) -> None:
        assert self.ice is not None and self.remote_addr is not None
        self._sendto(self.ice.create_check(time.monotonic(), use_candidate=True), self.remote_addr)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Retransmit checks until connected (bounded), DTLS timers, then consent every 2.5 s."""
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        if self.dtls is not None:
            deadline = self.dtls.next_deadline()
            if deadline is not None and now >= deadline:
                self.dtls.handle_timeout(now)
                self._flush_dtls()
        if self.ice is not None:
            self.ice.handle_timeout(now)
            if not self.connected.done():
                if now < self._check_until and (self.dtls is None or self.dtls.state.value == "new"):
                    self._send_check()
            else:
                self._send_check()  # consent freshness (RFC 7675)
        if self.closed:
            return
        delay = 2.5 if self.connected.done() else 0.1
        if self.dtls is not None and (d := self.dtls.next_deadline()) is not None:
            delay = min(delay, max(0.01, d - now))
        self._arm(delay)

    def _sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.counters["send_errors"] += 1

    def send_srtp(self, plain_rtp: bytes) -> None:
        if self.srtp is None or self.remote_addr is None:
            return
        try:
            self.sock.sendto(self.srtp.protect_rtp(plain_rtp), self.remote_addr)
        except OSError:
            self.counters["send_errors"] += 1

    def send_srtcp(self, plain_rtcp: bytes) -> None:
        if self.srtp is None or self.remote_addr is None:
            return
        try:
            self.sock.sendto(self.srtp.protect_rtcp(plain_rtcp), self.remote_addr)
        except OSError:
            self.counters["send_errors"] += 1

    # -- input -------------------------------------------------------------------------------

    def _readable(self) -> None:
        recv = self.sock.recvmsg
        on_rtp = self.on_rtp
        srtp = self.srtp
        counters = self.counters
        for _ in range(256):
            try:
                data, anc, _flags, addr = recv(2048, _ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = time.monotonic()
            counters["rx"] += 1
            b0 = data[0]
            if 128 <= b0 <= 191:
                if srtp is None:
                    srtp = self.srtp
                    if srtp is None:
                        counters["unknown"] += 1
                        continue
                if 192 <= data[1] <= 223:
                    counters["rtcp_in"] += 1
                    on_rtcp = self.on_rtcp
                    if on_rtcp is not None:  # a publisher: PLI/FIR ask it for a key frame
                        try:
                            on_rtcp(srtp.unprotect_rtcp(data), now)
                        except ProtocolError:
                            counters["srtcp_errors"] += 1
                    continue  # otherwise RTCP from the server (SR, PLI, REMB) is not measured
                try:
                    plain = srtp.unprotect_rtp(data)
                except ProtocolError:
                    counters["srtp_errors"] += 1
                    continue
                if len(anc) > 1:
                    self._overflow(anc)
                if on_rtp is not None:
                    on_rtp(plain, kernel_timestamp(anc))
            else:
                self._datagram(data, addr, now)
                if self._header_mode:
                    return  # DTLS just came up: the header receiver reads this socket from now on

    def _datagram(self, data: bytes, addr: Address, now: float) -> None:
        """STUN, DTLS or anything else (not SRTP/SRTCP)."""
        b0 = data[0]
        if b0 <= 3:
            self.counters["stun_in"] += 1
            self._on_stun(data, addr, now)
        elif 20 <= b0 <= 63:
            self.counters["dtls_in"] += 1
            if self.dtls is not None:
                self.dtls.handle_datagram(now, data)
                self._flush_dtls()
        else:
            self.counters["unknown"] += 1

    def other_datagram(self, buf: bytearray, n: int) -> None:
        """Header-only mode: a datagram in the header receiver's ``buf`` that is not SRTP: SRTCP as ``_readable``
        does (counted, decrypted only for ``on_rtcp``), STUN and DTLS as usual."""
        counters = self.counters
        if 128 <= buf[0] <= 191 and n >= 8:
            counters["rtcp_in"] += 1
            on_rtcp = self.on_rtcp
            if on_rtcp is not None and self.srtp is not None:  # an S2 participant also publishes
                try:
                    on_rtcp(self.srtp.unprotect_rtcp(bytes(buf[:n])), time.monotonic())
                except ProtocolError:
                    counters["srtcp_errors"] += 1
        elif n and self.remote_addr is not None:
            # STUN (consent checks) or DTLS: after DTLS only the nominated remote talks to this socket (a source
            # address is not read, to keep the RTP path cheap).
            self._datagram(bytes(buf[:n]), self.remote_addr, time.monotonic())

    def _overflow(self, anc: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                self.counters["rx_dropped"] = _U32.unpack_from(data)[0]

    def _on_stun(self, data: bytes, addr: Address, now: float) -> None:
        try:
            msg = stun.parse(data)
        except ProtocolError:
            return
        if msg.message_class is stun.StunClass.REQUEST and msg.method == stun.METHOD_BINDING:
            # A full agent's check (Janus): answer it, keyed with our password.
            key = self.creds.pwd.encode()
            if msg.username is None or not msg.username.startswith(self.creds.ufrag + ":"):
                return
            if not stun.verify_integrity(data, key, message=msg):
                return
            if self.loopback_only:
                check_loopback(addr[0])
            self._sendto(stun.build_binding_success(msg.transaction_id, addr, key), addr)
            self.counters["stun_answered"] += 1
            if not self._controlling and msg.use_candidate:
                self.remote_addr = addr
                if self.ice_at is None:
                    self.ice_at = now
                self._start_dtls(now)
            elif not self._controlling and self.remote_addr is None:
                self.remote_addr = addr
            return
        if self.ice is None:
            return
        result = self.ice.handle_response(now, data)
        if result is not None and result.ok:
            if self.ice_at is None:
                self.ice_at = now
            self._start_dtls(now)

    def _start_dtls(self, now: float) -> None:
        dtls = self.dtls
        if dtls is None or dtls.state.value != "new":
            return
        if dtls.role == "client":
            dtls.start(now)
            self._flush_dtls()
            self._arm(0.05)
            # A ClientHello that beats the server's own ICE "ready" is dropped (Janus); rather
            # than wait the 1 s RFC 6347 initial timer, resend once after 100 ms if nothing
            # came back. Same behaviour against every server.
            self.loop.call_later(0.1, self._early_retransmit)

    def _early_retransmit(self) -> None:
        dtls = self.dtls
        if self.closed or dtls is None or dtls.state.value != "handshaking" or self.counters["dtls_in"]:
            return
        deadline = dtls.next_deadline()
        if deadline is not None:
            dtls.handle_timeout(deadline)
            self.counters["dtls_early_resend"] += 1
            self._flush_dtls()

    def _flush_dtls(self) -> None:
        dtls = self.dtls
        assert dtls is not None
        if self.remote_addr is not None:
            while (d := dtls.poll_transmit()) is not None:
                self._sendto(d, self.remote_addr)
        while (ev := dtls.poll_event()) is not None:
            if isinstance(ev, DtlsConnected):
                self.srtp = srtp_sessions_from_dtls(ev, dtls.role)
                if self._header_rx is not None:
                    self.switch_to_headers()
                if not self.connected.done():
                    self.connected.set_result(time.monotonic())
            elif isinstance(ev, DtlsFailed) and not self.connected.done():
                self.connected.set_exception(RuntimeError(f"DTLS failed: {ev.reason}"))
            elif isinstance(ev, DtlsApplicationData) and self.on_app_data is not None:
                self.on_app_data(time.monotonic(), ev.data)

    def send_app_data(self, data: bytes) -> None:
        """One DTLS application record (an SCTP packet) to the remote; dropped while DTLS is not up."""
        dtls = self.dtls
        if dtls is None or self.closed or dtls.state.value != "connected":
            return
        dtls.send_application_data(data)
        if self.remote_addr is not None:  # records only: events are polled by the datagram path
            while (d := dtls.poll_transmit()) is not None:
                self._sendto(d, self.remote_addr)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.connected.done():
            self.connected.cancel()
        if self._header_mode and self._header_rx is not None:
            self._header_rx.remove(self)
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class HeaderReceiver:
    """Reads the sockets of every header-only transport (headers.py) through one private epoll set.

    The event loop watches only the epoll descriptor (a nested epoll, Linux): one callback per loop turn
    reads every socket that has data, each into one shared buffer, with one clock reading per round,
    instead of one event-loop handle, one ``recvmsg`` with its ancillary data and one final EAGAIN per
    socket and turn. Socket overflow drops
    (no SO_RXQ_OVFL without ``recvmsg``) are read from /proc/net/udp by :meth:`drops`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.buf = bytearray(2048)
        #: fd -> (the socket's recv_into, the sink's on_header, the transport, its counters)
        self.by_fd: dict[int, tuple[Callable[[bytearray], int], Callable[[bytearray, int, float], None], Transport,
                                    dict[str, int]]] = {}
        self.inodes: dict[int, int] = {}  # fd -> socket inode, for /proc/net/udp
        self.closed = False
        loop.add_reader(self.epoll.fileno(), self._ready)

    def add(self, tr: Transport) -> None:
        sink = tr._header_sink
        assert sink is not None
        fd = tr.sock.fileno()
        self.by_fd[fd] = (tr.sock.recv_into, sink.on_header, tr, tr.counters)
        self.inodes[fd] = os.fstat(fd).st_ino
        self.epoll.register(fd, select.EPOLLIN)  # level-triggered: what came before the switch is read too

    def remove(self, tr: Transport) -> None:
        fd = tr.sock.fileno()
        if self.by_fd.pop(fd, None) is not None:
            self.inodes.pop(fd, None)
            if not self.closed:
                self.epoll.unregister(fd)

    def _ready(self) -> None:
        # One datagram per ready socket per round, rounds until none is ready: a socket is never read until it
        # says EAGAIN (a raised exception per socket per turn), one empty poll ends the turn instead. The
        # per-datagram work is inlined here: it is most of what a header-only subscriber costs.
        by_fd, buf, poll = self.by_fd, self.buf, self.epoll.poll
        for _ in range(64):
            events = poll(0, 4096)
            if not events:
                return
            now = time.time()
            for fd, _events in events:
                entry = by_fd.get(fd)
                if entry is None:
                    continue
                recv, on_header, tr, counters = entry
                try:
                    n = recv(buf)
                except OSError:  # nothing after all, or an ICMP error reported on the socket
                    continue
                counters["rx"] += 1
                # RTP (RFC 7983 first byte 128-191, RFC 5761 payload types outside 192-223 for RTCP) to the sink.
                if n >= 12 and 128 <= buf[0] <= 191 and not 192 <= buf[1] <= 223:
                    on_header(buf, n, now)
                else:
                    tr.other_datagram(buf, n)

    def drops(self) -> int:
        """Datagrams the kernel dropped at these sockets (receive buffer full), from /proc/net/udp's last column."""
        inodes = set(self.inodes.values())
        if not inodes:
            return 0
        total = 0
        try:
            with open("/proc/net/udp") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and int(cols[9]) in inodes:
                        total += int(cols[-1])
        except OSError:
            return 0
        return total

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.epoll.fileno())
            self.epoll.close()
