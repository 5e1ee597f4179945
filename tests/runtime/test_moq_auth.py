"""MoQ sessions authorized by moq tokens: the AUTHORIZATION TOKEN setup parameter or ?jwt= on the
URL, namespace prefixes for publish and subscribe, refusals with their reasons; and the token
request rules of POST /token/moq (in memory, on a virtual clock)."""

from __future__ import annotations

import pytest

from tests.transports.moq.harness import Client, Clock
from trackmesh.http.token_http import TokenRequest, moq_scopes
from trackmesh.runtime.moq_auth import TokenAuthorizer
from trackmesh.security.tokens import SessionToken, issue
from trackmesh.transports.moq import codec20
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import RequestErrorCode, SessionErrorCode
from trackmesh.transports.moq.relay import Relay
from trackmesh.transports.moq.varint import encode_varint, encode_vi64

KEY = b"k" * 32
NOW = 1_800_000_000


def token(publish: tuple[str, ...] = (), subscribe: tuple[str, ...] = (), kind: str = "moq", ttl: int = 60) -> str:
    return issue(KEY, SessionToken(kind, None, "alice", publish=publish, subscribe=subscribe), ttl, NOW)


def session(draft: int = 16) -> Client:
    return Client(Relay(), Clock(), authorizer=TokenAuthorizer(KEY, clock=lambda: NOW + 1), draft=draft)


def setup_with(client: Client, params: m.Params) -> None:
    if client.vi64:
        client.raw(2, codec20.encode_message(m.ClientSetup(params)), uni=True)
        client.pump()
    else:
        client.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 10, **params}))
        client.pump()
        if client.closed is None:
            (reply,) = client.messages()
            assert isinstance(reply, m.ServerSetup)


@pytest.mark.parametrize("draft", [16, 20])
def test_token_in_the_setup_parameter_scopes_the_namespaces(draft: int) -> None:
    client = session(draft)
    enc = encode_vi64 if draft >= 18 else encode_varint
    value = enc(0x3) + enc(0x0) + token(publish=("trackmesh/r1",), subscribe=("trackmesh",)).encode()
    setup_with(client, {m.SETUP_AUTHORIZATION_TOKEN: value})
    assert client.closed is None
    ok_stream = client.request(m.PublishNamespace(0, (b"trackmesh", b"r1", b"alice")))
    assert client.messages(ok_stream) == [m.RequestOk(0)]
    refused_stream = client.request(m.PublishNamespace(2, (b"trackmesh", b"r2")))
    (refusal,) = client.messages(refused_stream)
    assert isinstance(refusal, m.RequestError) and refusal.error_code == RequestErrorCode.UNAUTHORIZED
    sub_stream = client.request(m.Subscribe(4, (b"other",), b"t"))
    (sub_refusal,) = client.messages(sub_stream)
    assert isinstance(sub_refusal, m.RequestError) and sub_refusal.error_code == RequestErrorCode.UNAUTHORIZED


def test_token_on_the_url() -> None:
    client = session()
    setup_with(client, {m.SETUP_PATH: b"/?jwt=" + token(subscribe=("a/b",)).encode()})
    assert client.closed is None
    client.send(m.Subscribe(0, (b"a", b"b", b"c"), b"t"))
    (reply,) = client.messages()
    assert isinstance(reply, m.RequestError) and reply.error_code == RequestErrorCode.DOES_NOT_EXIST  # allowed


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "a moq token is needed"),
        ({m.SETUP_PATH: b"/?jwt=" + token(kind="whip").encode()}, "token is for 'whip', not 'moq'"),
        ({m.SETUP_PATH: b"/?jwt=" + token(ttl=-5).encode()}, "expired"),
        ({m.SETUP_PATH: b"/?jwt=abc"}, "malformed"),
    ],
)
def test_refused_sessions_say_why(params: m.Params, reason: str) -> None:
    client = session()
    setup_with(client, params)
    assert client.closed is not None and client.closed.code == SessionErrorCode.UNAUTHORIZED
    assert reason in client.closed.reason


def test_token_request_rules() -> None:
    room = TokenRequest.model_validate({"room": "r1", "peer": "p", "ttl": 60, "subscribe": False})
    assert moq_scopes(room) == (("trackmesh/r1",), ())
    free = TokenRequest.model_validate({"peer": "p", "ttl": 60, "publish": "moq-test", "subscribe": "a/b"})
    assert moq_scopes(free) == (("moq-test",), ("a/b",))
    for bad in (
        {"room": "r1", "peer": "p", "ttl": 60, "publish": "x"},
        {"peer": "p", "ttl": 60},
        {"peer": "p", "ttl": 60, "publish": True},
        {"peer": "p", "ttl": 60, "publish": "a//b"},
    ):
        assert isinstance(moq_scopes(TokenRequest.model_validate(bad)), str), bad


def test_a_tenants_moq_token_is_checked_with_its_apps_key_only() -> None:
    """Multi-tenancy (security/tokens.py verify_for_app): with the node's token keys by app, a token
    of app "a" signed with a's key passes; one claiming "a" signed with another key, or naming an
    app the node does not know, is refused."""
    keys = {"": KEY, "a": b"a" * 32}
    tenant = SessionToken("moq", None, "alice", app="a", subscribe=("x",))

    def setup(raw: str) -> str | None:
        return TokenAuthorizer(keys.get, clock=lambda: NOW + 1).setup(raw.encode(), "/")

    assert setup(issue(keys["a"], tenant, 60, NOW)) is None
    assert setup(issue(KEY, tenant, 60, NOW)) == "token signature does not verify"
    stranger = SessionToken("moq", None, "alice", app="b", subscribe=("x",))
    assert setup(issue(b"b" * 32, stranger, 60, NOW)) == "token is for app 'b', which this node does not know"
    assert setup(token(subscribe=("x",))) is None  # the single-tenant app: the node's own key


def test_a_tenant_may_not_use_the_rooms_namespaces() -> None:
    """The relay's namespaces are not per app, and ("trackmesh", <room>) names the single-tenant
    app's rooms: a tenant's token covers no namespace under "trackmesh", whatever its scopes say."""
    keys = {"": KEY, "acme": b"a" * 32}
    raw = issue(keys["acme"], SessionToken("moq", None, "alice", publish=("trackmesh", "acme"),
                                           subscribe=("trackmesh", "acme"), app="acme"), 60, NOW)  # fmt: skip
    auth = TokenAuthorizer(keys.get, clock=lambda: NOW + 1)
    assert auth.setup(raw.encode(), "/") is None and auth.app == "acme"
    for ns in ((b"trackmesh",), (b"trackmesh", b"r1")):
        assert not auth.may_publish(ns) and not auth.may_subscribe(ns) and not auth.may_discover(ns)
    assert auth.may_publish((b"acme", b"x")) and auth.may_subscribe((b"acme", b"x"))
    # The single-tenant app's token with the same scopes keeps them.
    single = TokenAuthorizer(keys.get, clock=lambda: NOW + 1)
    assert single.setup(token(publish=("trackmesh",), subscribe=("trackmesh",)).encode(), "/") is None
    assert single.may_publish((b"trackmesh", b"r1")) and single.may_subscribe((b"trackmesh", b"r1"))
