from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from trackmesh.transports.webrtc.dtls.certificate import (
    DtlsCertificate,
    certificate_fingerprint,
    format_fingerprint,
)

NOT_BEFORE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cert() -> DtlsCertificate:
    return DtlsCertificate.generate(NOT_BEFORE)


def test_certificate_is_self_signed_p256_with_given_validity(cert: DtlsCertificate) -> None:
    c = cert.certificate
    key = c.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert c.issuer == c.subject
    c.verify_directly_issued_by(c)  # raises if the self-signature is wrong
    assert c.not_valid_before_utc == NOT_BEFORE
    assert c.not_valid_after_utc == NOT_BEFORE + timedelta(days=30)
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert 0 < len(cn) <= 32


def test_common_names_are_random() -> None:
    a = DtlsCertificate.generate(NOT_BEFORE).certificate.subject
    b = DtlsCertificate.generate(NOT_BEFORE).certificate.subject
    assert a != b


def test_fingerprint_sha256_format_and_value(cert: DtlsCertificate) -> None:
    fp = cert.fingerprint_sha256()
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    der = cert.certificate.public_bytes(Encoding.DER)
    assert fp == format_fingerprint(hashlib.sha256(der).digest())
    assert bytes.fromhex(fp.replace(":", "")) == cert.certificate.fingerprint(hashes.SHA256())
    assert cert.fingerprint("SHA-1") == certificate_fingerprint(der, "sha-1")
    assert len(cert.fingerprint("sha-512").split(":")) == 64


def test_md5_fingerprints_are_refused(cert: DtlsCertificate) -> None:
    with pytest.raises(KeyError):
        cert.fingerprint("md5")  # RFC 8122 s5 forbids MD2/MD5


def test_pyopenssl_objects_match(cert: DtlsCertificate) -> None:
    x509 = cert.openssl_certificate
    assert isinstance(x509, crypto.X509)
    assert x509.to_cryptography() == cert.certificate
    key = cert.openssl_key
    assert isinstance(key, crypto.PKey)
    assert key.bits() == 256
