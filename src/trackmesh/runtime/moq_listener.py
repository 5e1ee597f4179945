"""The asyncio driver of the sans-IO MoQ session (transports/moq) on aioquic: one UDP port, raw
QUIC with the ALPN of each supported draft, one timer, nothing else.

- One :class:`MoqConnection` (an aioquic protocol) per QUIC connection: its events become
  ``ServerSession`` calls with the loop's time, and the session's outputs become QUIC calls. The
  session opens server unidirectional streams through :meth:`MoqConnection.open_uni`, which
  numbers them itself (RFC 9000 s2.1: 4n+3), because several may open before the next send.
- Sessions share one :class:`~trackmesh.transports.moq.relay.Relay`; a write from the relay to
  another session is flushed on the next loop turn (``on_output`` -> ``call_soon``).
- WebTransport over HTTP/3 (ALPN ``h3``): an extended CONNECT (RFC 9220) with
  ``:protocol webtransport`` at path ``/`` starts the session; its draft is the first of ours in
  the client's ``wt-available-protocols``, answered in ``wt-protocol``. WebTransport streams and
  H3 datagrams then carry exactly what raw QUIC streams and datagrams carry.
- The certificate: ``--moq-cert``/``--moq-key``, or a self-signed ECDSA P-256 certificate valid
  for 10 days made at start (browsers accept at most 14 with ``serverCertificateHashes``); its
  SHA-256 is :attr:`MoqListener.certificate_sha256`.
- No await and no logging per packet; counters in :class:`MoqStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DatagramReceived, DataReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import (
    ConnectionTerminated,
    DatagramFrameReceived,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trackmesh.security.tokens import AppTokenKeys
from trackmesh.transports.moq.alpn import DRAFT_OF_ALPN
from trackmesh.transports.moq.auth import Anonymous, Authorizer
from trackmesh.transports.moq.cluster_relay import ClusterRelay
from trackmesh.transports.moq.errors import SessionErrorCode
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.session import (
    CloseSession,
    DatagramOut,
    ServerSession,
    StreamWrite,
)
from trackmesh.transports.moq.session import StreamReset as ResetOut

from .aioquic_build import describe as describe_aioquic
from .moq_auth import TokenAuthorizer
from .moq_pmtud import (
    PathMtuProbe,
    PmtudStats,
    peer_max_udp_payload_size,
    route_payload_limit,
    set_datagram_size,
    set_dont_fragment,
)
from .moq_room_ingest import MoqRoomIngest
from .moq_rooms import MoqRooms

__all__ = ["ALPNS", "MoqListener", "MoqStats", "make_certificate"]

log = logging.getLogger("trackmesh.moq")

#: Every ALPN we answer by default: the raw-QUIC ones (transports/moq/alpn.py, ``--moq-alpns``
#: chooses among them), then HTTP/3 for WebTransport.
ALPNS = (*DRAFT_OF_ALPN, *H3_ALPN)
WT_PATH = "/"
_SF_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
CERT_DAYS = 10
TIMER_INTERVAL = 0.25
#: The largest QUIC packet to a peer on the same host (MoqConnection._choose_datagram_size).
LOOPBACK_DATAGRAM_SIZE = 16384
#: The MoQ socket's kernel receive and send buffers (_enlarge_buffers).
SOCKET_BUFFER = 4 * 1024 * 1024


def make_certificate(hosts: list[str], days: int = CERT_DAYS) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate and key (PEM) for ``hosts`` (names or IPs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trackmesh moq")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _enlarge_buffers(sock: Any) -> None:
    """4 MB kernel buffers on the MoQ socket, as on the media workers' (runtime/worker.py): a key
    frame to N subscribers leaves as a burst of N x 30-40 packets, and their ACKs come back as one.
    With the default 208 KB the relay's socket dropped ACKs and publishers' packets near a core's
    capacity (bench/moq_fanout_e2e.py, ``udp_drops_at_relay_socket``), and each lost ACK is more
    retransmission. The kernel caps the size at net.core.rmem_max / wmem_max."""
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class MoqStats:
    __slots__ = (
        "acks_without_transmit",
        "connections",
        "internal_errors",
        "loopback_large_datagrams",
        "refused_alpn",
        "refused_webtransport",
        "sessions_closed_with_error",
        "webtransport",
        "writes_dropped",
    )

    def __init__(self) -> None:
        self.connections = 0  # MoQ sessions started (raw QUIC and WebTransport)
        self.webtransport = 0  # of which over WebTransport
        self.refused_alpn = 0
        self.refused_webtransport = 0  # CONNECTs refused (wrong path, no common protocol)
        self.sessions_closed_with_error = 0
        self.writes_dropped = 0  # writes to streams already reset, stopped or finished
        self.internal_errors = 0  # connections closed by a bug of ours (logged with the traceback)
        self.loopback_large_datagrams = 0  # connections to a loopback peer sent packets above 1200 bytes
        self.acks_without_transmit = 0  # ACK-only datagrams after which there was nothing to send


class MoqConnection(QuicConnectionProtocol):
    """One QUIC connection carrying one MoQ session (raw QUIC, or one WebTransport session)."""

    def __init__(self, *args: Any, listener: MoqListener, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.session: ServerSession | None = None
        self._h3: H3Connection | None = None
        self._wt_session: int | None = None  # the CONNECT stream of the WebTransport session
        self._next_uni = 3  # server-initiated unidirectional (RFC 9000 s2.1)
        self._next_bidi = 1  # server-initiated bidirectional
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        #: Path MTU discovery on this connection (runtime/moq_pmtud.py), None when it does not run.
        self.pmtud: PathMtuProbe | None = None

    def open_uni(self) -> int:
        stream_id = self._next_uni
        self._next_uni += 4
        return stream_id

    def open_bidi(self) -> int:
        stream_id = self._next_bidi
        self._next_bidi += 4
        return stream_id

    def _start(
        self, draft: int, open_uni: Callable[[], int], open_bidi: Callable[[], int], path: str = ""
    ) -> ServerSession:
        self.listener.stats.connections += 1
        self.session = ServerSession(
            self.listener.relay,
            open_uni,
            draft=draft,
            open_bidi=open_bidi,
            authorizer=self.listener.authorizer(),
            on_output=self._wake,
            path=path,
        )
        self.listener.sessions.add(self)
        return self.session

    def _choose_datagram_size(self) -> None:
        """The packet size to this peer, once its transport parameters are in (ProtocolNegotiated comes
        after aioquic parsed them).

        aioquic sends packets of at most 1200 bytes (RFC 9000 s14: the size every path carries, as it
        does no path MTU discovery), and nearly all of a relay's CPU is per packet: packing, AEAD,
        header protection, a sendto, then the ACK for it.

        - A peer on this host (``--moq-loopback-datagram-size`` above 1200): loopback carries 64 KB
          datagrams whole, so it gets up to ``loopback_datagram_size`` at once, never more than its
          max_udp_payload_size transport parameter (RFC 9000 s18.2).
        - Any other peer, and a loopback one when that option is 1200 (``--moq-pmtud``): path MTU
          discovery (runtime/moq_pmtud.py) raises the size to what the path is seen to carry."""
        listener = self.listener
        loopback = listener.loopback_datagram_size > 1200 and _is_loopback(self._quic._network_paths[0].addr[0])
        try:
            if loopback:
                self._set_loopback_datagram_size(listener.loopback_datagram_size)
            elif listener.pmtud and listener.probe_socket is not None:
                self.pmtud = PathMtuProbe(
                    self._quic, listener.probe_socket, listener.pmtud_stats, listener.pmtud_max, self._loop.time
                )
        except (AttributeError, KeyError, IndexError) as exc:
            # aioquic's private packet-size attributes moved (a newer aioquic): stay at 1200 bytes.
            self.pmtud = None
            if not listener.loopback_datagram_size_warned:
                listener.loopback_datagram_size_warned = True
                log.warning("QUIC packets above 1200 bytes unsupported by this aioquic (%s): 1200-byte packets", exc)

    def _set_loopback_datagram_size(self, size: int) -> None:
        quic = self._quic
        if size <= quic._max_datagram_size:
            return
        peer = peer_max_udp_payload_size(quic)
        if peer is None:
            return
        size = min(size, peer)
        if self.listener.probe_socket is not None:  # DF is set: never above the loopback interface's MTU
            limit = route_payload_limit(quic._network_paths[0].addr)
            if limit is not None:
                size = min(size, limit)
        if size <= quic._max_datagram_size:
            return
        set_datagram_size(quic, size)
        self.listener.stats.loopback_large_datagrams += 1

    def pmtud_tick(self, now: float) -> None:
        """The listener's timer: path MTU discovery's own (start, probe timer, black holes)."""
        probe = self.pmtud
        if probe is not None:
            try:
                probe.tick(now)
            except (AttributeError, KeyError, IndexError, TypeError) as exc:
                self._pmtud_failed(exc)

    def _pmtud_failed(self, exc: Exception) -> None:
        """aioquic's private state moved under path MTU discovery: stop it, back to 1200 bytes (logged once)."""
        self.pmtud = None
        with contextlib.suppress(AttributeError):
            set_datagram_size(self._quic, 1200)
        if not self.listener.loopback_datagram_size_warned:
            self.listener.loopback_datagram_size_warned = True
            log.warning("path MTU discovery unsupported by this aioquic (%s): 1200-byte packets", exc)

    def measure_backlog(self) -> None:
        """The bytes queued on this connection's streams and not yet acknowledged (once per tick:
        the relay resets a congested subscriber's old groups, relay.BACKLOG_LIMIT)."""
        if self.session is not None:
            streams = self._quic._streams.values()
            self.session.backlog = sum(len(stream.sender._buffer) for stream in streams)

    def _wake(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        """One datagram in: its events are handled now, the send is deferred to the end of this loop
        turn. aioquic's own handler transmits after every datagram: a relay that reads a burst of
        ACKs, or a publisher's packets that fan out to many connections, then packs, encrypts and
        re-arms the timer once per datagram instead of once per connection per turn.

        Most datagrams a relay reads are a subscriber's ACKs. After one that carried nothing else
        only the timer needs re-arming, unless a stream has data waiting (for the congestion window
        the ACK opened, or lost data to resend): :meth:`_after_ack_only`."""
        quic = self._quic
        try:
            space = quic._spaces[tls.Epoch.ONE_RTT]
            ack_pending = space.ack_at is not None
        except (AttributeError, KeyError):
            space, ack_pending = None, True
        quic.receive_datagram(data, addr, now=self._loop.time())  # type: ignore[arg-type]
        self._process_events()
        if self._flush_scheduled:
            return
        if space is not None and not ack_pending and space.ack_at is None and self._after_ack_only():
            return
        self._wake()

    def _after_ack_only(self) -> bool:
        """After a datagram with no ack-eliciting frame (RFC 9000 s13.2.1: ACK, PADDING, CONNECTION_CLOSE
        only): re-arm the timer and return True if there is nothing to send, else False (transmit).

        aioquic (1.7) would build and discard an empty packet here: 40-45 % of a relay's transmits
        (docs/benchmarks.md). Reads aioquic's private state; if that moves, transmit every time (logged once)."""
        quic = self._quic
        try:
            if not quic._handshake_confirmed or quic._state is not QuicConnectionState.CONNECTED:
                return False
            if quic._close_pending or quic._probe_pending or quic._datagrams_pending or quic._ping_pending:
                return False
            if self.pmtud is not None and self.pmtud.due:  # the next probe, after this ACK resolved one
                return False
            # Frames declared lost by this ACK and due again: CRYPTO (session tickets), HANDSHAKE_DONE,
            # STREAMS_BLOCKED, RETIRE_CONNECTION_ID. The rarer ones (MAX_DATA, NEW_CONNECTION_ID) go
            # with the next transmit: the next object, or the listener's tick within TIMER_INTERVAL.
            if quic._handshake_done_pending or quic._streams_blocked_pending or quic._retire_connection_ids:
                return False
            if not quic._crypto_streams[tls.Epoch.ONE_RTT].sender.buffer_is_empty:
                return False
            for stream in quic._streams_queue:
                sender = stream.sender
                if not sender.buffer_is_empty or sender.reset_pending or stream.receiver.stop_pending:
                    return False
            timer_at = quic.get_timer()
            if self._timer is not None and self._timer_at != timer_at:
                self._timer.cancel()
                self._timer = None
            if self._timer is None and timer_at is not None:
                self._timer = self._loop.call_at(timer_at, self._handle_timer)
            self._timer_at = timer_at
        except (AttributeError, KeyError) as exc:
            if not self.listener.ack_only_warned:
                self.listener.ack_only_warned = True
                log.warning("aioquic internals moved (%s): a transmit after every ACK", exc)
            return False
        self.listener.stats.acks_without_transmit += 1
        return True

    def quic_event_received(self, event: QuicEvent) -> None:
        try:
            self._event(event)
        except Exception:
            # A bug of ours must cost this connection only, never the worker's other sessions.
            self.listener.stats.internal_errors += 1
            log.exception("moq connection failed on %s", type(event).__name__)
            if self.session is not None:
                self.session.close(SessionErrorCode.INTERNAL_ERROR, "internal error")
            self._quic.close(error_code=SessionErrorCode.INTERNAL_ERROR, reason_phrase="internal error")
            self.listener.sessions.discard(self)
            self.transmit()

    def _event(self, event: QuicEvent) -> None:
        now = self._loop.time()
        session = self.session
        if self._h3 is not None:
            self._h3_quic_event(event, now)
            return
        if isinstance(event, ProtocolNegotiated):
            if event.alpn_protocol in H3_ALPN:
                self._choose_datagram_size()
                self._h3 = H3Connection(self._quic, enable_webtransport=True)
                return
            self._choose_datagram_size()
            draft = DRAFT_OF_ALPN.get(event.alpn_protocol or "")
            if draft is None:
                self.listener.stats.refused_alpn += 1
                self._quic.close(error_code=SessionErrorCode.VERSION_NEGOTIATION_FAILED, reason_phrase="no MoQ ALPN")
                return
            self._start(draft, self.open_uni, self.open_bidi)
        elif session is None:
            return
        elif isinstance(event, StreamDataReceived):
            session.stream_data(event.stream_id, bool(event.stream_id & 2), event.data, event.end_stream, now)
        elif isinstance(event, DatagramFrameReceived):
            session.datagram(event.data, now)
        elif isinstance(event, StreamReset | StopSendingReceived):
            session.stream_reset(event.stream_id, event.error_code, now)
        elif isinstance(event, ConnectionTerminated):
            session.transport_closed()
            self.listener.sessions.discard(self)
        self._wake()

    # -- WebTransport over HTTP/3 ---------------------------------------------------------------

    def _h3_quic_event(self, event: QuicEvent, now: float) -> None:
        assert self._h3 is not None
        session = self.session
        if isinstance(event, StreamReset | StopSendingReceived) and session is not None:
            session.stream_reset(event.stream_id, event.error_code, now)
        for h3_event in self._h3.handle_event(event):
            self._h3_event(h3_event, now)
        if isinstance(event, ConnectionTerminated) and self.session is not None:
            self.session.transport_closed()
            self.listener.sessions.discard(self)
        self._wake()

    def _h3_event(self, event: H3Event, now: float) -> None:
        session = self.session
        if isinstance(event, HeadersReceived):
            self._connect(event)
        elif isinstance(event, WebTransportStreamDataReceived):
            if session is not None and event.session_id == self._wt_session:
                session.stream_data(event.stream_id, bool(event.stream_id & 2), event.data, event.stream_ended, now)
        elif isinstance(event, DatagramReceived):
            if session is not None and event.stream_id == self._wt_session:
                session.datagram(event.data, now)
        elif (
            isinstance(event, DataReceived)
            and session is not None
            and event.stream_id == self._wt_session
            and event.stream_ended
        ):
            session.close(SessionErrorCode.NO_ERROR, "WebTransport session ended")

    def _refuse(self, stream_id: int, status: int, reason: str) -> None:
        assert self._h3 is not None
        self.listener.stats.refused_webtransport += 1
        headers = [(b":status", str(status).encode()), (b"content-type", b"text/plain")]
        self._h3.send_headers(stream_id, headers)
        self._h3.send_data(stream_id, reason.encode() + b"\n", end_stream=True)

    def _connect(self, event: HeadersReceived) -> None:
        """An extended CONNECT (RFC 9220) for a WebTransport session at ``/``; anything else 404s."""
        assert self._h3 is not None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        if headers.get(":method") != "CONNECT" or headers.get(":protocol") != "webtransport":
            self._refuse(event.stream_id, 404, "this port speaks MoQ: WebTransport CONNECT at / or raw QUIC")
            return
        if headers.get(":path", "").split("?", 1)[0] != WT_PATH:
            self._refuse(event.stream_id, 404, f"MoQ over WebTransport is at {WT_PATH}")
            return
        if self.session is not None:
            self._refuse(event.stream_id, 429, "one MoQ session per connection")
            return
        offered = _SF_STRING.findall(headers.get("wt-available-protocols", ""))
        protocol = next((p for p in DRAFT_OF_ALPN if p in offered), None)
        if protocol is None:
            self._refuse(
                event.stream_id,
                400,
                f"no common MoQ version in wt-available-protocols (we speak {', '.join(DRAFT_OF_ALPN)})",
            )
            return
        session_id = event.stream_id
        self._wt_session = session_id
        h3 = self._h3
        response = [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
        response.append((b"wt-protocol", f'"{protocol}"'.encode()))
        h3.send_headers(session_id, response)
        self.listener.stats.webtransport += 1
        self._start(
            DRAFT_OF_ALPN[protocol],
            lambda: h3.create_webtransport_stream(session_id, is_unidirectional=True),
            lambda: self._open_wt_bidi(session_id),
            headers.get(":path", ""),
        )

    def _open_wt_bidi(self, session_id: int) -> int:
        """A server-initiated WebTransport bidi stream (a draft-20 request of ours).

        aioquic (1.7) writes the WEBTRANSPORT_STREAM signal but does not mark its own side of the
        stream as a WebTransport stream, so the peer's answer would be parsed as HTTP/3 frames and
        the connection closed with FRAME_UNEXPECTED; mark it the way it marks a peer's stream."""
        assert self._h3 is not None
        stream_id = self._h3.create_webtransport_stream(session_id, is_unidirectional=False)
        with self._h3._get_or_create_stream(stream_id) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = session_id
        return stream_id

    def flush(self) -> None:
        """The session's outputs to QUIC, then one transmit (datagrams, timer) for all of them."""
        self._flush_scheduled = False
        if self.pmtud is not None and self.pmtud.due:
            try:
                self.pmtud.send_due(self._loop.time())
            except (AttributeError, KeyError, IndexError, TypeError) as exc:
                self._pmtud_failed(exc)
        session = self.session
        if session is None:
            self.transmit()
            return
        quic = self._quic
        for out in session.drain():
            try:
                if isinstance(out, StreamWrite):
                    quic.send_stream_data(out.stream_id, out.data, out.fin)
                elif isinstance(out, ResetOut):
                    if out.stop_sending:
                        quic.stop_stream(out.stream_id, out.code)
                    else:
                        quic.reset_stream(out.stream_id, out.code)
                elif isinstance(out, DatagramOut):
                    if self._h3 is not None and self._wt_session is not None:
                        self._h3.send_datagram(self._wt_session, out.data)
                    else:
                        quic.send_datagram_frame(out.data)
                elif isinstance(out, CloseSession):
                    if out.code:
                        self.listener.stats.sessions_closed_with_error += 1
                    quic.close(error_code=out.code, reason_phrase=out.reason[:200])
                    self.listener.sessions.discard(self)
            except (ValueError, AssertionError, RuntimeError):
                # A stream that is gone: finished, reset by us, or stopped by the peer (aioquic then
                # resets it and raises RuntimeError on the next write). The bytes have nowhere to go.
                self.listener.stats.writes_dropped += 1
                continue
        self.transmit()


class MoqListener:
    """The MoQ UDP port of a node: the QUIC server, the relay and the timer."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cert_file: str | None = None,
        key_file: str | None = None,
        anonymous: bool = False,
        token_key: bytes | str | AppTokenKeys = b"",
        loopback_datagram_size: int = LOOPBACK_DATAGRAM_SIZE,
        pmtud: bool = True,
        pmtud_max: int = 0,
        alpns: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        #: Path MTU discovery (runtime/moq_pmtud.py) for peers not on this host, and for those on it when
        #: ``loopback_datagram_size`` is 1200; ``pmtud_max``: the largest size it tries (0: by address
        #: family, 1472 for IPv4, 1452 for IPv6).
        self.pmtud = pmtud
        self.pmtud_max = pmtud_max
        #: The raw-QUIC ALPNs answered, in our order of preference (``--moq-alpns``; empty: all).
        self.alpns = alpns or tuple(DRAFT_OF_ALPN)
        self.pmtud_stats = PmtudStats()
        #: A duplicate of the UDP socket for probes, so that their EMSGSIZE comes back to us (start()).
        self.probe_socket: socket.socket | None = None
        #: The largest QUIC packet sent to a peer on this host (1200: never above the default).
        self.loopback_datagram_size = loopback_datagram_size
        self.loopback_datagram_size_warned = False  # logged once when aioquic lacks the attributes
        self.ack_only_warned = False  # logged once when aioquic lacks what MoqConnection._after_ack_only reads
        self.port = port
        self.relay = Relay()
        #: The rooms of the in-process worker on the relay (set by the node: runtime/moq_rooms.py).
        self.rooms: MoqRooms | None = None
        #: MoQ publishers into those rooms (runtime/moq_room_ingest.py).
        self.room_ingest: MoqRoomIngest | None = None
        #: The relay as a member of the cluster-wide relay (a media node: transports/moq/cluster_relay.py).
        self.cluster: ClusterRelay | None = None
        self.anonymous = anonymous
        self._token_key = token_key
        self.stats = MoqStats()
        self.sessions: set[MoqConnection] = set()
        self._cert_file = cert_file
        self._key_file = key_file
        self._server: QuicServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.certificate_pem = b""
        self.certificate_sha256 = ""

    def authorizer(self) -> Authorizer:
        """A new session's authorizer: everything with --moq-anonymous, else its token's rights."""
        if self.anonymous:
            return Anonymous()
        return TokenAuthorizer(self._token_key)

    def _configuration(self) -> QuicConfiguration:
        config = QuicConfiguration(
            is_client=False,
            alpn_protocols=[*self.alpns, *H3_ALPN],
            max_datagram_frame_size=65536,
            idle_timeout=30.0,
        )
        if self._cert_file and self._key_file:
            config.load_cert_chain(self._cert_file, self._key_file)
            with open(self._cert_file, "rb") as f:
                self.certificate_pem = f.read()
        else:
            hosts = ["localhost", "127.0.0.1", "::1"]
            if self.host not in ("0.0.0.0", "::", ""):
                hosts.append(self.host)
            cert_pem, key_pem = make_certificate(hosts)
            # aioquic loads PEM files only: write them to private temporary files, then remove them.
            with tempfile.TemporaryDirectory() as tmp:
                cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
                with open(cert_path, "wb") as f:
                    f.write(cert_pem)
                with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(key_pem)
                config.load_cert_chain(cert_path, key_path)
            self.certificate_pem = cert_pem
        der = x509.load_pem_x509_certificate(self.certificate_pem).public_bytes(serialization.Encoding.DER)
        self.certificate_sha256 = hashlib.sha256(der).hexdigest()
        return config

    async def start(self) -> None:
        config = self._configuration()
        create: Callable[..., QuicConnectionProtocol] = lambda *a, **kw: MoqConnection(  # noqa: E731
            *a, listener=self, **kw
        )
        self._server = await serve(self.host, self.port, configuration=config, create_protocol=create)
        transport = self._server._transport
        if transport is not None:
            self.port = transport.get_extra_info("sockname")[1]
            _enlarge_buffers(transport.get_extra_info("socket"))
            if self.pmtud:
                self._probe_socket_for(transport.get_extra_info("socket"))
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick)
        log.info("MoQ relay on UDP %s:%s (%s)", self.host, self.port, describe_aioquic())

    def _probe_socket_for(self, sock: Any) -> None:
        """DF on the MoQ socket and a duplicate of it for the probes (runtime/moq_pmtud.py); without DF
        an oversize probe would be fragmented and acknowledged, so no path MTU discovery."""
        if sock is None or not set_dont_fragment(sock):
            log.warning("MoQ path MTU discovery off: cannot set the DF bit on this platform")
            return
        self.probe_socket = socket.socket(fileno=os.dup(sock.fileno()))
        self.probe_socket.setblocking(False)

    def metrics(self) -> dict[str, int]:
        """Counters and gauges for /metrics (``trackmesh_moq{what=...}``)."""
        relay, stats, pmtud = self.relay, self.stats, self.pmtud_stats
        rooms = self.rooms.metrics() if self.rooms is not None else {}
        if self.room_ingest is not None:
            rooms |= self.room_ingest.metrics()
        if self.cluster is not None:
            rooms |= self.cluster.metrics()
        return rooms | {
            "sessions": len(self.sessions),
            "sessions_started_total": stats.connections,
            "webtransport_sessions_total": stats.webtransport,
            "refused_alpn_total": stats.refused_alpn,
            "refused_webtransport_total": stats.refused_webtransport,
            "sessions_closed_with_error_total": stats.sessions_closed_with_error,
            "writes_dropped_total": stats.writes_dropped,
            "internal_errors_total": stats.internal_errors,
            "loopback_large_datagram_sessions_total": stats.loopback_large_datagrams,
            "acks_without_transmit_total": stats.acks_without_transmit,
            "pmtud_probes_sent_total": pmtud.probes_sent,
            "pmtud_probes_acked_total": pmtud.probes_acked,
            "pmtud_probes_lost_total": pmtud.probes_lost,
            "pmtud_black_holes_total": pmtud.black_holes,
            "pmtud_raised_total": pmtud.raised,
            "pmtud_last_plpmtu": pmtud.last_plpmtu,
            **self._plpmtu_sessions(),
            "groups_dropped_total": relay.stats.groups_dropped,
            "namespaces": len(relay.namespaces),
            "tracks": len(relay.tracks),
            "subscriptions": sum(len(t.subscribers) for t in relay.tracks.values()),
            "objects_in_total": relay.stats.objects_in,
            "objects_out_total": relay.stats.objects_out,
            "streams_out_total": relay.stats.streams_out,
            "datagrams_in_total": relay.stats.datagrams,
        }

    def _plpmtu_sessions(self) -> dict[str, int]:
        """Sessions by packet size found by path MTU discovery (``pmtud_sessions_<size>``)."""
        out: dict[str, int] = {}
        for conn in self.sessions:
            if conn.pmtud is not None:
                key = f"pmtud_sessions_{conn.pmtud.search.plpmtu}"
                out[key] = out.get(key, 0) + 1
        return out

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.cluster is not None:
            self.cluster.tick(now)
        self.relay.timer(now)
        for conn in list(self.sessions):
            conn.measure_backlog()
            conn.pmtud_tick(now)
            conn.flush()
        self._timer = loop.call_later(TIMER_INTERVAL, self._tick)

    def drain(self) -> None:
        """GOAWAY to every session (draft-16 s9.4) before the node stops."""
        for conn in list(self.sessions):
            if conn.session is not None:
                conn.session.goaway()
                conn.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.cluster is not None:
            self.cluster.close(asyncio.get_running_loop().time())
        for conn in list(self.sessions):
            if conn.session is not None:
                conn.session.close(SessionErrorCode.NO_ERROR, "server stopping")
                conn.flush()
        if self._server is not None:
            self._server.close()
        if self.probe_socket is not None:
            self.probe_socket.close()
            self.probe_socket = None
