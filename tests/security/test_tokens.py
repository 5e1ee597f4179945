from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.security.tokens import SessionToken, TokenError, app_secret_matches, issue, verify

NOW = 1_800_000_000


def test_round_trip_carries_every_claim() -> None:
    tok = issue("secret-1", SessionToken("whip", "room", "peer", True, "xtra"), 60, NOW)
    claims = jwt.decode(
        tok, "secret-1", algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    )
    assert claims["iss"] == "whip" and claims["exp"] == NOW + 60
    assert verify("secret-1", tok, "whip", NOW + 59) == SessionToken("whip", "room", "peer", True, "xtra", NOW + 60)


def test_refusals_say_why() -> None:
    tok = issue("secret-1", SessionToken("whep", "room", None), 60, NOW)
    with pytest.raises(TokenError, match="expired"):
        verify("secret-1", tok, "whep", NOW + 60)
    with pytest.raises(TokenError, match="not 'whip'"):
        verify("secret-1", tok, "whip", NOW)
    with pytest.raises(TokenError, match="signature"):
        verify("other-secret", tok, "whep", NOW)
    with pytest.raises(TokenError, match="malformed"):
        verify("secret-1", "not.a.jwt", "whep", NOW)
    bad = jwt.encode({"iss": "whep", "exp": NOW + 9, "room": 5}, "secret-1", algorithm="HS256")
    with pytest.raises(TokenError, match="room"):
        verify("secret-1", bad, "whep", NOW)


@given(st.text(max_size=300))
def test_arbitrary_strings_only_raise_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        verify("secret-1", text, "whip", NOW)


def test_app_secret_comparison() -> None:
    assert app_secret_matches("abc12345", "abc12345")
    assert not app_secret_matches("abc12345", "abc12346")
    assert not app_secret_matches("abc12345", "")
