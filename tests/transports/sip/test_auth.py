"""Who may call which room (transports/sip/auth.py): tokens, and digest credentials derived from
the app secret, answered by our DigestClient (MD5 and SHA-256); wrong ones never say what failed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.sip.auth import TOKEN_HEADER, CallAuthenticator, Denied, Grant, sip_password, sip_username
from trackmesh.transports.sip.digest import ALGORITHMS, DigestClient, parse_challenge
from trackmesh.transports.sip.message import Headers, Request

KEY = b"k" * 32
NOW_WALL = 1_800_000_000
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb29tIjoiciJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"


def verify_token(token: str, wallclock: int) -> Grant | str:
    return Grant("token-room", "token-peer") if token == JWT else "token signature does not verify"


def invite(uri: str = "sip:room@127.0.0.1:5060", **headers: str) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
    h.add("From", "<sip:alice@127.0.0.1>;tag=a")
    h.add("To", "<sip:room@127.0.0.1>")
    h.add("Call-ID", "c")
    h.add("CSeq", "1 INVITE")
    for name, value in headers.items():
        h.add(name.replace("_", "-"), value)
    return Request("INVITE", uri, h)


def answer(auth: CallAuthenticator, denied: Denied, username: str, password: str, algorithm: str) -> Request:
    values = [v for name, v in denied.headers if name == "WWW-Authenticate"]
    challenge = next(c for c in map(parse_challenge, values) if c.algorithm == algorithm)
    value = DigestClient(username, password).authorize(challenge, "INVITE", "sip:room@127.0.0.1:5060", "cn0nce")
    return invite(Authorization=value)


def test_tokens_in_the_uri_or_a_header() -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token)
    assert auth.authorize(0.0, NOW_WALL, invite(f"sip:{JWT}@127.0.0.1")) == Grant("token-room", "token-peer")
    assert auth.authorize(0.0, NOW_WALL, invite(**{TOKEN_HEADER.replace("-", "_"): JWT})) == Grant(
        "token-room", "token-peer"
    )
    bad = auth.authorize(0.0, NOW_WALL, invite(f"sip:{JWT[:-2]}xx@127.0.0.1"))
    assert isinstance(bad, Denied) and bad.status == 403 and "signature" in bad.reason


def test_digest_with_derived_credentials_both_algorithms() -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token, algorithms=("SHA-256", "MD5"))
    username = sip_username("my room", None, NOW_WALL + 60)
    password = sip_password(KEY, username)
    for algorithm in ALGORITHMS:
        challenge = auth.authorize(0.0, NOW_WALL, invite())
        assert isinstance(challenge, Denied) and challenge.status == 401
        assert [n for n, _ in challenge.headers] == ["WWW-Authenticate", "WWW-Authenticate"]  # SHA-256 and MD5
        verdict = auth.authorize(1.0, NOW_WALL, answer(auth, challenge, username, password, algorithm))
        assert verdict == Grant("my room", None, username), algorithm


def test_the_default_challenge_is_md5_only_and_sha256_answers_are_refused_then() -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token)
    challenge = auth.authorize(0.0, NOW_WALL, invite())
    assert isinstance(challenge, Denied) and len(challenge.headers) == 1 and "algorithm=MD5" in challenge.headers[0][1]
    username = sip_username("r", None, NOW_WALL + 60)
    sha = CallAuthenticator(KEY, "trackmesh", verify_token, algorithms=("SHA-256",))
    offered = sha.authorize(0.0, NOW_WALL, invite())
    assert isinstance(offered, Denied)
    request = answer(sha, offered, username, sip_password(KEY, username), "SHA-256")
    assert auth.authorize(0.0, NOW_WALL, request) == Denied(403, "Forbidden")  # not an algorithm we offered


def test_wrong_expired_or_forged_credentials_get_one_answer() -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token)
    username = sip_username("r", "p", NOW_WALL + 60)
    expired = sip_username("r", "p", NOW_WALL - 1)
    forged = sip_username("other-room", "p", NOW_WALL + 60)  # a username edited by the caller
    cases = [
        (username, "wrong-password"),
        (expired, sip_password(KEY, expired)),
        (forged, sip_password(KEY, username)),
        ("alice", "secret"),
    ]
    for user, password in cases:
        challenge = auth.authorize(0.0, NOW_WALL, invite())
        assert isinstance(challenge, Denied)
        verdict = auth.authorize(0.0, NOW_WALL, answer(auth, challenge, user, password, "MD5"))
        assert verdict == Denied(403, "Forbidden"), user  # no hint which part failed


def test_old_nonce_and_replayed_nc_get_a_stale_challenge() -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token, nonce_ttl=30.0, algorithms=("SHA-256", "MD5"))
    username = sip_username("r", None, NOW_WALL + 3600)
    challenge = auth.authorize(0.0, NOW_WALL, invite())
    assert isinstance(challenge, Denied)
    request = answer(auth, challenge, username, sip_password(KEY, username), "SHA-256")
    assert isinstance(auth.authorize(1.0, NOW_WALL, request), Grant)
    replay = auth.authorize(2.0, NOW_WALL, request)  # the same nc again
    assert isinstance(replay, Denied) and replay.status == 401 and "stale=true" in replay.headers[0][1]
    late = auth.authorize(0.0, NOW_WALL, invite())
    assert isinstance(late, Denied)
    request = answer(auth, late, username, sip_password(KEY, username), "MD5")
    stale = auth.authorize(100.0, NOW_WALL, request)
    assert isinstance(stale, Denied) and stale.status == 401 and "stale=true" in stale.headers[0][1]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_authorization_header_is_refused_or_challenged_never_raised(value: str) -> None:
    auth = CallAuthenticator(KEY, "trackmesh", verify_token)
    verdict = auth.authorize(0.0, NOW_WALL, invite(Authorization=value))
    assert isinstance(verdict, Denied) and verdict.status in (400, 401, 403)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=128), st.one_of(st.none(), st.text(max_size=128)), st.integers(0, 2**40))
def test_usernames_round_trip_through_the_grant(room: str, peer: str | None, expires: int) -> None:
    from trackmesh.transports.sip.auth import _decode_username

    username = sip_username(room, peer, expires)
    assert username.isascii() and '"' not in username
    assert _decode_username(username) == (room, peer, expires)
