"""RequestLimits in memory (an ASGI app, no server): the gate runs before any body is read, and a body
either reaches the application whole and within its cap or is answered 413, never both."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.http.request_limits import DEFAULT_MAX_BODY, BodyRule, RequestLimits, default_rules


class Recorder:
    """An application that reads the whole body, then answers 200 with its length."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.called = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called += 1
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def run(
    limits: RequestLimits, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]], method: str = "POST"
) -> tuple[list[dict[str, Any]], int]:
    """Drive one request; returns the messages sent and how many chunks were read."""
    sent: list[dict[str, Any]] = []
    read = 0
    chunks = chunks or [b""]  # a server always delivers one http.request, empty for no body

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(limits(scope, receive, send))
    return sent, read


def status(sent: list[dict[str, Any]]) -> int:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    return int(starts[0]["status"])


def test_the_token_gate_answers_401_before_reading_the_body() -> None:
    app = Recorder()
    counters: dict[str, int] = {}
    gate = BodyRule("/token/", DEFAULT_MAX_BODY, gate=lambda auth: auth == "Bearer right")
    limits = RequestLimits(app, [gate, *default_rules()[1:]], counters)
    sent, read = run(limits, "/token/whip", [b"{}"] * 3, [(b"authorization", b"Bearer wrong")])
    assert status(sent) == 401 and read == 0 and app.called == 0
    assert counters["http_unauthenticated"] == 1
    sent, read = run(limits, "/token/whip", [b"{}"], [(b"authorization", b"Bearer right")])
    assert status(sent) == 200 and app.bodies == [b"{}"]
    # A CORS preflight carries no credentials and is not gated.
    sent, _ = run(limits, "/token/whip", [], [], method="OPTIONS")
    assert status(sent) == 200


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=12),
    cap=st.integers(min_value=0, max_value=1500),
    declare=st.sampled_from(["none", "true", "lie-small", "garbage"]),
)
def test_a_body_reaches_the_app_whole_within_its_cap_or_is_refused_413(
    chunks: list[bytes], cap: int, declare: str
) -> None:
    app = Recorder()
    limits = RequestLimits(app, [BodyRule("/x/", cap, plain=True)], {})
    total = sum(len(c) for c in chunks)
    headers: list[tuple[bytes, bytes]] = []
    if declare == "true":
        headers.append((b"content-length", str(total).encode()))
    elif declare == "lie-small":
        headers.append((b"content-length", b"0"))
    elif declare == "garbage":
        headers.append((b"content-length", b"12x"))
    sent, _ = run(limits, "/x/y", chunks, headers)
    code = status(sent)
    if total > cap:
        assert code == 413 and app.bodies == []
    else:
        assert code == 200 and app.bodies == [b"".join(chunks)]
