"""A later SDK ``session.join`` takes a token of the session's own app only (multi-tenancy): a
valid token of another app must not open this app's rooms (rooms are per app, docs/connector.md)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.security.tokens import SessionToken, issue

KEYS = {"": b"r" * 32, "acme": b"a" * 32, "globex": b"g" * 32}


def test_a_join_token_of_another_app_is_refused() -> None:
    worker = SimpleNamespace(runtime=SimpleNamespace(token_key_of=KEYS.get))
    now = int(time.time())
    globex = issue(KEYS["globex"], SessionToken("webrtc", "r", "mallory", app="globex"), 600, now)
    acme = issue(KEYS["acme"], SessionToken("webrtc", "r", "alice", app="acme"), 600, now)
    assert SdkTransport._verify(worker, "acme", globex) is None  # type: ignore[arg-type]
    assert SdkTransport._verify(worker, "", globex) is None  # type: ignore[arg-type]
    claims = SdkTransport._verify(worker, "acme", acme)  # type: ignore[arg-type]
    assert claims is not None and claims.room == "r" and claims.peer == "alice"
    single = issue(KEYS[""], SessionToken("webrtc", "r", "bob"), 600, now)
    assert SdkTransport._verify(worker, "", single) is not None  # type: ignore[arg-type]
    assert SdkTransport._verify(worker, "acme", single) is None  # type: ignore[arg-type]
