"""Sans-IO DTLS 1.2 endpoint for WebRTC (RFC 6347, DTLS-SRTP RFC 5764, RFC 8827 s6.5).

:class:`DtlsEndpoint` wraps a pyOpenSSL ``Connection`` over memory BIOs: the driver feeds it
UDP payloads that RFC 7983 s7 demultiplexing classified as DTLS (first byte 20..63) with
:meth:`~DtlsEndpoint.handle_datagram`, sends whatever :meth:`~DtlsEndpoint.poll_transmit`
returns, and calls :meth:`~DtlsEndpoint.handle_timeout` at :meth:`~DtlsEndpoint.next_deadline`.
Results come out of :meth:`~DtlsEndpoint.poll_event`.

Peers are authenticated by the SDP ``a=fingerprint`` (RFC 8122 s5, RFC 8842 s5), not by a CA:
the verify callback accepts any self-signed certificate whose fingerprint matches, rejecting
(with a bad_certificate alert) one that does not, and the fingerprint is checked again once
the handshake completes.

Datagram sizing: OpenSSL's memory BIO is a byte stream, so datagram boundaries are lost
between OpenSSL and us. We set the ciphertext MTU (``set_ciphertext_mtu``, with
``OP_NO_QUERY_MTU`` so OpenSSL keeps it) and re-split the BIO output at DTLS record
boundaries, packing whole records into datagrams of at most ``mtu`` bytes (RFC 6347 s4.1.1
allows several records per datagram).

Retransmission: OpenSSL's DTLS timer runs on the real wall clock, which the sans-IO core
cannot see or control (a virtual ``now`` may run ahead of it). We therefore keep our own
RFC 6347 s4.2.4.1 timer on ``now`` (1 s initial, doubling, capped at 60 s). When it expires
we first let OpenSSL retransmit (``DTLSv1_handle_timeout``, fresh record sequence numbers);
if its real-clock timer has not yet expired we resend our last flight's datagrams verbatim.
A verbatim copy is only dropped by the peer's replay window (RFC 6347 s4.1.2.6) if the
original arrived; then the peer's response was lost, and the peer's own timer resends it.
The one flight with no timer behind it is the last one (RFC 6347 s4.2.4): the side that sent
it resends it when the peer's retransmitted handshake records show it was lost.

Releasing OpenSSL (issue 19): OpenSSL's connection object is about 90 KB per association even
idle. A peer calls :meth:`DtlsEndpoint.release_connection` once connected; the endpoint then keeps
only what the association still needs: its copy of the final flight (resent verbatim, as above, when
the peer retransmits its last flight) and the epoch-1 record keys (:mod:`.records`, AEAD suites
only), with which it protects and opens application data (a data channel's SCTP packets, RFC 8261),
authenticates a close_notify or fatal alert and sends our own close_notify. DTLS 1.2 as WebRTC uses
it has nothing else after the handshake: no renegotiation (a handshake record of the current epoch
is dropped and counted), no new epoch.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.dtls.certificate import (
    DtlsCertificate,
    format_fingerprint,
    supported_fingerprint_algorithms,
)
from trackmesh.transports.webrtc.dtls.records import ALERT, APPLICATION_DATA, RecordKeys, record_keys

__all__ = [
    "DEFAULT_MTU",
    "DEFAULT_SRTP_PROFILES",
    "DtlsApplicationData",
    "DtlsClosed",
    "DtlsConnected",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsEvent",
    "DtlsFailed",
    "DtlsState",
    "split_records",
]

Role = Literal["client", "server"]

#: Path-MTU-safe datagram size; leaves room for IP/UDP/TURN headers on a 1280-byte path.
DEFAULT_MTU: Final = 1200
#: GCM first (cheaper, RFC 7714); the DTLS server picks among what the client offers.
DEFAULT_SRTP_PROFILES: Final = (SrtpProfile.AEAD_AES_128_GCM, SrtpProfile.AES128_CM_SHA1_80)

# pyOpenSSL exposes no DTLS version constants; 0xFEFD is DTLS 1.2 on the wire (RFC 6347 s4.1).
_DTLS1_2_VERSION: Final = 0xFEFD
# Forward-secret ECDHE suites for both certificate types: browsers use ECDSA, GStreamer's
# webrtcbin uses RSA. AEAD suites first (RFC 7525 s4.2).
_CIPHERS: Final = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"
)
_EXPORTER_LABEL: Final = b"EXTRACTOR-dtls_srtp"  # RFC 5764 s4.2
_INITIAL_RTO: Final = 1.0  # RFC 6347 s4.2.4.1
_MAX_RTO: Final = 60.0  # RFC 6347 s4.2.4.1
_RECORD_HEADER: Final = 13  # type(1) version(2) epoch(2) sequence_number(6) length(2)
_MAX_RECORD_BODY: Final = 16384 + 2048  # RFC 6347 s4.1 / RFC 5246 s6.2.3 ciphertext limit
_READ_SIZE: Final = 16384  # the largest DTLS plaintext record (RFC 5246 s6.2.1)


class DtlsError(RemoteProtocolError):
    """Remote DTLS parameters (e.g. SDP fingerprints) we cannot accept."""


class DtlsState(enum.Enum):
    NEW = "new"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DtlsConnected:
    """Handshake complete; SRTP keying material split per RFC 5764 s4.2.

    ``local_keying``/``remote_keying`` are master key || master salt for what we send and
    what the peer sends. ``profile`` is None (and the keying empty) if the peer did not
    negotiate use_srtp, e.g. a data-channel-only session.
    """

    role: Role
    profile: SrtpProfile | None
    local_keying: bytes
    remote_keying: bytes


@dataclass(frozen=True, slots=True)
class DtlsFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class DtlsClosed:
    """The association ended: close_notify received (or sent by :meth:`DtlsEndpoint.close`)."""


@dataclass(frozen=True, slots=True)
class DtlsApplicationData:
    data: bytes


DtlsEvent = DtlsConnected | DtlsFailed | DtlsClosed | DtlsApplicationData


def split_records(data: bytes) -> list[bytes] | None:
    """Split a DTLS datagram into records, or return None if it is not well formed.

    Checks only the RFC 6347 s4.1 record header: a content type from 20 (change_cipher_spec)
    to 26, a DTLS major version byte 0xFE and a length that fits. Decryption and MAC checks
    are OpenSSL's job; this keeps obvious garbage away from its state machine.
    """
    records: list[bytes] = []
    offset = 0
    total = len(data)
    while offset < total:
        if total - offset < _RECORD_HEADER:
            return None
        content_type = data[offset]
        if not 20 <= content_type <= 26 or data[offset + 1] != 0xFE:
            return None
        length = (data[offset + 11] << 8) | data[offset + 12]
        end = offset + _RECORD_HEADER + length
        if length > _MAX_RECORD_BODY or end > total:
            return None
        records.append(data[offset:end])
        offset = end
    return records or None


def _openssl_reason(exc: SSL.Error) -> str:
    """A readable reason from pyOpenSSL's ``[(lib, func, reason), ...]`` error list."""
    errors = exc.args[0] if exc.args else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(e[-1]) if isinstance(e, tuple) else str(e) for e in errors)
    return str(exc) or type(exc).__name__


def _normalise_fingerprints(remote: Sequence[tuple[str, str]]) -> tuple[str, frozenset[str]]:
    """Pick the fingerprint set to verify against (RFC 8122 s5).

    RFC 8122 s5: use the set with our most preferred hash function among those offered,
    and never MD2/MD5; if no offered hash function is supported the connection must not be
    established.
    """
    by_algorithm: dict[str, set[str]] = {}
    for algorithm, fingerprint in remote:
        name = algorithm.strip().lower()
        value = fingerprint.strip().upper()
        if name not in supported_fingerprint_algorithms():
            continue  # unknown or forbidden (md5) hash function: ignore, per RFC 8122 s5
        size = hashlib.new(name.replace("-", "")).digest_size
        parts = value.split(":")
        if len(parts) != size or not all(len(p) == 2 and all(c in "0123456789ABCDEF" for c in p) for p in parts):
            raise DtlsError(f"malformed {name} fingerprint {fingerprint!r}")
        by_algorithm.setdefault(name, set()).add(value)
    for name in supported_fingerprint_algorithms():
        if name in by_algorithm:
            return name, frozenset(by_algorithm[name])
    raise DtlsError("no remote fingerprint with a supported hash function (RFC 8122 s5)")


#: One SSL.Context per (certificate, SRTP profiles), shared by every endpoint using them: a
#: context costs tens of kilobytes of OpenSSL memory, and a worker has one certificate.
_CONTEXTS: weakref.WeakKeyDictionary[DtlsCertificate, dict[tuple[SrtpProfile, ...], SSL.Context]] = (
    weakref.WeakKeyDictionary()
)


def _shared_context(certificate: DtlsCertificate, profiles: tuple[SrtpProfile, ...]) -> SSL.Context:
    by_profiles = _CONTEXTS.setdefault(certificate, {})
    ctx = by_profiles.get(profiles)
    if ctx is not None:
        return ctx
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_min_proto_version(_DTLS1_2_VERSION)
    ctx.set_max_proto_version(_DTLS1_2_VERSION)  # DTLS 1.3 is not in WebRTC (RFC 8827)
    ctx.use_certificate(certificate.certificate)
    ctx.use_privatekey(certificate.private_key)
    ctx.check_privatekey()
    ctx.set_cipher_list(_CIPHERS)
    # No session resumption: every association proves its certificate against the SDP
    # fingerprint (RFC 8122 s5), and a shared context must not accumulate peers' sessions.
    ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # Free each connection's record buffers while it is idle (most of a connected peer's
    # OpenSSL memory: media is SRTP, outside DTLS).
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if profiles:
        ctx.set_tlsext_use_srtp(b":".join(p.value.encode() for p in profiles))
    # RFC 8827 s6.5: both sides present certificates; the server must ask for the client's.
    # Chain validation is meaningless for self-signed certificates, so the callback decides
    # on the fingerprint alone, per endpoint.
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
    by_profiles[profiles] = ctx
    return ctx


def _verify_callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    # Must never raise: pyOpenSSL re-raises a callback's exception from the shared context's
    # helper, which could surface in another connection's call.
    try:
        ref = conn.get_app_data()
        endpoint = ref() if isinstance(ref, weakref.ref) else None
        return isinstance(endpoint, DtlsEndpoint) and endpoint._verify(conn, cert, errno, depth, ok)
    except Exception:
        return False


class DtlsEndpoint:
    """One DTLS 1.2 association, as DTLS ``"client"`` or ``"server"`` (RFC 5763 s5 setup)."""

    def __init__(
        self,
        role: Role,
        certificate: DtlsCertificate,
        remote_fingerprints: Sequence[tuple[str, str]],
        srtp_profiles: Sequence[SrtpProfile] = DEFAULT_SRTP_PROFILES,
        *,
        mtu: int = DEFAULT_MTU,
        max_retransmissions: int = 6,
    ) -> None:
        if role not in ("client", "server"):
            raise LocalProtocolError(f"DTLS role must be 'client' or 'server', not {role!r}")
        self.role: Role = role
        self._algorithm, self._fingerprints = _normalise_fingerprints(remote_fingerprints)
        self._profiles = tuple(srtp_profiles)
        self._mtu = mtu
        self._max_retransmissions = max_retransmissions

        ctx = _shared_context(certificate, self._profiles)
        # None once released (see release_connection); _records then protects alerts.
        self._conn: SSL.Connection | None = SSL.Connection(ctx, None)
        # The shared context's verify callback finds this endpoint through the connection
        # (weakly, so the endpoint is not kept alive by a cycle through OpenSSL's objects).
        self._conn.set_app_data(weakref.ref(self))
        if role == "client":
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self._conn.set_ciphertext_mtu(mtu)

        self.state = DtlsState.NEW
        self._transmit: deque[bytes] = deque()
        self._events: deque[DtlsEvent] = deque()
        self._last_flight: list[bytes] = []
        self._final_flight: list[bytes] = []
        self._final_resends = 0
        self._deadline: float | None = None
        self._rto = _INITIAL_RTO
        self._timeouts = 0
        self._fingerprint_rejected = False
        self._records: RecordKeys | None = None
        # Highest (epoch, sequence number) + 1 of what OpenSSL sent: where our own records go on.
        self._write_epoch = 0
        self._write_sequence = 0
        self.malformed_datagrams = 0
        self.ignored_datagrams = 0
        self.retransmissions = 0
        self.datagrams_sent = 0

    # -- public API -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the ClientHello (client role). For the server this is a no-op."""
        if self.state is not DtlsState.NEW or self.role == "server":
            return
        self.state = DtlsState.HANDSHAKING
        self._step_handshake(now)

    def handle_datagram(self, now: float, data: bytes) -> None:
        """Feed one UDP payload classified as DTLS. Garbage is dropped and counted."""
        if split_records(data) is None:
            self.malformed_datagrams += 1
            return
        if self.state is DtlsState.NEW:
            if self.role == "client":
                # Nothing valid can arrive before our ClientHello.
                self.ignored_datagrams += 1
                return
            self.state = DtlsState.HANDSHAKING
        elif self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            self.ignored_datagrams += 1
            return
        if self._conn is None:
            self._handle_released(data)
            return
        self._conn.bio_write(data)
        was_connected = self.state is DtlsState.CONNECTED
        if self.state is DtlsState.HANDSHAKING:
            self._step_handshake(now)
        if self.state is DtlsState.CONNECTED:
            self._read_application_data()
            resent = self._drain_bio()
            if was_connected and not resent:
                self._resend_final_flight(data)

    def _resend_final_flight(self, data: bytes) -> None:
        if self._final_flight and data[0] == 22 and data[3:5] == b"\0\0":
            # An epoch-0 handshake record after we finished is the peer retransmitting
            # its last flight: ours was lost (RFC 6347 s4.2.4). OpenSSL only answers once
            # its real-clock timer allows, and drops a verbatim copy as a replay, so we
            # resend our final flight ourselves (bounded, so it cannot be used to loop).
            self._transmit.extend(self._final_flight)
            self.retransmissions += 1
            self._final_resends += 1
            if self._final_resends >= self._max_retransmissions:
                self._final_flight = []

    def _handle_released(self, data: bytes) -> None:
        """A datagram after :meth:`release_connection`: the peer's retransmitted last flight, or
        records of the current epoch: application data and alerts."""
        keys = self._records
        assert keys is not None
        self._resend_final_flight(data)
        for record in split_records(data) or ():
            if (record[3] << 8 | record[4]) != keys.epoch:
                continue  # epoch 0: the retransmitted handshake handled above
            opened = keys.open(record)
            if opened is None:
                # Fails authentication (RFC 6347 s4.1.2.7: discard) or a replay (s4.1.2.6).
                self.ignored_datagrams += 1
                continue
            content_type, plaintext = opened
            if content_type == APPLICATION_DATA:
                # Application data proves the peer finished, so our final flight arrived. Not
                # its Finished (handshake, epoch 1): that one comes with each retransmission.
                self._final_flight = []
                if plaintext:
                    self._events.append(DtlsApplicationData(plaintext))
                continue
            if content_type != ALERT or len(plaintext) != 2:
                self.ignored_datagrams += 1  # a retransmitted Finished, or renegotiation: not done
                continue
            level, description = plaintext
            if description == 0:  # close_notify: answer with ours (RFC 5246 s7.2.1)
                self._send_close_notify()
                self.state = DtlsState.CLOSED
                self._events.append(DtlsClosed())
                return
            if level == 2:  # fatal (RFC 5246 s7.2)
                self._fail(f"peer sent fatal alert {description}")
                return

    def release_connection(self) -> bool:
        """Free OpenSSL's connection of a connected association (application data and alerts go
        on with our own record layer); False (and nothing changes) when not connected or when the
        cipher suite is not an AEAD one :mod:`.records` can protect records with."""
        conn = self._conn
        if conn is None or self.state is not DtlsState.CONNECTED or self._write_epoch == 0:
            return False
        master, client_random, server_random = conn.master_key(), conn.client_random(), conn.server_random()
        name = conn.get_cipher_name()
        if master is None or client_random is None or server_random is None or name is None:
            return False
        keys = record_keys(
            name, master, client_random, server_random, self.role,
            epoch=self._write_epoch, write_sequence=self._write_sequence,
        )  # fmt: skip
        if keys is None:
            return False
        self._records = keys
        self._conn = None
        return True

    @property
    def connection_released(self) -> bool:
        """True once :meth:`release_connection` freed OpenSSL's connection."""
        return self._conn is None

    def poll_transmit(self) -> bytes | None:
        """The next datagram to send to the peer, or None."""
        if self._transmit:
            self.datagrams_sent += 1
            return self._transmit.popleft()
        return None

    def poll_event(self) -> DtlsEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` should next be called (handshake retransmission)."""
        return self._deadline if self.state is DtlsState.HANDSHAKING else None

    def handle_timeout(self, now: float) -> None:
        """Retransmit the last flight if its timer expired (RFC 6347 s4.2.4)."""
        if self.state is not DtlsState.HANDSHAKING or self._deadline is None or now < self._deadline:
            return
        self._timeouts += 1
        if self._timeouts > self._max_retransmissions:
            self._fail("handshake timed out")
            return
        assert self._conn is not None  # released only once connected
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(_openssl_reason(exc))
            return
        fresh = self._drain_bio()
        if fresh:
            self._last_flight = fresh
        else:
            # OpenSSL's real-clock timer has not fired yet; resend our copy of the flight.
            self._transmit.extend(self._last_flight)
        self.retransmissions += 1
        self._rto = min(self._rto * 2, _MAX_RTO)
        self._deadline = now + self._rto

    def send_application_data(self, data: bytes) -> None:
        """Send one application record (e.g. an SCTP packet, RFC 8261 s5)."""
        if self.state is not DtlsState.CONNECTED:
            raise LocalProtocolError(f"cannot send application data in state {self.state.value}")
        limit = self.max_application_data
        if len(data) > limit:
            raise LocalProtocolError(f"{len(data)} bytes exceeds the {limit}-byte DTLS payload limit")
        if self._conn is None:
            assert self._records is not None  # released only with record keys
            self._transmit.append(self._records.seal(APPLICATION_DATA, data))
            return
        try:
            self._conn.send(data)
        except SSL.Error as exc:
            self._fail(_openssl_reason(exc))
            return
        self._flush_output()

    @property
    def max_application_data(self) -> int:
        """Largest :meth:`send_application_data` payload that fits in one ``mtu`` datagram."""
        if self._conn is not None:
            return int(self._conn.get_cleartext_mtu())
        return self._mtu - self._records.overhead if self._records is not None else 0

    def close(self) -> None:
        """Send close_notify (RFC 5246 s7.2.1) if connected and stop; emits :class:`DtlsClosed`."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return
        if self.state is DtlsState.CONNECTED:
            self._send_close_notify()
        self.state = DtlsState.CLOSED
        self._deadline = None
        self._events.append(DtlsClosed())

    @property
    def local_fingerprint_algorithm(self) -> str:
        """The hash function chosen from the remote fingerprints (RFC 8122 s5)."""
        return self._algorithm

    # -- internals --------------------------------------------------------------------------

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if depth != 0:
            return True  # only the end-entity certificate is bound by the SDP fingerprint
        der = cert.to_cryptography().public_bytes(Encoding.DER)
        if self._matches(der):
            return True
        self._fingerprint_rejected = True
        return False

    def _matches(self, der: bytes) -> bool:
        digest = hashlib.new(self._algorithm.replace("-", ""), der).digest()
        return format_fingerprint(digest) in self._fingerprints

    def _step_handshake(self, now: float) -> None:
        assert self._conn is not None  # released only once connected
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            self._flush_output()  # deliver our fatal alert, if OpenSSL produced one
            if self._fingerprint_rejected:
                self._fail("peer certificate does not match the SDP fingerprint")
            else:
                self._fail(_openssl_reason(exc))
            return
        else:
            done = True
        flight = self._drain_bio()
        if done:
            # Kept so a lost final flight can be resent when the peer retransmits its own.
            self._final_flight = flight
        if flight:
            # New output means the peer's flight got through: restart the timer at 1 s.
            self._last_flight = flight
            self._rto = _INITIAL_RTO
            self._timeouts = 0
            self._deadline = now + self._rto
        if done:
            self._on_handshake_complete()

    def _on_handshake_complete(self) -> None:
        # Defence in depth: re-check the fingerprint on the certificate the session holds
        # (RFC 8122 s5), in case a verify callback was bypassed (e.g. session resumption).
        assert self._conn is not None
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is None or not self._matches(peer.public_bytes(Encoding.DER)):
            self._send_close_notify()
            self._fail("peer certificate does not match the SDP fingerprint")
            return
        self.state = DtlsState.CONNECTED
        self._deadline = None
        self._last_flight = []  # only resent while handshaking; _final_flight covers the rest
        self._events.append(self._connected_event())

    def _connected_event(self) -> DtlsConnected:
        assert self._conn is not None
        name = self._conn.get_selected_srtp_profile()
        if not name:
            return DtlsConnected(self.role, None, b"", b"")
        profile = SrtpProfile.from_openssl_name(name.decode())
        k, s = profile.key_length, profile.salt_length
        material = self._conn.export_keying_material(_EXPORTER_LABEL, 2 * (k + s))
        # RFC 5764 s4.2: client_write_key | server_write_key | client_salt | server_salt.
        client = material[:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s :]
        if self.role == "client":
            return DtlsConnected(self.role, profile, client, server)
        return DtlsConnected(self.role, profile, server, client)

    def _read_application_data(self) -> None:
        while self.state is DtlsState.CONNECTED and self._conn is not None:
            try:
                data = self._conn.recv(_READ_SIZE)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                # close_notify: answer with ours (RFC 5246 s7.2.1) and report the close.
                self._send_close_notify()
                self.state = DtlsState.CLOSED
                self._events.append(DtlsClosed())
                return
            except SSL.Error as exc:
                self._flush_output()
                self._fail(_openssl_reason(exc))
                return
            # Decrypted data proves the peer has our keys, so our final flight arrived.
            self._final_flight = []
            self._events.append(DtlsApplicationData(data))

    def _fail(self, reason: str) -> None:
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return
        self.state = DtlsState.FAILED
        self._deadline = None
        self._events.append(DtlsFailed(reason))

    def _send_close_notify(self) -> None:
        if self._conn is None:
            if self._records is not None:
                self._transmit.append(self._records.seal(ALERT, b"\x01\x00"))  # warning, close_notify
            return
        # Best effort: an error only means no alert was queued, and we are leaving anyway.
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()
        self._flush_output()

    def _flush_output(self) -> None:
        self._drain_bio()

    def _drain_bio(self) -> list[bytes]:
        """Move OpenSSL's output into MTU-sized datagrams; return the datagrams added."""
        if self._conn is None:
            return []
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        output = b"".join(chunks)
        records = split_records(output)
        if records is None:  # cannot happen with OpenSSL's own output; send it as-is
            records = [output]
        else:
            for record in records:
                epoch, following = record[3] << 8 | record[4], int.from_bytes(record[5:11], "big") + 1
                if epoch > self._write_epoch:
                    self._write_epoch, self._write_sequence = epoch, following
                elif epoch == self._write_epoch and following > self._write_sequence:
                    self._write_sequence = following
        datagrams: list[bytes] = []
        current = b""
        for record in records:
            if current and len(current) + len(record) > self._mtu:
                datagrams.append(current)
                current = b""
            current += record
        if current:
            datagrams.append(current)
        self._transmit.extend(datagrams)
        return datagrams
