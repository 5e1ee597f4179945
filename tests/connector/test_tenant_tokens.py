"""Tokens per app (multi-tenancy, atm0s 0.2 compatible): a tenant's tokens carry its app id and
are signed with its own key, made from its own secret; checking picks the key by the app id;
one app's secret neither mints for nor reads another app; the single-tenant app is unchanged."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from trackmesh.config import NodeConfig, resolve
from trackmesh.http.app import create_app
from trackmesh.http.requests import app_token_keys, session_token
from trackmesh.runtime.connector import EmbeddedConnector
from trackmesh.runtime.handles import InProcessWorker
from trackmesh.runtime.node import Node
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.security.keys import token_key
from trackmesh.security.tokens import SessionToken, TokenError, issue, verify, verify_for_app

ROOT, SECRET_A, SECRET_B = "root-secret-12345", "secret-of-app-a-123", "secret-of-app-b-123"


def _config(tmp_path: Path, atm0s: bool = False) -> NodeConfig:
    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [{"app_id": "a", "app_secret": SECRET_A},
                                         {"app_id": "b", "app_secret": SECRET_B}]}))
    flags: dict[str, Any] = {"secret": ROOT, "connector_db": f"sqlite:///{tmp_path / 'c.db'}", "apps": str(apps)}
    if atm0s:
        flags["atm0s_compatible_tokens"] = True
    return resolve("standalone", flags, {})


class Tenancy:
    """A standalone node's HTTP app and embedded connector (one in-process worker, not started:
    only its control calls are used)."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.node = Node(cfg)
        self.runtime = WorkerRuntime(cfg, 0)
        self.node.workers.append(InProcessWorker(self.runtime))
        self.node.connector = self.connector = EmbeddedConnector(self.node)
        self.web = create_app(self.node)
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.connector.stop())
        self.loop.close()

    async def mint(self, secret: str, kind: str = "whip") -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.web), base_url="http://t") as client:
            return await client.post(f"/token/{kind}", json={"room": "r", "peer": "p", "ttl": 60},
                                     headers={"Authorization": f"Bearer {secret}"})

    def check(self, token: str, kind: str = "whip") -> SessionToken | str:
        """What WHIP/WHEP/SDK's HTTP side makes of ``token`` (http/requests.py)."""
        found = session_token(self.node, f"Bearer {token}", kind)
        return found[0] if isinstance(found, tuple) else bytes(found.body).decode().strip()


@pytest.fixture
def tenancy(tmp_path: Path) -> Iterator[Tenancy]:
    t = Tenancy(_config(tmp_path))
    t.run(t.connector.start())
    yield t
    t.close()


def _own(secret: str, app: str, kind: str = "whip", atm0s: bool = False) -> str:
    """A token an app's backend mints itself with its own secret (no call to us)."""
    return issue(token_key(secret, atm0s), SessionToken(kind, "r", "p", app=app), 60, int(time.time()))


def test_tenant_tokens_are_signed_with_the_tenant_key_and_carry_the_app(tenancy: Tenancy) -> None:
    now = int(time.time())
    for secret, app in ((SECRET_A, "a"), (SECRET_B, "b"), (ROOT, "")):
        r = tenancy.run(tenancy.mint(secret))
        assert r.status_code == 200, r.text
        raw = r.json()["data"]["token"]
        assert verify(token_key(secret), raw, "whip", now).app == app
        checked = tenancy.check(raw)
        assert isinstance(checked, SessionToken) and checked.app == app
        if app:
            with pytest.raises(TokenError):  # no longer the node's key
                verify(tenancy.cfg.token_key, raw, "whip", now)
    # The single-tenant default is as before: the node's token key, no sub.
    root = tenancy.run(tenancy.mint(ROOT)).json()["data"]["token"]
    assert verify(tenancy.cfg.token_key, root, "whip", now).app == ""


def test_a_tenant_backend_mints_its_own_tokens(tenancy: Tenancy) -> None:
    checked = tenancy.check(_own(SECRET_A, "a"))
    assert isinstance(checked, SessionToken) and (checked.app, checked.room) == ("a", "r")


@pytest.mark.parametrize(("secret", "app", "why"), [
    (SECRET_A, "b", "does not verify"),  # app a's secret minting for app b
    (ROOT, "a", "does not verify"),  # the node's secret cannot mint for a tenant either
    (SECRET_A, "", "does not verify"),  # nor a tenant for the single-tenant app
    (SECRET_A, "zzz", "does not know"),  # an app this node does not have
])
def test_one_app_cannot_mint_for_another(tenancy: Tenancy, secret: str, app: str, why: str) -> None:
    checked = tenancy.check(_own(secret, app))
    assert isinstance(checked, str) and why in checked


def test_an_app_secret_only_reads_its_own_app() -> None:
    keys = {"": b"k" * 32, "a": b"a" * 32}
    token = issue(keys["a"], SessionToken("whep", "r", None, app="a"), 60, int(time.time()))
    assert verify_for_app(keys.get, token, "whep", int(time.time())).app == "a"
    with pytest.raises(TokenError, match="not 'whip'"):
        verify_for_app(keys.get, token, "whip", int(time.time()))
    for bad in ("", "x.y.z", "a" * 50):
        with pytest.raises(TokenError, match="malformed"):
            verify_for_app(keys.get, bad, "whep", int(time.time()))


def test_workers_get_the_apps_token_keys_and_follow_changes(tenancy: Tenancy) -> None:
    """SDK joins are checked on the media worker (runtime/sdk_worker.py): it holds each app's key."""
    rt = tenancy.runtime
    assert rt.token_key_of("a") == token_key(SECRET_A) and rt.token_key_of("") == tenancy.cfg.token_key
    assert verify_for_app(rt.token_key_of, _own(SECRET_B, "b", "webrtc"), "webrtc", int(time.time())).app == "b"
    from trackmesh.connector.apps import parse_apps

    async def change() -> None:
        new = {"apps": [{"app_id": "c", "app_secret": "secret-of-c-12345"}]}
        tenancy.connector.apps.replace(parse_apps(json.dumps(new)))
        tenancy.connector._apps_changed()
        await asyncio.sleep(0.05)

    tenancy.run(change())
    assert rt.token_key_of("c") == token_key("secret-of-c-12345") and rt.token_key_of("a") is None
    gone = "invalid whip token: token is for app 'a', which this node does not know"
    assert tenancy.check(_own(SECRET_A, "a")) == gone


def test_atm0s_compatible_tokens_use_the_app_secret_itself(tmp_path: Path) -> None:
    t = Tenancy(_config(tmp_path, atm0s=True))
    t.run(t.connector.start())
    try:
        raw = t.run(t.mint(SECRET_A)).json()["data"]["token"]
        assert verify(SECRET_A, raw, "whip", int(time.time())).app == "a"  # as atm0s: HS256 with the app secret
        checked = t.check(_own(SECRET_A, "a", atm0s=True))
        assert isinstance(checked, SessionToken) and checked.app == "a"
        assert isinstance(t.check(_own(SECRET_A, "b", atm0s=True)), str)
        assert app_token_keys(t.node)("b") == SECRET_B.encode()
    finally:
        t.close()
