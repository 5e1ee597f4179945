"""Standard Webhooks signatures, checked against the reference ``standardwebhooks`` package."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from trackmesh.connector import signing
from trackmesh.security import keys


def test_reference_library_verifies_our_signature() -> None:
    secret = signing.derived_secret("app-secret-12345")
    body = b'{"node":1,"ts":1,"event":{"Room":{"room":"r","event":{"Started":{}}}}}'
    now = int(time.time())
    hdrs = signing.headers(signing.parse_secret(secret), "evt_1", now, body)
    assert Webhook(secret).verify(body, hdrs) == {"node": 1, "ts": 1, "event": {"Room": {"room": "r", "event": {
        "Started": {}}}}}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.derived_secret("another-secret-12345")).verify(body, hdrs)


def test_derived_secret_is_stable_and_per_app() -> None:
    assert signing.derived_secret("s3cret-xyz-123456") == signing.derived_secret("s3cret-xyz-123456")
    # security/keys.py's derivation: its own purpose, the app id as context.
    assert signing.parse_secret(signing.derived_secret("s3cret-xyz-123456", "a")) == keys.derive_key(
        "s3cret-xyz-123456", "standard-webhooks", "a"
    )
    assert signing.derived_secret("s3cret-xyz-123456", "a") != signing.derived_secret("s3cret-xyz-123456", "b")
    assert len(signing.parse_secret(signing.derived_secret("s3cret-xyz-123456"))) == 32


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    # RFC 5869 Appendix A.1, on the one HKDF every derived key uses (the hook secret's included).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = keys.hkdf_sha256(ikm, info, 42, salt)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_own_verify_tolerance_and_rotation() -> None:
    key = signing.parse_secret(signing.derived_secret("k" * 16))
    sig = signing.sign(key, "m", 1000, b"x")
    assert signing.verify(key, "m", "1000", f"v1,AAAA {sig}", b"x", now=1200)
    assert not signing.verify(key, "m", "1000", sig, b"x", now=1000 + signing.TOLERANCE_S + 1)
    assert not signing.verify(key, "m", "abc", sig, b"x", now=1000)


@given(st.text(max_size=80))
def test_parse_secret_never_crashes(text: str) -> None:
    try:
        key = signing.parse_secret(text)
    except signing.SecretError:
        return
    assert 24 <= len(key) <= 64
    assert signing.parse_secret(signing.format_secret(key)) == key
