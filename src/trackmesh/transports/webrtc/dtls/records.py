"""DTLS 1.2 AEAD record protection for a connection whose OpenSSL object was freed (issue 19).

A WebRTC peer uses DTLS for its handshake: media keys come from the exporter (RFC 5764 s4.2) and
media is SRTP. What still travels on the DTLS association after the handshake is application data
(SCTP packets of the data channels, RFC 8261, for a peer that has them), alerts (close_notify,
RFC 5246 s7.2.1) and the peer's retransmitted last flight (RFC 6347 s4.2.4, answered by
:class:`~.endpoint.DtlsEndpoint` with a copy of ours). OpenSSL's connection object holds about 90 KB
per peer for that; this module holds the epoch-1 record keys (a few dozen bytes, and the two AEAD
contexts once used) so that records can be protected, authenticated and answered without it.

Replay (RFC 6347 s4.1.2.6): records that authenticate are checked against a 64-record sliding
window of the peer's sequence numbers, as OpenSSL does; one already received, or older than the
window, is discarded. The window starts at the release, so a record OpenSSL already delivered
could be delivered once more; what is carried (SCTP) drops duplicated chunks by TSN (RFC 4960 s6.2).

Only AEAD cipher suites are covered (AES-GCM, RFC 5288; ChaCha20-Poly1305, RFC 7905), the ones
browsers and our own list put first; for the CBC suites :func:`record_keys` returns None and the
endpoint keeps its OpenSSL connection.

- Key expansion, RFC 5246 s6.3: key_block = PRF(master_secret, "key expansion", server_random +
  client_random), cut into client/server write keys then client/server write IVs (AEAD suites
  have no MAC keys). PRF is RFC 5246 s5's P_SHA256 (P_SHA384 for the -SHA384 suites).
- Record header, RFC 6347 s4.1: type(1) version(2) epoch(2) sequence_number(6) length(2); the
  64-bit epoch||sequence_number stands where TLS has its implicit sequence number (s4.1.2.1).
- AES-GCM, RFC 5288 s3: nonce = write_IV(4) || explicit nonce(8), the explicit nonce sent ahead of
  the ciphertext (OpenSSL sends epoch||sequence_number there, as we do); additional data, RFC 5246
  s6.2.3.3: seq_num(8) || type || version || plaintext length.
- ChaCha20-Poly1305, RFC 7905 s2: nonce = write_IV(12) XOR seq_num(8) left-padded; no explicit nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = ["ALERT", "APPLICATION_DATA", "DTLS1_2_VERSION", "RecordKeys", "overhead", "prf", "record_keys"]

#: RFC 5246 s6.2.1 content types of alerts and application data.
ALERT: Final = 21
APPLICATION_DATA: Final = 23
#: Replay window, in records (RFC 6347 s4.1.2.6: at least 32, 64 preferred).
REPLAY_WINDOW: Final = 64
#: DTLS 1.2 on the wire (RFC 6347 s4.1).
DTLS1_2_VERSION: Final = 0xFEFD
_HEADER: Final = struct.Struct("!BHHHIH")  # type, version, epoch, sequence_number (16 + 32 bits), length
_TAG: Final = 16
_EXPLICIT_NONCE: Final = 8
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1

# OpenSSL cipher name -> (AEAD, key length, fixed IV length, PRF hash).
_SUITES: Final[dict[str, tuple[Literal["gcm", "chacha"], int, int, str]]] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": ("gcm", 16, 4, "sha256"),
    "ECDHE-RSA-AES128-GCM-SHA256": ("gcm", 16, 4, "sha256"),
    "ECDHE-ECDSA-AES256-GCM-SHA384": ("gcm", 32, 4, "sha384"),
    "ECDHE-RSA-AES256-GCM-SHA384": ("gcm", 32, 4, "sha384"),
    "ECDHE-ECDSA-CHACHA20-POLY1305": ("chacha", 32, 12, "sha256"),
    "ECDHE-RSA-CHACHA20-POLY1305": ("chacha", 32, 12, "sha256"),
}


def prf(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """TLS 1.2 PRF (RFC 5246 s5): P_hash(secret, label + seed) truncated to ``length`` bytes."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, hash_name).digest()
        out += hmac.new(secret, a + seed, hash_name).digest()
    return out[:length]


@dataclass(slots=True)
class RecordKeys:
    """Epoch-``epoch`` keys of one side of a DTLS 1.2 association with an AEAD cipher suite."""

    aead: Literal["gcm", "chacha"]
    epoch: int
    write_key: bytes
    write_iv: bytes
    read_key: bytes
    read_iv: bytes
    #: The sequence number of the next record we send in ``epoch`` (RFC 6347 s4.1).
    write_sequence: int
    #: The highest sequence number read in ``epoch`` (-1: none yet) and the window below it (bit i:
    #: ``read_highest - i`` was read), RFC 6347 s4.1.2.6.
    read_highest: int = -1
    read_window: int = 0
    # The AEAD contexts, made on first use (a peer without a data channel may never need them).
    _write_cipher: AESGCM | ChaCha20Poly1305 | None = field(default=None, repr=False)
    _read_cipher: AESGCM | ChaCha20Poly1305 | None = field(default=None, repr=False)

    def _nonce(self, iv: bytes, seq_num: bytes) -> bytes:
        if self.aead == "gcm":
            return iv + seq_num
        padded = b"\0\0\0\0" + seq_num
        return bytes(a ^ b for a, b in zip(iv, padded, strict=True))

    def _cipher(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return AESGCM(key) if self.aead == "gcm" else ChaCha20Poly1305(key)

    @property
    def overhead(self) -> int:
        """Bytes a record adds to its plaintext: header, explicit nonce (GCM) and tag."""
        return overhead(self.aead)

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """One protected record of ``content_type`` (RFC 6347 s4.1), sent with the next sequence number."""
        if self.write_sequence >= 1 << 48:
            raise OverflowError("DTLS sequence numbers exhausted (RFC 6347 s4.1)")
        seq = self.write_sequence
        self.write_sequence += 1
        seq_num = struct.pack("!HHI", self.epoch, seq >> 32, seq & 0xFFFFFFFF)
        aad = seq_num + struct.pack("!BHH", content_type, DTLS1_2_VERSION, len(plaintext))
        cipher = self._write_cipher
        if cipher is None:
            cipher = self._write_cipher = self._cipher(self.write_key)
        sealed = cipher.encrypt(self._nonce(self.write_iv, seq_num), plaintext, aad)
        body = seq_num + sealed if self.aead == "gcm" else sealed  # RFC 5288 s3: explicit nonce first
        header = _HEADER.pack(content_type, DTLS1_2_VERSION, self.epoch, seq >> 32, seq & 0xFFFFFFFF, len(body))
        return header + body

    def open(self, record: bytes) -> tuple[int, bytes] | None:
        """(content type, plaintext) of one whole record from the peer, or None if it is not of
        this epoch, fails authentication (RFC 6347 s4.1.2.7: invalid records are discarded) or
        was received already (s4.1.2.6)."""
        if len(record) < _HEADER.size:
            return None
        content_type, _version, epoch, seq_hi, seq_lo, length = _HEADER.unpack_from(record)
        if epoch != self.epoch or len(record) != _HEADER.size + length:
            return None
        seq = seq_hi << 32 | seq_lo
        highest = self.read_highest
        if seq <= highest and (highest - seq >= REPLAY_WINDOW or self.read_window >> (highest - seq) & 1):
            return None  # a replay, or too old to tell (s4.1.2.6), checked before the MAC as allowed
        seq_num = record[3:11]
        body = record[_HEADER.size :]
        if self.aead == "gcm":
            if len(body) < _EXPLICIT_NONCE + _TAG:
                return None
            nonce = self.read_iv + body[:_EXPLICIT_NONCE]
            body = body[_EXPLICIT_NONCE:]
        else:
            if len(body) < _TAG:
                return None
            nonce = self._nonce(self.read_iv, seq_num)
        aad = seq_num + struct.pack("!BHH", content_type, DTLS1_2_VERSION, len(body) - _TAG)
        cipher = self._read_cipher
        if cipher is None:
            cipher = self._read_cipher = self._cipher(self.read_key)
        try:
            plaintext = cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            return None
        # Only an authenticated record moves the window (s4.1.2.6), so forgeries cannot shift it.
        if seq > highest:
            shift = seq - highest
            self.read_window = ((self.read_window << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.read_highest = seq
        else:
            self.read_window |= 1 << (highest - seq)
        return content_type, plaintext


def overhead(aead: Literal["gcm", "chacha"]) -> int:
    """Bytes a DTLS 1.2 record of this AEAD adds to its plaintext (RFC 6347 s4.1, RFC 5288 s3, RFC 7905 s2)."""
    return _HEADER.size + _TAG + (_EXPLICIT_NONCE if aead == "gcm" else 0)


def record_keys(
    cipher_name: str,
    master_secret: bytes,
    client_random: bytes,
    server_random: bytes,
    role: Literal["client", "server"],
    *,
    epoch: int,
    write_sequence: int,
) -> RecordKeys | None:
    """The record keys of ``role`` for the negotiated suite (RFC 5246 s6.3), or None when the suite
    is not one of the AEAD suites this module protects records with."""
    suite = _SUITES.get(cipher_name)
    if suite is None:
        return None
    aead, key_length, iv_length, hash_name = suite
    hashlib.new(hash_name)  # fail loudly here, not on the first alert, if the hash is missing
    block = prf(hash_name, master_secret, b"key expansion", server_random + client_random, 2 * (key_length + iv_length))
    client_key, server_key = block[:key_length], block[key_length : 2 * key_length]
    client_iv = block[2 * key_length : 2 * key_length + iv_length]
    server_iv = block[2 * key_length + iv_length :]
    if role == "client":
        return RecordKeys(aead, epoch, client_key, client_iv, server_key, server_iv, write_sequence)
    return RecordKeys(aead, epoch, server_key, server_iv, client_key, client_iv, write_sequence)
