"""Self-signed DTLS certificates for WebRTC.

WebRTC authenticates DTLS peers by the certificate fingerprint carried in the signalled SDP
(RFC 8122 s5, RFC 8842 s5), not by a CA chain, so a throwaway self-signed certificate is all
we need. We use ECDSA P-256 like the browsers do: it is small (keeps the handshake flights
under the path MTU) and fast to sign with.

The module is sans-IO: the validity start is passed in by the driver (``not_before``), so no
clock is read here. One certificate per worker process is enough; callers that want to
tolerate peer clock skew may pass a ``not_before`` a day in the past.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

__all__ = [
    "VALIDITY",
    "DtlsCertificate",
    "PrivateKey",
    "certificate_fingerprint",
    "format_fingerprint",
    "supported_fingerprint_algorithms",
]

#: Key types usable for a DTLS certificate: ECDSA (ours) and RSA (e.g. GStreamer's webrtcbin).
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: How long a generated certificate is valid for.
VALIDITY = timedelta(days=30)

# RFC 8122 s5 hash function textual names mapped to hashlib names. MD2/MD5 are deliberately
# absent: RFC 8122 s5 forbids using them for fingerprints.
_HASHLIB_NAMES: dict[str, str] = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}


def format_fingerprint(digest: bytes) -> str:
    """Render a digest as RFC 8122 s5 ``fingerprint``: uppercase hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in digest)


def certificate_fingerprint(der: bytes, algorithm: str = "sha-256") -> str:
    """Fingerprint of a DER-encoded certificate with an RFC 8122 hash function name.

    Raises ``KeyError`` for hash functions we do not support (including md2/md5).
    """
    name = _HASHLIB_NAMES[algorithm.lower()]
    return format_fingerprint(hashlib.new(name, der).digest())


def supported_fingerprint_algorithms() -> tuple[str, ...]:
    """RFC 8122 hash function names we can verify, strongest first."""
    return ("sha-512", "sha-384", "sha-256", "sha-224", "sha-1")


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakref: dtls.py caches a context per certificate
class DtlsCertificate:
    """A private key and its self-signed certificate, in both cryptography and pyOpenSSL form."""

    private_key: PrivateKey
    certificate: x509.Certificate
    _der: bytes = field(repr=False)

    @classmethod
    def generate(cls, not_before: datetime, *, validity: timedelta = VALIDITY) -> DtlsCertificate:
        """Make an ECDSA P-256 self-signed certificate valid from ``not_before``.

        ``not_before`` should be timezone-aware (UTC); it is the driver's wall clock, passed in
        so that this module never reads a clock itself.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        # A short random CN: peers never check names (RFC 8827 s6.5 relies on the fingerprint),
        # and a random one avoids a fixed, fingerprintable identity across workers.
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + validity)
            .sign(key, hashes.SHA256())
        )
        return cls.from_key_and_certificate(key, cert)

    @classmethod
    def from_key_and_certificate(cls, private_key: PrivateKey, certificate: x509.Certificate) -> DtlsCertificate:
        """Wrap an existing key and certificate (any key type OpenSSL supports, e.g. RSA)."""
        return cls(private_key, certificate, certificate.public_bytes(serialization.Encoding.DER))

    @property
    def der(self) -> bytes:
        """The certificate in DER encoding (what fingerprints are computed over)."""
        return self._der

    @property
    def openssl_key(self) -> crypto.PKey:
        """The private key as a pyOpenSSL ``PKey``."""
        return crypto.PKey.from_cryptography_key(self.private_key)

    @property
    def openssl_certificate(self) -> crypto.X509:
        """The certificate as a pyOpenSSL ``X509``."""
        return crypto.X509.from_cryptography(self.certificate)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """Fingerprint with an RFC 8122 hash function name, as used in ``a=fingerprint``."""
        return certificate_fingerprint(self._der, algorithm)

    def fingerprint_sha256(self) -> str:
        """SHA-256 fingerprint, ``"AA:BB:..."`` uppercase hex (RFC 8122 s5)."""
        return self.fingerprint("sha-256")
