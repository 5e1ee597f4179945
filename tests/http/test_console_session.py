"""The console's session cookies, CSRF tokens and same-origin check (http/console/session.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.http.console.session import ConsoleSessions, same_origin

SECRET = "console-test-secret-0123456789"


def test_a_cookie_names_its_app_until_it_expires() -> None:
    sessions = ConsoleSessions(SECRET, ttl=60)
    value, issued = sessions.issue("tenant-a", 1000.0)
    found = sessions.verify(value, 1059.0)
    assert found == issued and found.app == "tenant-a"
    assert sessions.verify(value, 1060.0) is None  # expired


def test_the_cluster_operators_cookie_says_so_and_cannot_be_made_by_a_tenant() -> None:
    """The console role's cluster secret logs in over every app (``root``): signed like the app."""
    import base64
    import json

    sessions = ConsoleSessions(SECRET)
    value, issued = sessions.issue("", 1000.0, root=True)
    assert issued.root and sessions.verify(value, 1000.0) == issued
    tenant, _ = sessions.issue("acme", 1000.0)
    found = sessions.verify(tenant, 1000.0)
    assert found is not None and not found.root
    payload, tag = tenant.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**fields, "r": 1}).encode()).rstrip(b"=").decode()
    assert sessions.verify(forged + "." + tag, 1000.0) is None  # the flag is under the signature


def test_forged_altered_or_foreign_cookies_are_refused() -> None:
    sessions = ConsoleSessions(SECRET)
    value, _ = sessions.issue("", 1000.0)
    payload, tag = value.split(".")
    assert sessions.verify(payload + "." + tag[:-2] + ("AA" if tag[-2:] != "AA" else "BB"), 1000.0) is None
    assert sessions.verify(payload[:-1] + "x." + tag, 1000.0) is None
    assert sessions.verify(value + ".x", 1000.0) is None
    assert sessions.verify("", 1000.0) is None and sessions.verify(None, 1000.0) is None
    other, _ = ConsoleSessions("another-secret-0123456789").issue("", 1000.0)
    assert sessions.verify(other, 1000.0) is None


def test_logout_revokes_at_once_and_csrf_tokens_are_per_session() -> None:
    sessions = ConsoleSessions(SECRET, max_revoked=2)
    a_value, a = sessions.issue("", 1000.0)
    b_value, b = sessions.issue("", 1000.0)
    assert sessions.csrf_ok(a, sessions.csrf_token(a)) and not sessions.csrf_ok(a, sessions.csrf_token(b))
    assert not sessions.csrf_ok(a, None) and not sessions.csrf_ok(a, "") and not sessions.csrf_ok(a, "\x80")
    sessions.revoke(a, 1001.0)
    assert sessions.verify(a_value, 1001.0) is None and sessions.verify(b_value, 1001.0) == b
    # The revocation list stays bounded.
    for _ in range(5):
        sessions.revoke(sessions.issue("", 1000.0)[1], 1001.0)
    assert len(sessions._revoked) <= 2


def test_same_origin_needs_origin_or_referer_naming_the_host() -> None:
    host = "127.0.0.1:3000"
    assert same_origin("http://127.0.0.1:3000", None, host)
    assert same_origin(None, "http://127.0.0.1:3000/console#/rooms", host)
    assert not same_origin("http://127.0.0.1:3001", None, host)  # same site, other origin
    assert not same_origin("http://localhost:3000", None, host)
    assert not same_origin("null", "http://127.0.0.1:3000/", host)  # Origin decides when present
    assert not same_origin(None, None, host)
    assert not same_origin("http://127.0.0.1:3000", None, None)
    assert not same_origin("javascript://127.0.0.1:3000", None, host)


@given(st.text(max_size=2000))
def test_any_cookie_text_is_refused_without_raising(text: str) -> None:
    assert ConsoleSessions(SECRET).verify(text, 1000.0) is None


@given(st.one_of(st.none(), st.text(max_size=300)), st.one_of(st.none(), st.text(max_size=300)),
       st.one_of(st.none(), st.text(max_size=100)))
def test_same_origin_never_raises(origin: str | None, referer: str | None, host: str | None) -> None:
    assert same_origin(origin, referer, host) in (True, False)
