"""Limits before work, for every route (issue 17): authenticate, then bound the body, then read it.

An ASGI middleware around the whole application (node or gateway), so no route can forget:

- routes with a *gate* (``POST /token/*``: the app secret) refuse a wrong or missing credential
  with 401 before a byte of the body is read. FastAPI reads and parses a declared JSON body before
  the route function runs, so the route itself cannot do this;
- every body is capped by the first rule whose path prefix matches (else ``default_max``): a
  declared ``Content-Length`` over the cap is refused with 413 at once; a chunked body is counted
  as the application reads it and refused with 413 when it passes the cap (the application then
  sees the client as gone). The connection guard (:mod:`.connection_guard`) drains what the client
  still sends, so it can read the 413.

The routes keep their own, usually tighter, checks (content type, their own caps); this is the
bound that holds when they have none.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``gate(authorization header or None) -> True`` when the caller may send a body here.
Gate = Callable[[str | None], bool]

__all__ = ["DEFAULT_MAX_BODY", "BodyRule", "RequestLimits", "default_rules"]

#: Bound of a body on a route no rule names (JSON APIs: a token request is a few hundred bytes).
DEFAULT_MAX_BODY = 16 * 1024


@dataclass(frozen=True)
class BodyRule:
    prefix: str
    max_bytes: int
    #: Plain-text problems (WHIP/WHEP/SDK clients) rather than the JSON envelope.
    plain: bool = False
    gate: Gate | None = None
    #: Methods the gate applies to (a CORS preflight carries no credentials).
    gated_methods: tuple[str, ...] = ("POST", "PUT", "PATCH")
    #: The application checks the caller before it reads the body (and throttles wrong secrets per
    #: source, security/throttle.py), so a declared length is not refused ahead of it: an
    #: unauthenticated caller hears 401 (or 429), never whether its body would fit. The body
    #: itself is still capped as it arrives.
    app_authenticates: bool = False


def default_rules() -> list[BodyRule]:
    """The node's and the gateway's rules: SDP 64 KiB, SDK protobuf 128 KiB, tokens 16 KiB (the token
    route checks the app secret, and throttles failures, before it reads a byte: http/token_http.py)."""
    return [
        BodyRule("/token/", DEFAULT_MAX_BODY, app_authenticates=True),
        BodyRule("/whip/", 64 * 1024, plain=True),
        BodyRule("/whep/", 64 * 1024, plain=True),
        BodyRule("/webrtc/", 128 * 1024, plain=True),
    ]


class _BodyTooLarge(Exception):
    """Raised from ``receive`` into the application once the body passes its cap."""


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[BodyRule],
        counters: dict[str, int],
        default_max: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.app = app
        self.rules = tuple(rules)
        self.default = BodyRule("", default_max)
        self.counters = counters
        for name in ("http_body_too_large", "http_unauthenticated"):
            counters.setdefault(name, 0)

    def _rule(self, path: str) -> BodyRule:
        for rule in self.rules:
            if path.startswith(rule.prefix):
                return rule
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self._rule(str(scope.get("path", "")))
        declared: int | None = None
        authorization: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                text = value.decode("latin-1").strip()
                declared = int(text) if text.isdigit() else None
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if rule.gate is not None and scope.get("method") in rule.gated_methods and not rule.gate(authorization):
            self.counters["http_unauthenticated"] += 1
            await _answer(send, 401, "APP_TOKEN_INVALID", rule.plain, [(b"www-authenticate", b"Bearer")])
            return
        if declared is not None and declared > rule.max_bytes and not rule.app_authenticates:
            self.counters["http_body_too_large"] += 1
            await _answer(send, 413, f"body larger than {rule.max_bytes} bytes", rule.plain)
            return

        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.max_bytes:
                    refused = True
                    self.counters["http_body_too_large"] += 1
                    if not started:
                        await _answer(send, 413, f"body larger than {rule.max_bytes} bytes", rule.plain)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # our 413 went out: whatever the application answers after is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)


async def _answer(
    send: Send, status: int, message: str, plain: bool, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    if plain:
        body, ctype = (message + "\n").encode(), b"text/plain; charset=utf-8"
    else:
        body, ctype = json.dumps({"status": False, "error": message}).encode(), b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                # Every origin may call these APIs (the CORS middleware inside says the same), so a
                # page on another origin can read why it was refused.
                (b"access-control-allow-origin", b"*"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
