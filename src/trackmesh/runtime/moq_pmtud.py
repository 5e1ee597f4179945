"""Path MTU discovery for the MoQ relay's QUIC connections on aioquic (the driver of transports/moq/pmtud.py).

aioquic (1.7) does no path MTU discovery: every packet to a remote peer is 1200 bytes, and nearly all
of a relay's CPU is per packet. :class:`PathMtuProbe` runs the sans-IO DPLPMTUD search
(:class:`~trackmesh.transports.moq.pmtud.PmtuSearch`, RFC 8899) on one connection:

- A probe is one 1-RTT packet of exactly the probe size: a PING and PADDING (RFC 9000 s14.4), built
  with aioquic's own packet builder at the connection's next packet number and registered with its
  loss recovery like an ACK-only packet: not in flight and not ack-eliciting *for the sender's
  bookkeeping* (the PING still makes the peer acknowledge it). So a probe never takes room in the
  congestion window, never arms or feeds the probe timeout, gives no RTT sample, and its loss is
  no congestion event (RFC 9000 s14.4, RFC 8899 s3 item 7). aioquic's loss detection still declares
  it lost (packet and time thresholds), and calls its delivery handler with ACKED or LOST.
- The probe goes out on a duplicate of the listener's socket, so that a kernel refusal comes back
  here: EMSGSIZE (the probe is larger than the first hop's MTU; the socket has the DF bit,
  :func:`set_dont_fragment`) is a lost probe at once, and the packet is never registered with aioquic,
  so it does not disturb the connection (a skipped packet number is allowed, RFC 9000 s12.3).
- A confirmed size becomes the connection's packet size exactly as ``--moq-loopback-datagram-size``
  sets it (:func:`set_datagram_size`): the builder's, the pacer's and the congestion controller's unit.
- Black holes (RFC 8899 s4.3): two probe timeouts in a row with nothing acknowledged while the size
  is above 1200 fall back to 1200 at once; a 1200-byte probe then confirms that smaller packets get
  through before the search resumes below the size that failed.

This reads and writes aioquic private state. If that moves (a newer aioquic), the caller logs one
warning and the connection stays at 1200 bytes; nothing raises out of here into the connection.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.tls import ExtensionType

from trackmesh.transports.moq.pmtud import BASE_PLPMTU, IPV4_OVERHEAD, IPV6_OVERHEAD, PmtuSearch, Step

__all__ = [
    "BLACK_HOLE_PTOS",
    "PathMtuProbe",
    "PmtudStats",
    "peer_max_udp_payload_size",
    "route_payload_limit",
    "set_datagram_size",
    "set_dont_fragment",
]

log = logging.getLogger("trackmesh.moq")

#: Consecutive probe timeouts (RFC 9002 s6.2) with nothing acknowledged, at a size above BASE, taken
#: as a black hole (RFC 8899 s4.3): packets of the current size keep being lost.
BLACK_HOLE_PTOS = 2

# Linux <linux/in.h>, <linux/in6.h>: not in Python's socket module.
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
IP_MTU = 14
IPV6_MTU = 24
#: DF set, the kernel's cached path MTU ignored, nothing fragmented locally: a datagram larger than
#: the interface's MTU fails with EMSGSIZE, and ICMP "packet too big" never shrinks what we send.
PMTUDISC_PROBE = 3


class PmtudStats:
    """The listener's path MTU discovery counters, summed over its connections' searches (those
    acknowledged or lost count once, for the probe in progress: not a late answer to an earlier one)."""

    __slots__ = ("black_holes", "last_plpmtu", "probes_acked", "probes_lost", "probes_sent", "raised")

    def __init__(self) -> None:
        self.probes_sent = 0
        self.probes_acked = 0
        self.probes_lost = 0  # declared lost by QUIC, timed out, or refused by the kernel (EMSGSIZE)
        self.black_holes = 0  # fallbacks to 1200 bytes (RFC 8899 s4.3)
        self.raised = 0  # times a connection's packet size was raised by a confirmed probe
        self.last_plpmtu = 0  # the packet size of the last connection whose size changed


def set_dont_fragment(sock: Any) -> bool:
    """DF on the MoQ socket (IP_PMTUDISC_PROBE, and IPv6's likewise; RFC 9000 s14: QUIC datagrams are
    never fragmented), so that an oversize probe is dropped, not fragmented. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    done = False
    family = sock.family
    if family == socket.AF_INET6:
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_PROBE)
            done = True
        except OSError:
            pass
    try:  # IPv4, and IPv4-mapped peers of a dual-stack IPv6 socket
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_PROBE)
        done = True
    except OSError:
        pass
    return done


def route_payload_limit(addr: Any) -> int | None:
    """The largest UDP payload the first link toward ``addr`` carries whole (its MTU less the IP and UDP
    headers), from a connected socket's IP_MTU; None where that is unknown. With DF set on the MoQ
    socket, a loopback peer's packets must fit the loopback interface's MTU (65536 by default, less in
    a namespace that lowered it), or the kernel refuses them."""
    if not sys.platform.startswith("linux"):
        return None
    host = str(addr[0]).split("%", 1)[0]
    ipv6 = _is_ipv6_peer(addr)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, int(addr[1]) or 9))
            if ipv6:
                mtu = probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
            else:
                mtu = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None
    return int(mtu) - (IPV6_OVERHEAD if ipv6 else IPV4_OVERHEAD)


def peer_max_udp_payload_size(quic: QuicConnection) -> int | None:
    """The peer's max_udp_payload_size transport parameter (RFC 9000 s18.2; 65527 when absent), or None
    before its transport parameters are in."""
    for ext_type, ext_data in quic.tls.received_extensions or ():
        if ext_type == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
            peer = pull_quic_transport_parameters(Buffer(data=ext_data)).max_udp_payload_size
            return 65527 if peer is None else peer
    return None


def set_datagram_size(quic: QuicConnection, size: int) -> None:
    """The connection's packet size, and the unit of its pacer and congestion controller (RFC 9002 s7.2).
    Raises AttributeError if aioquic's private attributes moved."""
    loss = quic._loss
    pacer = loss._pacer
    cc: Any = loss._cc
    if not hasattr(quic, "_max_datagram_size") or not hasattr(pacer, "_max_datagram_size"):
        raise AttributeError("QuicConnection._max_datagram_size")
    quic._max_datagram_size = size
    pacer._max_datagram_size = size
    if hasattr(cc, "_max_datagram_size"):
        cc._max_datagram_size = size


def _is_ipv6_peer(addr: Any) -> bool:
    host = str(addr[0]).split("%", 1)[0]
    return ":" in host and not host.startswith("::ffff:")


class PathMtuProbe:
    """The search on one QUIC connection: probes, the packet size, the timer (driven by MoqConnection)."""

    __slots__ = ("_clock", "_deadline", "_probe_due", "_quic", "_send_sock", "_stats", "failed", "search")

    def __init__(
        self, quic: QuicConnection, send_sock: Any, stats: PmtudStats, max_plpmtu: int, clock: Callable[[], float]
    ) -> None:
        """``max_plpmtu``: the configured maximum (0: by the peer's address family, 1472 or 1452);
        the peer's max_udp_payload_size caps it. ``clock``: the loop's time."""
        self._clock = clock
        self._quic = quic
        #: aioquic's private state moved under us (a delivery handler failed): the driver stops it.
        self.failed: Exception | None = None
        # Everything this reads of aioquic, once: AttributeError here means "not this aioquic".
        for obj, names in (
            (quic, ("_max_datagram_size", "_packet_number", "_cryptos", "_spaces", "_peer_cid", "_spin_bit")),
            (quic, ("_version", "_handshake_confirmed", "_close_pending", "_state", "_network_paths", "host_cid")),
            (quic._loss, ("_pto_count", "on_packet_sent", "_cc")),
            (quic._loss._pacer, ("_max_datagram_size",)),
        ):
            for name in names:
                getattr(obj, name)
        self._send_sock = send_sock
        self._stats = stats
        ipv6 = _is_ipv6_peer(quic._network_paths[0].addr)
        overhead = IPV6_OVERHEAD if ipv6 else IPV4_OVERHEAD
        limit = max_plpmtu or 1500 - overhead
        peer = peer_max_udp_payload_size(quic)
        if peer is not None:
            limit = min(limit, peer)
        self.search = PmtuSearch(limit, overhead=overhead)
        self._deadline: float | None = None  # None: not started (the handshake is not confirmed yet)
        self._probe_due: int | None = None

    def tick(self, now: float) -> None:
        """From the listener's timer: start once the handshake is confirmed, the search's timer,
        black-hole detection."""
        if self.failed is not None:
            raise self.failed
        quic = self._quic
        if self._deadline is None:
            if not quic._handshake_confirmed:
                return
            self._event(self.search.start, now)
        if self._deadline is not None and now >= self._deadline:
            self._event(self.search.timer, now)
        if quic._max_datagram_size > BASE_PLPMTU and quic._loss._pto_count >= BLACK_HOLE_PTOS:
            self._event(self.search.black_hole_suspected, now)
        self.send_due(now)

    def send_due(self, now: float) -> None:
        """Send the probe the search asked for, if any (before the connection's own transmit)."""
        if self.failed is not None:
            raise self.failed
        size = self._probe_due
        if size is None:
            return
        self._probe_due = None
        sent = self._send(size, now)
        if sent is None:
            return  # not now (no 1-RTT keys, EAGAIN): the search asks again at its timer
        self._event(lambda t: self.search.probe_sent(size, t), now)
        if not sent:
            self._event(lambda t: self.search.probe_lost(size, t), now)
            self.send_due(now)  # EMSGSIZE: the next probe (same size up to MAX_PROBES) at once

    def _event(self, event: Callable[[float], Step], now: float) -> None:
        """One event into the search; its counters' changes into the listener's, then its step done."""
        search, stats = self.search, self._stats
        before = (search.probes_sent, search.probes_acked, search.probes_lost, search.black_holes)
        step = event(now)
        stats.probes_sent += search.probes_sent - before[0]
        stats.probes_acked += search.probes_acked - before[1]
        stats.probes_lost += search.probes_lost - before[2]  # also those the probe timer declared lost
        stats.black_holes += search.black_holes - before[3]
        self._apply(step, now)

    def _apply(self, step: Step, now: float) -> None:
        if step.plpmtu is not None and step.plpmtu != self._quic._max_datagram_size:
            set_datagram_size(self._quic, step.plpmtu)
            self._stats.last_plpmtu = step.plpmtu
            if step.plpmtu > BASE_PLPMTU:
                self._stats.raised += 1
        if step.probe is not None:
            self._probe_due = step.probe
        self._deadline = step.deadline

    @property
    def due(self) -> bool:
        """A probe waits to be sent (:meth:`send_due`), or the search failed (the driver stops it)."""
        return self._probe_due is not None or self.failed is not None

    def _on_delivery(self, delivery: QuicDeliveryState, size: int) -> None:
        """aioquic's delivery handler of a probe (called while it processes an ACK or a loss): the
        next probe, if any, goes with the connection's next transmit."""
        if self.failed is not None:
            return
        now = self._clock()
        try:
            if delivery == QuicDeliveryState.ACKED:
                self._event(lambda t: self.search.probe_acked(size, t), now)
            else:
                self._event(lambda t: self.search.probe_lost(size, t), now)
        except (AttributeError, KeyError, IndexError, TypeError) as exc:
            self.failed = exc  # never into aioquic's ACK processing; MoqConnection stops the search
            self._probe_due = None

    def _send(self, size: int, now: float) -> bool | None:
        """One probe of ``size`` bytes: True sent, False refused by the kernel (EMSGSIZE), None not now."""
        quic = self._quic
        crypto = quic._cryptos[tls.Epoch.ONE_RTT]
        if not crypto.send.is_valid() or quic._close_pending or quic._state is not QuicConnectionState.CONNECTED:
            return None
        path = quic._network_paths[0]
        version = quic._version
        if version is None:
            return None
        builder = QuicPacketBuilder(
            host_cid=quic.host_cid,
            is_client=quic._is_client,
            max_datagram_size=size,
            packet_number=quic._packet_number,
            peer_cid=quic._peer_cid.cid,
            spin_bit=quic._spin_bit,
            version=version,
        )
        builder.start_packet(QuicPacketType.ONE_RTT, crypto)
        builder.start_frame(QuicFrameType.PING, handler=self._on_delivery, handler_args=(size,))
        room = builder.remaining_buffer_space
        builder.start_frame(QuicFrameType.PADDING, capacity=room).push_bytes(bytes(room - 1))
        datagrams, packets = builder.flush()
        # The packet number is used whether or not the datagram leaves (gaps are allowed, RFC 9000 s12.3).
        quic._packet_number = builder.packet_number
        if len(datagrams) != 1 or len(packets) != 1 or len(datagrams[0]) != size:
            return None
        try:
            self._send_sock.sendto(datagrams[0], path.addr)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False
            return None
        packet = packets[0]
        packet.sent_time = now
        packet.in_flight = False  # outside the congestion window; its loss is no congestion event
        packet.is_ack_eliciting = False  # no PTO, no RTT sample from it (the peer still acknowledges the PING)
        quic._loss.on_packet_sent(packet=packet, space=quic._spaces[tls.Epoch.ONE_RTT])
        path.bytes_sent += size
        return True
