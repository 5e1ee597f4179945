from __future__ import annotations

import os
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import LocalProtocolError
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.dtls.endpoint import (
    DEFAULT_SRTP_PROFILES,
    DtlsApplicationData,
    DtlsClosed,
    DtlsConnected,
    DtlsEndpoint,
    DtlsError,
    DtlsEvent,
    DtlsFailed,
    DtlsState,
    _shared_context,
    split_records,
)
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls
from trackmesh.transports.webrtc.dtls.records import prf, record_keys

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
Drop = Callable[[str, int, bytes], bool]


@pytest.fixture(scope="module")
def client_cert() -> DtlsCertificate:
    return DtlsCertificate.generate(NOT_BEFORE)


@pytest.fixture(scope="module")
def server_cert() -> DtlsCertificate:
    return DtlsCertificate.generate(NOT_BEFORE)


def rsa_certificate() -> DtlsCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gstreamer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_BEFORE + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return DtlsCertificate.from_key_and_certificate(key, cert)


def state_now(endpoint: DtlsEndpoint) -> DtlsState:
    """``endpoint.state``, read afresh: mypy keeps an attribute narrowed by an earlier assert
    across the calls that change it."""
    return endpoint.state


def make_pair(
    client_cert: DtlsCertificate,
    server_cert: DtlsCertificate,
    client_profiles: tuple[SrtpProfile, ...] = (SrtpProfile.AEAD_AES_128_GCM, SrtpProfile.AES128_CM_SHA1_80),
    server_profiles: tuple[SrtpProfile, ...] = (SrtpProfile.AEAD_AES_128_GCM, SrtpProfile.AES128_CM_SHA1_80),
    client_expects: str | None = None,
    server_expects: str | None = None,
) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client = DtlsEndpoint(
        "client", client_cert, [("sha-256", client_expects or server_cert.fingerprint_sha256())], client_profiles
    )
    server = DtlsEndpoint(
        "server", server_cert, [("sha-256", server_expects or client_cert.fingerprint_sha256())], server_profiles
    )
    return client, server


class Net:
    """Moves datagrams between two endpoints on a virtual clock, optionally dropping some."""

    def __init__(self, client: DtlsEndpoint, server: DtlsEndpoint, drop: Drop | None = None) -> None:
        self.client, self.server = client, server
        self.drop = drop or (lambda _role, _n, _d: False)
        self.sent = {"client": 0, "server": 0}
        self.sizes: list[int] = []
        self.events: dict[str, list[DtlsEvent]] = {"client": [], "server": []}

    def pump(self, now: float) -> None:
        for _ in range(50):
            moved = False
            for a, b in ((self.client, self.server), (self.server, self.client)):
                while (d := a.poll_transmit()) is not None:
                    moved = True
                    self.sizes.append(len(d))
                    n = self.sent[a.role]
                    self.sent[a.role] += 1
                    if not self.drop(a.role, n, d):
                        b.handle_datagram(now, d)
            if not moved:
                break
        for ep in (self.client, self.server):
            while (ev := ep.poll_event()) is not None:
                self.events[ep.role].append(ev)

    def run(self, until: float = 200.0) -> float:
        """Pump, then jump the clock to the earliest deadline, until nothing is pending."""
        now = 0.0
        self.client.start(now)
        self.pump(now)
        while now < until:
            deadlines = [d for d in (self.client.next_deadline(), self.server.next_deadline()) if d is not None]
            if not deadlines:
                break
            now = min(deadlines)
            self.client.handle_timeout(now)
            self.server.handle_timeout(now)
            self.pump(now)
        return now

    def connected(self, role: str) -> DtlsConnected:
        found = [e for e in self.events[role] if isinstance(e, DtlsConnected)]
        assert len(found) == 1, self.events[role]
        return found[0]


@pytest.mark.parametrize("profile", list(SrtpProfile))
def test_handshake_negotiates_profile_and_mirrored_keys(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate, profile: SrtpProfile
) -> None:
    client, server = make_pair(client_cert, server_cert, server_profiles=(profile,))
    net = Net(client, server)
    end = net.run()
    assert end == 0.0  # no retransmission needed on a lossless path
    assert client.state is server.state is DtlsState.CONNECTED
    c, s = net.connected("client"), net.connected("server")
    assert c.profile is s.profile is profile
    size = profile.key_length + profile.salt_length
    assert len(c.local_keying) == len(c.remote_keying) == size
    assert c.local_keying == s.remote_keying and c.remote_keying == s.local_keying
    assert c.local_keying != c.remote_keying
    assert max(net.sizes) <= 1200
    assert client.next_deadline() is None and server.next_deadline() is None


def test_server_prefers_gcm_when_both_offered(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    client, server = make_pair(
        client_cert, server_cert, client_profiles=(SrtpProfile.AES128_CM_SHA1_80, SrtpProfile.AEAD_AES_128_GCM)
    )
    net = Net(client, server)
    net.run()
    assert net.connected("client").profile is SrtpProfile.AEAD_AES_128_GCM


@pytest.mark.parametrize("profile", list(SrtpProfile))
def test_srtp_keys_interoperate_both_directions(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate, profile: SrtpProfile
) -> None:
    client, server = make_pair(client_cert, server_cert, client_profiles=(profile,), server_profiles=(profile,))
    net = Net(client, server)
    net.run()
    c_srtp = srtp_sessions_from_dtls(net.connected("client"), "client")
    s_srtp = srtp_sessions_from_dtls(net.connected("server"), "server")
    packet = struct.pack("!BBHII", 0x80, 111, 1, 960, 0xCAFE) + os.urandom(160)
    assert s_srtp.unprotect_rtp(c_srtp.protect_rtp(packet)) == packet
    assert c_srtp.unprotect_rtp(s_srtp.protect_rtp(packet)) == packet
    rr = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFE)
    assert s_srtp.unprotect_rtcp(c_srtp.protect_rtcp(rr)) == rr
    assert c_srtp.unprotect_rtcp(s_srtp.protect_rtcp(rr)) == rr


def test_client_rejects_wrong_server_fingerprint(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    other = DtlsCertificate.generate(NOT_BEFORE)
    client, server = make_pair(client_cert, server_cert, client_expects=other.fingerprint_sha256())
    net = Net(client, server)
    net.run()
    assert client.state is DtlsState.FAILED
    failed = [e for e in net.events["client"] if isinstance(e, DtlsFailed)]
    assert failed and "fingerprint" in failed[0].reason
    assert not any(isinstance(e, DtlsConnected) for e in net.events["client"])
    # Our bad_certificate alert reaches the server, which fails too instead of waiting.
    assert server.state is DtlsState.FAILED


def test_server_rejects_wrong_client_fingerprint(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    other = DtlsCertificate.generate(NOT_BEFORE)
    client, server = make_pair(client_cert, server_cert, server_expects=other.fingerprint_sha256())
    net = Net(client, server)
    net.run()
    assert server.state is DtlsState.FAILED
    assert not any(isinstance(e, DtlsConnected) for e in net.events["server"])
    failed = [e for e in net.events["server"] if isinstance(e, DtlsFailed)]
    assert "fingerprint" in failed[0].reason


def test_endpoints_of_one_certificate_share_a_context_but_check_their_own_fingerprint(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    """One SSL.Context per certificate (memory per peer), yet each endpoint verifies the
    fingerprint its own SDP gave: interleaved handshakes on the shared context, one with an
    impostor client, one genuine, are decided independently."""
    impostor = DtlsCertificate.generate(NOT_BEFORE)
    bad_client, bad_server = make_pair(impostor, server_cert, server_expects=client_cert.fingerprint_sha256())
    good_client, good_server = make_pair(client_cert, server_cert)
    assert bad_server._conn is not None and good_server._conn is not None
    assert bad_server._conn.get_context() is good_server._conn.get_context()
    bad, good = Net(bad_client, bad_server), Net(good_client, good_server)
    bad_client.start(0.0)
    good_client.start(0.0)
    for _ in range(10):
        bad.pump(0.0)
        good.pump(0.0)
    assert good_server.state is good_client.state is DtlsState.CONNECTED
    assert bad_server.state is DtlsState.FAILED
    failed = [e for e in bad.events["server"] if isinstance(e, DtlsFailed)]
    assert failed and "fingerprint" in failed[0].reason
    # A new endpoint on the same context after both: still its own decision.
    late_client, late_server = make_pair(client_cert, server_cert)
    late = Net(late_client, late_server)
    late.run()
    assert late_server.state is DtlsState.CONNECTED


def test_rsa_client_certificate_accepted(server_cert: DtlsCertificate) -> None:
    rsa_cert = rsa_certificate()
    client, server = make_pair(rsa_cert, server_cert)
    net = Net(client, server)
    net.run()
    assert client.state is server.state is DtlsState.CONNECTED
    assert net.connected("server").profile is SrtpProfile.AEAD_AES_128_GCM


def test_rsa_server_certificate_accepted(client_cert: DtlsCertificate) -> None:
    client, server = make_pair(client_cert, rsa_certificate())
    net = Net(client, server)
    net.run()
    assert client.state is server.state is DtlsState.CONNECTED


def test_lost_first_flight_is_retransmitted_on_timeout(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server = make_pair(client_cert, server_cert)
    net = Net(client, server, drop=lambda role, n, _d: role == "client" and n == 0)
    client.start(0.0)
    net.pump(0.0)
    assert client.state is DtlsState.HANDSHAKING and server.state is DtlsState.NEW
    assert client.next_deadline() == 1.0  # RFC 6347 s4.2.4.1 initial timer
    client.handle_timeout(0.5)  # too early: nothing happens
    assert client.poll_transmit() is None
    client.handle_timeout(1.0)
    assert client.retransmissions == 1
    net.pump(1.0)
    assert state_now(client) is state_now(server) is DtlsState.CONNECTED
    assert net.connected("client").local_keying == net.connected("server").remote_keying


def test_lost_server_flight_recovered(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    client, server = make_pair(client_cert, server_cert)
    net = Net(client, server, drop=lambda role, n, _d: role == "server" and n == 0)
    end = net.run()
    assert client.state is server.state is DtlsState.CONNECTED
    assert 1.0 <= end < 10.0
    assert client.retransmissions + server.retransmissions >= 1


def test_lost_final_flight_recovered(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    client, server = make_pair(client_cert, server_cert)
    dropped: list[int] = []

    def drop_final(role: str, n: int, _d: bytes) -> bool:
        # The server's ChangeCipherSpec/Finished flight is the first datagram it sends
        # after receiving the client's second flight.
        if role == "server" and server.state is DtlsState.CONNECTED and not dropped:
            dropped.append(n)
            return True
        return False

    net = Net(client, server, drop=drop_final)
    end = net.run()
    assert dropped == [1]
    # The client's timer resends flight 5; the server sees epoch-0 handshake records after
    # finishing and resends its final flight (RFC 6347 s4.2.4).
    assert client.state is server.state is DtlsState.CONNECTED
    assert end == 1.0
    assert client.retransmissions == 1 and server.retransmissions == 1
    assert net.connected("client").local_keying == net.connected("server").remote_keying


def test_handshake_gives_up_when_everything_is_lost(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    client, server = make_pair(client_cert, server_cert)
    net = Net(client, server, drop=lambda _r, _n, _d: True)
    end = net.run(until=1000.0)
    assert client.state is DtlsState.FAILED
    assert any(isinstance(e, DtlsFailed) and "timed out" in e.reason for e in net.events["client"])
    assert client.retransmissions == 6
    assert end == pytest.approx(1 + 2 + 4 + 8 + 16 + 32 + 60)  # exponential backoff, capped


def test_garbage_datagrams_are_counted_and_do_not_break_handshake(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server = make_pair(client_cert, server_cert)
    garbage = [
        b"",
        b"\x16",
        b"\x16\xfe\xfd" + b"\x00" * 5,  # truncated record header
        b"\x17\xfe\xfd" + b"\x00" * 8 + b"\x40\x00",  # length beyond the datagram
        b"\x40" + os.urandom(60),  # content type out of range
        b"\x16\x03\x03" + b"\x00" * 10,  # TLS, not DTLS, version
    ]
    inject = iter(garbage * 2)

    class Noisy(Net):
        def pump(self, now: float) -> None:
            for d in (next(inject, None), next(inject, None)):
                if d is not None:
                    self.client.handle_datagram(now, d)
                    self.server.handle_datagram(now, d)
            super().pump(now)

    net = Noisy(client, server)
    net.run()
    for _ in range(len(garbage)):
        net.pump(0.0)
    assert client.state is server.state is DtlsState.CONNECTED
    assert client.malformed_datagrams + server.malformed_datagrams == 4 * len(garbage)
    # An undecryptable application record after the handshake is discarded by OpenSSL.
    client.handle_datagram(0.0, b"\x17\xfe\xfd\x00\x01" + b"\x00" * 5 + b"\x09\x00\x20" + os.urandom(32))
    assert client.state is DtlsState.CONNECTED
    assert client.poll_event() is None


def test_application_data_both_ways_and_close_notify(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server = make_pair(client_cert, server_cert)
    net = Net(client, server)
    net.run()
    with pytest.raises(LocalProtocolError):
        client.send_application_data(b"x" * (client.max_application_data + 1))
    client.send_application_data(b"hello server")
    server.send_application_data(b"hello client")
    big = os.urandom(client.max_application_data)
    client.send_application_data(big)
    net.pump(0.0)
    assert [e.data for e in net.events["server"] if isinstance(e, DtlsApplicationData)] == [b"hello server", big]
    assert [e.data for e in net.events["client"] if isinstance(e, DtlsApplicationData)] == [b"hello client"]
    assert max(net.sizes) <= 1200
    client.close()
    net.pump(0.0)
    assert client.state is server.state is DtlsState.CLOSED
    assert isinstance(net.events["server"][-1], DtlsClosed)
    assert isinstance(net.events["client"][-1], DtlsClosed)
    with pytest.raises(LocalProtocolError):
        server.send_application_data(b"late")


def test_application_data_before_handshake_is_refused(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, _ = make_pair(client_cert, server_cert)
    with pytest.raises(LocalProtocolError):
        client.send_application_data(b"too early")


def test_remote_fingerprint_validation(client_cert: DtlsCertificate) -> None:
    fp = client_cert.fingerprint_sha256()
    with pytest.raises(DtlsError):
        DtlsEndpoint("server", client_cert, [("sha-256", "AB:CD")])
    with pytest.raises(DtlsError):
        DtlsEndpoint("server", client_cert, [("md5", "AB:" * 15 + "CD")])
    with pytest.raises(DtlsError):
        DtlsEndpoint("server", client_cert, [])
    # Case-insensitive input; the strongest offered hash function is chosen (RFC 8122 s5).
    ep = DtlsEndpoint("server", client_cert, [("SHA-256", fp.lower()), ("sha-512", client_cert.fingerprint("sha-512"))])
    assert ep.local_fingerprint_algorithm == "sha-512"
    with pytest.raises(LocalProtocolError):
        DtlsEndpoint("peer", client_cert, [("sha-256", fp)])  # type: ignore[arg-type]


def test_without_srtp_profiles_connects_for_data_channels(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server = make_pair(client_cert, server_cert, client_profiles=())
    net = Net(client, server)
    net.run()
    event = net.connected("client")
    assert event.profile is None and event.local_keying == b""


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_split_records_never_raises_and_roundtrips(data: bytes) -> None:
    records = split_records(data)
    if records is not None:
        assert b"".join(records) == data
        assert all(len(r) >= 13 and r[1] == 0xFE for r in records)


@settings(max_examples=100, deadline=None)
@given(datagrams=st.lists(st.binary(min_size=1, max_size=200), max_size=5))
def test_server_survives_arbitrary_datagrams(server_cert: DtlsCertificate, datagrams: list[bytes]) -> None:
    server = DtlsEndpoint("server", server_cert, [("sha-256", server_cert.fingerprint_sha256())])
    for i, d in enumerate(datagrams):
        server.handle_datagram(float(i), d)  # must not raise
    while (event := server.poll_event()) is not None:
        assert isinstance(event, DtlsFailed | DtlsClosed)


# ---- releasing OpenSSL's connection after the handshake (issue 19) ----------------------------


def released_pair(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate, drop: Drop | None = None
) -> tuple[DtlsEndpoint, DtlsEndpoint, Net]:
    """A handshake whose server frees its OpenSSL connection the moment it connects, as a
    WHEP peer does (before any retransmission of the client's could reach OpenSSL)."""
    client, server = make_pair(client_cert, server_cert)
    net = Net(client, server, drop)
    connected = server._on_handshake_complete

    def release_on_connect() -> None:
        connected()
        assert server.release_connection()

    server._on_handshake_complete = release_on_connect  # type: ignore[method-assign]
    net.run()
    return client, server, net


def test_released_server_sends_a_close_notify_openssl_accepts(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server, net = released_pair(client_cert, server_cert)
    assert client.state is server.state is DtlsState.CONNECTED and server.connection_released
    server.close()  # sealed with our own record keys (RFC 5288), read by the client's OpenSSL
    net.pump(0.0)
    assert state_now(client) is DtlsState.CLOSED
    assert isinstance(net.events["client"][-1], DtlsClosed)
    assert isinstance(net.events["server"][-1], DtlsClosed)


def test_released_server_authenticates_and_answers_a_close_notify(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server, net = released_pair(client_cert, server_cert)
    sent = net.sent["server"]
    client.close()  # OpenSSL's close_notify; the server opens it without OpenSSL
    net.pump(0.0)
    assert server.state is DtlsState.CLOSED
    assert isinstance(net.events["server"][-1], DtlsClosed)
    assert net.sent["server"] == sent + 1  # its own close_notify in answer (RFC 5246 s7.2.1)


def test_released_server_resends_its_lost_final_flight(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    dropped: list[int] = []

    def drop_final(role: str, n: int, _d: bytes) -> bool:
        if role == "server" and n == 1 and not dropped:  # ChangeCipherSpec + Finished
            dropped.append(n)
            return True
        return False

    client, server, net = released_pair(client_cert, server_cert, drop_final)
    assert dropped == [1] and server.connection_released
    # RFC 6347 s4.2.4: the client's timer resends its flight at 1 s; the released server
    # answers with its copy of the final flight, which the client's OpenSSL accepts.
    assert client.state is server.state is DtlsState.CONNECTED
    assert client.retransmissions == 1 and server.retransmissions == 1
    assert net.connected("client").local_keying == net.connected("server").remote_keying
    server.close()  # the record sequence numbers go on after the resent Finished
    net.pump(1.0)
    assert state_now(client) is DtlsState.CLOSED


def test_released_server_resends_its_final_flight_each_time_it_is_lost(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    """The client's retransmitted flight carries its Finished (epoch 1, authenticated): that must
    not be taken as proof that ours arrived, or a second loss would leave the client stuck."""
    lost: list[int] = []

    def drop_final_twice(role: str, n: int, _d: bytes) -> bool:
        if role == "server" and server_connected() and len(lost) < 2:
            lost.append(n)
            return True
        return False

    client, server = make_pair(client_cert, server_cert)

    def server_connected() -> bool:
        return server.state is DtlsState.CONNECTED

    connected = server._on_handshake_complete

    def release_on_connect() -> None:
        connected()
        assert server.release_connection()

    server._on_handshake_complete = release_on_connect  # type: ignore[method-assign]
    net = Net(client, server, drop_final_twice)
    end = net.run()
    assert lost == [1, 2]
    assert client.state is DtlsState.CONNECTED and server.connection_released
    assert end == 1.0 + 2.0  # the client's timer: 1 s, then doubled (RFC 6347 s4.2.4.1)
    assert server.retransmissions == 2


def test_released_endpoint_drops_forged_records(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    client, server, net = released_pair(client_cert, server_cert)
    forged_alert = struct.pack("!BHHHIH", 21, 0xFEFD, 1, 0, 7, 26) + os.urandom(26)
    forged_data = struct.pack("!BHHHIH", 23, 0xFEFD, 1, 0, 8, 40) + os.urandom(40)
    server.handle_datagram(0.0, forged_alert)
    server.handle_datagram(0.0, forged_data)
    assert server.state is DtlsState.CONNECTED and server.ignored_datagrams == 2
    assert server.poll_event() is None
    client.close()
    net.pump(0.0)
    assert state_now(server) is DtlsState.CLOSED  # the genuine alert after the forged ones still counts


def test_released_endpoint_carries_application_data_both_ways(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    """A data channel's SCTP packets (RFC 8261) go on after the release: the client's OpenSSL records
    are opened, ours are sealed with the next sequence numbers and accepted by the client's OpenSSL."""
    client, server, net = released_pair(client_cert, server_cert)
    assert server.max_application_data == 1163  # 1200 - header 13 - explicit nonce 8 - tag 16 (RFC 5288)
    for i in range(3):
        client.send_application_data(b"to the server %d" % i)
        server.send_application_data(b"to the client %d" % i)
    net.pump(0.0)
    got_server = [e.data for e in net.events["server"] if isinstance(e, DtlsApplicationData)]
    got_client = [e.data for e in net.events["client"] if isinstance(e, DtlsApplicationData)]
    assert got_server == [b"to the server %d" % i for i in range(3)]
    assert got_client == [b"to the client %d" % i for i in range(3)]
    big = os.urandom(server.max_application_data)
    server.send_application_data(big)
    net.pump(0.0)
    assert max(net.sizes) <= 1200
    assert [e.data for e in net.events["client"] if isinstance(e, DtlsApplicationData)][-1] == big
    with pytest.raises(LocalProtocolError):
        server.send_application_data(big + b"x")
    server.close()
    net.pump(0.0)
    assert state_now(client) is DtlsState.CLOSED
    with pytest.raises(LocalProtocolError):
        server.send_application_data(b"after the close")


def test_released_endpoint_drops_replayed_records(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    """RFC 6347 s4.1.2.6: a record received already, or older than the 64-record window, is discarded."""
    client, server, _ = released_pair(client_cert, server_cert)
    records = []
    for i in range(70):
        client.send_application_data(b"record %d" % i)
        d = client.poll_transmit()
        assert d is not None
        records.append(d)
    server.handle_datagram(0.0, records[69])
    server.handle_datagram(0.0, records[69])  # a replay
    server.handle_datagram(0.0, records[5])  # 64 behind the highest: too old to tell
    server.handle_datagram(0.0, records[6])  # 63 behind: inside the window, not seen yet
    server.handle_datagram(0.0, records[6])
    got = [e.data for e in iter(server.poll_event, None) if isinstance(e, DtlsApplicationData)]
    assert got == [b"record 69", b"record 6"]
    assert server.ignored_datagrams == 3


def test_released_peers_fatal_alert_fails_the_association(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate
) -> None:
    client, server, _ = released_pair(client_cert, server_cert)
    assert client.release_connection()  # the client role keeps its write sequence too
    assert client._records is not None
    server.handle_datagram(0.0, client._records.seal(21, b"\x02\x28"))  # fatal handshake_failure
    assert server.state is DtlsState.FAILED
    assert server.poll_event() == DtlsFailed("peer sent fatal alert 40")


def test_release_needs_a_connected_aead_association(client_cert: DtlsCertificate, server_cert: DtlsCertificate) -> None:
    _, server = make_pair(client_cert, server_cert)
    assert not server.release_connection()  # not connected yet
    own = DtlsCertificate.generate(NOT_BEFORE)  # its shared context is this test's alone
    _shared_context(own, DEFAULT_SRTP_PROFILES).set_cipher_list(b"ECDHE-ECDSA-AES128-SHA")
    cbc_client = DtlsEndpoint("client", own, [("sha-256", server_cert.fingerprint_sha256())])
    cbc_server = DtlsEndpoint("server", server_cert, [("sha-256", own.fingerprint_sha256())])
    Net(cbc_client, cbc_server).run()
    assert cbc_server.state is DtlsState.CONNECTED
    assert not cbc_server.release_connection() and not cbc_server.connection_released  # CBC: keeps OpenSSL


@pytest.mark.parametrize(
    ("suite", "rsa"),
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", False),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", False),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", False),
        ("ECDHE-RSA-AES128-GCM-SHA256", True),
    ],
)
def test_released_record_keys_interoperate_with_openssl_per_suite(
    client_cert: DtlsCertificate, suite: str, rsa: bool
) -> None:
    server_cert = rsa_certificate() if rsa else DtlsCertificate.generate(NOT_BEFORE)
    own = DtlsCertificate.generate(NOT_BEFORE)
    _shared_context(own, DEFAULT_SRTP_PROFILES).set_cipher_list(suite.encode())
    client = DtlsEndpoint("client", own, [("sha-256", server_cert.fingerprint_sha256())])
    server = DtlsEndpoint("server", server_cert, [("sha-256", own.fingerprint_sha256())])
    net = Net(client, server)
    net.run()
    assert server._conn is not None and server._conn.get_cipher_name() == suite
    assert server.release_connection()
    server.close()
    net.pump(0.0)
    assert client.state is DtlsState.CLOSED  # OpenSSL authenticated our sealed close_notify


def test_prf_matches_a_published_tls12_vector() -> None:
    # The TLS 1.2 PRF (SHA-256) test vector circulated on the IETF TLS list (Joseph Birr-Pixton's set).
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = prf("sha256", secret, b"test label", seed, 100)
    assert out.hex().startswith("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a")


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.sampled_from([20, 21, 22, 23]), st.sampled_from([0, 1, 2]), st.binary(max_size=60)), max_size=4
    )
)
def test_released_server_survives_arbitrary_records(
    client_cert: DtlsCertificate, server_cert: DtlsCertificate, records: list[tuple[int, int, bytes]]
) -> None:
    """Well-formed record headers around arbitrary bodies: none authenticates, none raises, the
    association stays up; epoch-0 handshake records replay the final flight a bounded number of times."""
    _, server, _ = released_pair(client_cert, server_cert)
    for i, (content_type, epoch, body) in enumerate(records):
        header = struct.pack("!BHHHIH", content_type, 0xFEFD, epoch, 0, i, len(body))
        server.handle_datagram(0.0, header + body)
    assert server.state is DtlsState.CONNECTED
    assert server.retransmissions <= 6
    assert server.poll_event() is None


@given(data=st.binary(max_size=120), epoch=st.integers(0, 3))
def test_record_keys_open_never_raises_on_garbage(data: bytes, epoch: int) -> None:
    keys = record_keys(
        "ECDHE-ECDSA-AES128-GCM-SHA256", b"m" * 48, b"c" * 32, b"s" * 32, "server", epoch=epoch, write_sequence=0
    )
    assert keys is not None
    assert keys.open(data) is None
    peer = record_keys(
        "ECDHE-ECDSA-AES128-GCM-SHA256", b"m" * 48, b"c" * 32, b"s" * 32, "client", epoch=epoch, write_sequence=0
    )
    assert peer is not None
    assert peer.open(keys.seal(21, b"\x01\x00")) == (21, b"\x01\x00")  # what we seal, the other side opens
