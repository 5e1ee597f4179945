"""Keys derived from the app secret: one per use, stable, and none of them the secret itself."""

from __future__ import annotations

import hashlib
import hmac

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.cluster.zenoh_session import derive_credentials
from trackmesh.core.ids import ConnIdCodec, InvalidConnId, SessionId
from trackmesh.security.keys import (
    PURPOSES,
    derive_key,
    sign_forwarded,
    token_key,
    verify_forwarded,
)
from trackmesh.security.tokens import SessionToken, TokenError, issue, verify

SECRET = "an-app-secret-of-32-characters!!"
NOW = 1_800_000_000


def test_every_purpose_has_its_own_32_byte_key() -> None:
    keys = {purpose: derive_key(SECRET, purpose) for purpose in PURPOSES}
    assert len(set(keys.values())) == len(PURPOSES)
    assert all(len(k) == 32 for k in keys.values())
    assert SECRET.encode() not in keys.values()
    # Stable: the same secret gives the same keys in every process (nodes must agree).
    assert derive_key(SECRET, "token-signing") == derive_key(SECRET.encode(), "token-signing")
    assert derive_key(SECRET + "x", "token-signing") != keys["token-signing"]


def test_key_derivation_is_rfc5869_hkdf_sha256() -> None:
    # RFC 5869 s2.2/2.3 written out with hmac: extract with the salt, expand with the purpose as info.
    prk = hmac.new(b"trackmesh app secret v1", SECRET.encode(), hashlib.sha256).digest()
    okm = hmac.new(prk, b"trackmesh conn-id" + b"\x01", hashlib.sha256).digest()
    assert derive_key(SECRET, "conn-id") == okm


def test_unknown_purpose_and_empty_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown key purpose"):
        derive_key(SECRET, "everything")
    with pytest.raises(ValueError, match="empty"):
        derive_key("", "conn-id")


def test_tokens_use_the_derived_key_unless_atm0s_compatible() -> None:
    tok = issue(token_key(SECRET), SessionToken("whip", "r", "p"), 60, NOW)
    assert verify(token_key(SECRET), tok, "whip", NOW).room == "r"
    # A token handed to a browser is no oracle for the app secret itself ...
    with pytest.raises(TokenError, match="signature"):
        verify(SECRET, tok, "whip", NOW)
    # ... except in atm0s mode, where tokens minted by atm0s tooling with the secret must verify.
    atm0s = jwt.encode({"iss": "whip", "room": "r", "peer": "p", "exp": NOW + 60}, SECRET, algorithm="HS256")
    assert verify(token_key(SECRET, atm0s_compatible=True), atm0s, "whip", NOW).peer == "p"
    with pytest.raises(TokenError, match="signature"):
        verify(token_key(SECRET), atm0s, "whip", NOW)


def test_conn_ids_and_cluster_links_use_their_own_keys() -> None:
    conn = ConnIdCodec(SECRET).encode(1, 0, SessionId(7))
    assert ConnIdCodec(SECRET).decode(conn).session == 7
    with pytest.raises(InvalidConnId):
        ConnIdCodec("another-secret-of-enough-length").decode(conn)
    user, password = derive_credentials(SECRET)
    key = derive_key(SECRET, "cluster-link")
    assert password == hmac.new(key, b"password", hashlib.sha256).hexdigest()
    assert user.startswith("tm-") and password not in (SECRET, derive_key(SECRET, "token-signing").hex())


def test_forwarded_client_only_verifies_when_signed_by_a_member() -> None:
    value = sign_forwarded(SECRET, "198.51.100.7")
    assert verify_forwarded(SECRET, value) == "198.51.100.7"
    assert verify_forwarded("another-secret-of-enough-length", value) is None
    assert verify_forwarded(SECRET, value.replace("198.51.100.7", "198.51.100.8")) is None
    assert verify_forwarded(SECRET, "198.51.100.7") is None


@given(st.text(max_size=200))
def test_arbitrary_headers_never_verify_or_raise(header: str) -> None:
    assert verify_forwarded(SECRET, header) is None
