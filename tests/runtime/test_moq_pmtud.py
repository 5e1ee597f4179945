"""Path MTU discovery's probes on two aioquic connections in memory (runtime/moq_pmtud.py), on their own clock.

- A probe is exactly the probe size, and takes no room in the congestion window; the peer's ACK raises
  the packet size.
- A probe that never arrives is declared lost by aioquic's loss detection while data flows, and that is
  no congestion event.
- EMSGSIZE: lost at once, nothing registered with aioquic, the connection goes on.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trackmesh.runtime.moq_listener import make_certificate
from trackmesh.runtime.moq_pmtud import PathMtuProbe, PmtudStats
from trackmesh.transports.moq.pmtud import PmtuState

CLIENT, SERVER = ("127.0.0.1", 5001), ("127.0.0.1", 5002)


class Sock:
    """The probe socket: keeps what is sent, or refuses it with ``error``."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.error = 0

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.error:
            raise OSError(self.error, "refused")
        self.sent.append(data)
        return len(data)


class Pair:
    def __init__(self) -> None:
        cert_pem, key_pem = make_certificate(["localhost"])
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["moqt-16"])
        server_config.certificate = x509.load_pem_x509_certificate(cert_pem)
        server_config.private_key = serialization.load_pem_private_key(key_pem, None)
        client_config = QuicConfiguration(is_client=True, alpn_protocols=["moqt-16"], server_name="localhost")
        client_config.verify_mode = ssl.CERT_NONE
        self.client = QuicConnection(configuration=client_config)
        odcid = self.client.original_destination_connection_id
        self.server = QuicConnection(configuration=server_config, original_destination_connection_id=odcid)
        self.now = 1000.0
        self.received = 0
        self.client.connect(SERVER, now=self.now)
        self.pump(lambda: self.server._handshake_confirmed)

    def pump(self, done: Callable[[], bool], drop: Callable[[bytes], bool] = lambda d: False) -> None:
        """Datagrams both ways (those of the server ``drop`` says are lost), timers in time order, until ``done()``."""
        for _ in range(10_000):
            moved = False
            for src, dst, addr in ((self.client, self.server, CLIENT), (self.server, self.client, SERVER)):
                for data, _ in src.datagrams_to_send(now=self.now):
                    moved = True
                    if not (src is self.server and drop(data)):
                        dst.receive_datagram(data, addr, now=self.now)
            while (event := self.client.next_event()) is not None:
                if isinstance(event, StreamDataReceived):
                    self.received += len(event.data)
            while self.server.next_event() is not None:
                pass
            if done():
                return
            if not moved:
                timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
                self.now = max(self.now, min(timers))
                for conn in (self.client, self.server):
                    if (t := conn.get_timer()) is not None and t <= self.now:
                        conn.handle_timer(now=self.now)
        raise AssertionError("not done")

    def deliver_to_client(self, data: bytes) -> None:
        self.client.receive_datagram(data, SERVER, now=self.now)


def start(pair: Pair, sock: Sock) -> tuple[PathMtuProbe, PmtudStats]:
    stats = PmtudStats()
    probe = PathMtuProbe(pair.server, sock, stats, 0, clock=lambda: pair.now)
    probe.tick(pair.now)
    return probe, stats


def test_probe_is_exact_outside_the_window_and_its_ack_raises_the_size() -> None:
    pair, sock = Pair(), Sock()
    in_flight = pair.server._loss.bytes_in_flight
    probe, stats = start(pair, sock)
    assert [len(d) for d in sock.sent] == [1472]
    assert pair.server._loss.bytes_in_flight == in_flight  # not in flight: no room in the window taken
    pair.deliver_to_client(sock.sent[0])
    pair.pump(lambda: stats.probes_acked == 1)
    assert pair.server._max_datagram_size == 1472 and pair.server._loss._pacer._max_datagram_size == 1472
    assert probe.search.state is PmtuState.SEARCH_COMPLETE
    stream = pair.server.get_next_available_stream_id(is_unidirectional=True)
    pair.server.send_stream_data(stream, bytes(100_000), end_stream=True)
    sizes: list[int] = []

    def record(data: bytes) -> bool:
        sizes.append(len(data))
        return False  # lost: none

    pair.pump(lambda: pair.received >= 100_000, drop=record)
    assert max(sizes) == 1472


def test_a_lost_probe_is_no_congestion_event() -> None:
    pair, sock = Pair(), Sock()
    probe, stats = start(pair, sock)
    assert len(sock.sent) == 1  # never delivered: a router dropped it
    cc = pair.server._loss._cc
    stream = pair.server.get_next_available_stream_id(is_unidirectional=True)
    pair.server.send_stream_data(stream, bytes(50_000), end_stream=True)
    pair.pump(lambda: stats.probes_lost == 1)  # packets after it acknowledged: declared lost
    assert cc.ssthresh is None  # no congestion response
    assert probe.due and probe.search.probe_size == 1472  # again, up to MAX_PROBES
    pair.pump(lambda: pair.received >= 50_000)
    assert pair.server._max_datagram_size == 1200


def test_emsgsize_is_lost_at_once_and_leaves_the_connection_alone() -> None:
    pair, sock = Pair(), Sock()
    sock.error = errno.EMSGSIZE
    sent_before = len(pair.server._spaces[tls.Epoch.ONE_RTT].sent_packets)
    probe, stats = start(pair, sock)
    assert (stats.probes_sent, stats.probes_lost, stats.probes_acked) == (6, 6, 0)  # 1472 x3, 1322 x3
    assert probe.search.state is PmtuState.SEARCH_COMPLETE and pair.server._max_datagram_size == 1200
    assert len(pair.server._spaces[tls.Epoch.ONE_RTT].sent_packets) == sent_before  # nothing registered with aioquic
    stream = pair.server.get_next_available_stream_id(is_unidirectional=True)
    pair.server.send_stream_data(stream, bytes(50_000), end_stream=True)
    pair.pump(lambda: pair.received >= 50_000)  # packet numbers skipped: the client does not mind
