"""Multi-tenancy and the log API: two apps, each sees only its rooms, events and hooks; bad
parameters are a 400; the app list parser on any input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.config import resolve
from trackmesh.connector import events as ev
from trackmesh.connector.apps import AppRegistry, AppsError, parse_apps
from trackmesh.http.app import create_app
from trackmesh.runtime.connector import EmbeddedConnector
from trackmesh.runtime.node import Node
from trackmesh.security.keys import token_key
from trackmesh.security.tokens import verify

from .receiver import HookReceiver


def peer(source: str, session: int, body: ev.PeerEventBody, app: str) -> ev.SourceEvent:
    return ev.SourceEvent(source, app, ev.HookEvent(1, int(time.time() * 1000), ev.PeerEvent(session, body)))


def test_two_apps_each_see_only_their_log_and_hooks(tmp_path: Path) -> None:
    rx_a = HookReceiver("").start()
    rx_b = HookReceiver("").start()
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [
        {"app_id": "a", "app_secret": "secret-of-app-a-123", "hook": rx_a.url},
        {"app_id": "b", "app_secret": "secret-of-app-b-123", "hook": rx_b.url},
    ]}))
    cfg = resolve("standalone", {"secret": "root-secret-12345", "connector_db": f"sqlite:///{tmp_path / 'c.db'}",
                                 "apps": str(apps)}, {})

    async def main() -> None:
        node = Node(cfg)
        node.connector = conn = EmbeddedConnector(node)
        app_a, app_b = conn.apps.get("a"), conn.apps.get("b")
        assert app_a is not None and app_b is not None
        rx_a.secret, rx_b.secret = app_a.hook_secret, app_b.hook_secret
        assert rx_a.secret != rx_b.secret
        await conn.start()
        await conn.service.submit([peer("a1", 1, ev.Join("shared-name", "pa"), "a"),
                                   peer("b1", 2, ev.Join("shared-name", "pb"), "b"),
                                   peer("b2", 3, ev.Join("only-b", "pb2"), "b")])
        web = create_app(node)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://t")

        async def get(path: str, secret: str) -> tuple[int, Any]:
            r = await client.get(path, headers={"Authorization": f"Bearer {secret}"})
            return r.status_code, r.json()

        status, body = await get("/api/connector/log/rooms", "secret-of-app-a-123")
        assert status == 200 and [r["room"] for r in body["data"]] == ["shared-name"]
        status, body = await get("/api/connector/log/rooms", "secret-of-app-b-123")
        assert sorted(r["room"] for r in body["data"]) == ["only-b", "shared-name"]
        status, body = await get("/api/connector/log/sessions", "secret-of-app-a-123")
        assert [s["id"] for s in body["data"]] == ["1"]
        status, body = await get("/api/connector/log/events?session=2", "secret-of-app-a-123")
        assert status == 200 and body["data"] == []
        status, body = await get("/api/connector/log/peers", "secret-of-app-b-123")
        assert sorted(p["peer"] for p in body["data"]) == ["pb", "pb2"]
        status, body = await get("/api/connector/hook-secret", "secret-of-app-b-123")
        assert body["data"] == {"app": "b", "secret": rx_b.secret, "hook_url": rx_b.url}
        status, body = await get("/api/connector/log/rooms", "root-secret-12345")
        assert status == 200 and body["data"] == []  # the root app has no rows
        for path in ("/api/connector/log/rooms?limit=0", "/api/connector/log/rooms?limit=1001",
                     "/api/connector/log/rooms?page=-1", "/api/connector/log/events?session=abc",
                     "/api/connector/log/events?session=18446744073709551616",
                     "/api/connector/log/events?start_ts=10&end_ts=5", "/api/connector/log/peers?room=x"):
            status, body = await get(path, "secret-of-app-a-123")
            assert status == 400 and body["status"] is False, (path, body)
        status, _ = await get("/api/connector/log/rooms", "nobody")
        assert status == 401
        # Tokens carry the app of the secret that minted them (atm0s: the JWT sub) and are signed
        # with that app's key (tests/connector/test_tenant_tokens.py has the details).
        for secret, app in (("secret-of-app-a-123", "a"), ("root-secret-12345", "")):
            r = await client.post("/token/whip", json={"room": "r", "peer": "p", "ttl": 60},
                                  headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text
            token = verify(token_key(secret), r.json()["data"]["token"], "whip", int(time.time()))
            assert token.app == app
        r = await client.post("/token/whip", json={"room": "r", "peer": "p", "ttl": 60},
                              headers={"Authorization": "Bearer nobody-at-all"})
        assert r.status_code == 401
        # The per-client throttle of wrong secrets counts only a secret that is neither the app
        # secret nor a tenant's: more tenant tokens than the bucket holds (10) all pass.
        assert web.state.auth_throttle.failures == 1
        for _ in range(12):
            r = await client.post("/token/whep", json={"room": "r", "ttl": 60},
                                  headers={"Authorization": "Bearer secret-of-app-b-123"})
            assert r.status_code == 200, r.text
        assert web.state.auth_throttle.failures == 1 and web.state.auth_throttle.throttled == 0
        r = await client.get("/api/connector/log/rooms")
        assert r.status_code == 401
        deadline = time.monotonic() + 20
        while conn.service.outbox.queued and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        a_rooms = {next(iter(b["event"].values())).get("room") for _, b in rx_a.accepted_bodies()}
        b_sessions = {b["event"]["Peer"]["session_id"] for _, b in rx_b.accepted_bodies() if "Peer" in b["event"]}
        assert a_rooms == {None, "shared-name"} and b_sessions == {2, 3}
        assert rx_a.unverified == 0 and rx_b.unverified == 0
        assert all(b["event"].get("Peer", {}).get("session_id") in (None, 1) for _, b in rx_a.accepted_bodies())
        await client.aclose()
        await conn.stop()

    try:
        asyncio.run(main())
    finally:
        rx_a.stop()
        rx_b.stop()


def test_sync_keeps_the_previous_list_on_a_bad_document() -> None:
    reg = AppRegistry(parse_apps('{"apps": [{"app_id": "root", "app_secret": "root-secret-12345"}]}')[0])
    assert reg.apply_sync(b'{"apps": [{"app_id": "x", "app_secret": "secret-x-1234567890"}]}')
    assert reg.app_for_secret("secret-x-1234567890") == "x"
    assert not reg.apply_sync(b'{"apps": [{"app_id": "y"}]}')
    assert not reg.apply_sync(b"not json")
    assert reg.app_for_secret("secret-x-1234567890") == "x" and reg.app_for_secret("root-secret-12345") == "root"
    assert reg.app_for_secret("nope") is None


@pytest.mark.parametrize(("doc", "message"), [
    ('{"apps": [{"app_id": "", "app_secret": "1234567890123456"}]}', "app_id"),
    ('{"apps": [{"app_id": "a", "app_secret": "short"}]}', "app_secret"),
    ('{"apps": [{"app_id": "a", "app_secret": "15-chars-secret"}]}', "app_secret"),  # --secret's minimum: 16
    ('{"apps": [{"app_id": "a", "app_secret": "1234567890123456", "hook": "ftp://x"}]}', "hook"),
    ('{"apps": [{"app_id": "a", "app_secret": "1234567890123456"}, '
     '{"app_id": "a", "app_secret": "6543210987654321"}]}', "twice"),
    ('{"apps": [{"app_id": "a", "app_secret": "1234567890123456", "hook_secret": "whsec_abc"}]}', "hook_secret"),
    ('{"apps": {}}', "apps"),
])
def test_bad_app_lists_name_the_field(doc: str, message: str) -> None:
    with pytest.raises(AppsError, match=message):
        parse_apps(doc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
        ["apps", "app_id", "app_secret", "hook", "hook_secret", "x"]), c, max_size=5),
    max_leaves=25,
)


@given(_json)
def test_app_list_parser_raises_only_apps_error(doc: object) -> None:
    try:
        apps = parse_apps(json.dumps(doc))
    except AppsError:
        return
    assert all(a.app_id and len(a.app_secret) >= 8 for a in apps)
