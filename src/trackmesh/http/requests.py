"""What every media API shares: plain-text problems, bearer tokens, bounded request bodies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import PlainTextResponse

from trackmesh.rpc import RpcError, WorkerHandle
from trackmesh.security.tokens import AppTokenKeys, SessionToken, TokenError, verify_for_app

from .headers import bearer

if TYPE_CHECKING:
    from .api import NodeApi


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> PlainTextResponse:
    """A refusal as WHIP/WHEP and SDK clients read it: a status and one line of text."""
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


async def read_body(request: Request, accepted: tuple[str, ...], max_bytes: int) -> bytes | PlainTextResponse:
    """The body, or 415 for another Content-Type (the first accepted one is named) and 413
    past ``max_bytes`` (checked on the declared length and while reading)."""
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in accepted:
        return problem(415, f"Content-Type must be {accepted[0]}, got {given or 'none'}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return problem(413, f"body larger than {max_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return problem(413, f"body larger than {max_bytes} bytes")
    return body


async def route(node: NodeApi, pick: Callable[[], WorkerHandle], method: str, params: dict[str, Any]) -> Any:
    """Place a create/connect request (``params`` with ``remote_ip``, ``app`` and ``routed_at``,
    the request's arrival) on the worker ``pick`` chooses: standalone's gateway part. The worker
    reports RouteBegin/RouteSuccess with the session it makes; a request that cannot be placed (a
    5xx: node full, worker gone or silent) is the connector's RouteError."""
    try:
        return await pick().call(method, params)
    except RpcError as exc:
        connector = node.connector
        if exc.status >= 500 and connector is not None and params.get("routed_at") is not None:
            connector.route_failed(time.monotonic(), str(params.get("remote_ip") or ""), str(params.get("app") or ""),
                                   float(params["routed_at"]), exc.status, exc.message)
        raise


def app_token_keys(node: NodeApi) -> AppTokenKeys:
    """Token keys by app id (security/tokens.py): the node's own for the single-tenant app, each
    tenant's made from its secret (from the node's app list at the time of the request: node.apps)."""
    config = node.config

    def key_of(app: str) -> bytes | None:
        if app == "":
            return config.token_key
        apps = node.apps
        return apps.token_key_of(app, config.atm0s_compatible_tokens) if apps is not None else None

    return key_of


def session_token(node: NodeApi, authorization: str | None, kind: str) -> tuple[SessionToken, str] | PlainTextResponse:
    """The verified session token of ``kind`` and its raw text, or a 401 saying why."""
    raw = bearer(authorization)
    if raw is None:
        return problem(401, f"missing bearer {kind} token", {"WWW-Authenticate": "Bearer"})
    try:
        return verify_for_app(app_token_keys(node), raw, kind, int(time.time())), raw
    except TokenError as exc:
        return problem(401, f"invalid {kind} token: {exc}", {"WWW-Authenticate": "Bearer"})
