"""Session tokens over HTTP: ``POST /token/<kind>`` (atm0s 0.2 compatible) and, in ``--dev`` mode,
``GET /dev/token/<kind>`` for loopback clients.

Order of work on ``POST /token/<kind>``, cheapest refusal first: 429 for a source whose failed
secret checks are throttled (security/throttle.py), 401 for a secret that is neither the app
secret nor a tenant's (multi-tenancy; the body is never read then), 413 for a declared length
past ``MAX_BODY_BYTES``, 415 for a body that is not ``application/json``, 413 for a body that
grows past the cap, then 400 for a body that does not validate (one ``{"status": false, "error"}``
envelope for all of them).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator
from starlette.requests import ClientDisconnect

from trackmesh.config import NodeConfig
from trackmesh.security.keys import verify_forwarded
from trackmesh.security.throttle import FailureThrottle, source_key
from trackmesh.security.tokens import MAX_TTL, SessionToken, app_secret_matches, issue

from .body_schema import body_schema
from .envelope import error, ok
from .headers import bearer

MAX_BODY_BYTES = 16 * 1024
FORWARDED_CLIENT_HEADER = "x-trackmesh-client"
DEV_TOKEN_TTL = 3600
Kind = Literal["whip", "whep", "webrtc", "rtpengine", "rtmp", "sip", "moq"]
MOQ_ROOM_PREFIX = "trackmesh"  # a room's MoQ namespace is ("trackmesh", <room>) (docs/moq.md)


def _printable(value: str | None) -> str | None:
    # The media core refuses such names at join (core/endpoint.py); refusing them here says so at once.
    if value is not None and not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


class TokenRequest(BaseModel):
    # Strict types: ``"ttl": true`` or ``"ttl": "60"`` is a 400, not a one-second or a coerced token.
    model_config = ConfigDict(extra="forbid")

    room: StrictStr | None = Field(None, min_length=1, max_length=128, description="room the token is for")
    peer: StrictStr | None = Field(None, min_length=1, max_length=128, description="peer name in the room")
    ttl: StrictInt = Field(..., gt=0, le=MAX_TTL, description="lifetime in seconds")
    record: StrictBool = Field(False, description="record this peer's media")
    extra_data: StrictStr | None = Field(None, max_length=4096, description="opaque data handed to other peers")
    publish: StrictBool | StrictStr | None = Field(
        None,
        description="moq only: with room, whether the session may publish in the room's namespace (default true); "
        "without room, the namespace prefix it may publish under, fields joined by '/'",
    )
    subscribe: StrictBool | StrictStr | None = Field(
        None, description="moq only: as publish, for subscribing (and FETCH, TRACK_STATUS)"
    )

    _names_printable = field_validator("room", "peer")(_printable)


class TokenData(BaseModel):
    token: str
    rtmp_url: str | None = Field(None, description="rtmp tokens: the URL to publish to (OBS: Server)")
    stream_key: str | None = Field(None, description="rtmp tokens: the stream key (the token itself)")
    publish_url: str | None = Field(None, description="rtmp tokens: rtmp_url/stream_key (ffmpeg's output URL)")
    username: str | None = Field(None, description="sip: digest username for a softphone or PBX trunk")
    password: str | None = Field(None, description="sip: digest password (derived, never stored)")
    realm: str | None = Field(None, description="sip: the digest realm")
    uri: str | None = Field(None, description="sip: the address to call (and to REGISTER to)")


class TokenResponse(BaseModel):
    status: bool
    data: TokenData


def client_address(request: Request, secret: str) -> str:
    """The client's address: the peer's, or the one a gateway of this cluster signed for it."""
    forwarded = request.headers.get(FORWARDED_CLIENT_HEADER)
    if forwarded:
        client = verify_forwarded(secret, forwarded)
        if client is not None:
            return client
    return request.client.host if request.client is not None else "unknown"


def refuse_app_secret(request: Request, secret: str, throttle: FailureThrottle) -> JSONResponse | None:
    """The gateways' check before a token request is routed: 429 while the client's failed secret
    checks are throttled, 401 (counted) for a wrong app secret, else None."""
    source = source_key(client_address(request, secret))
    now = time.monotonic()
    wait = throttle.retry_after(source, now)
    if wait:
        return error(429, f"too many wrong app secrets from this address; retry in {wait} s",
                     {"Retry-After": str(wait)})  # fmt: skip
    presented = bearer(request.headers.get("authorization"))
    if presented is None or not app_secret_matches(secret, presented):
        throttle.failed(source, now)
        return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
    return None


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def sip_credentials(config: NodeConfig, room: str, peer: str | None, expires_at: int) -> dict[str, Any]:
    """What a softphone is configured with (transports/sip/auth.py): nothing is stored."""
    from urllib.parse import quote

    from trackmesh.security.keys import sip_digest_key
    from trackmesh.transports.sip.auth import sip_password, sip_username

    username = sip_username(room, peer, expires_at)
    host = f"[{config.node_ip}]" if ":" in config.node_ip else config.node_ip
    port = config.sip_listen_port
    uri = f"sip:{quote(room, safe='')}@{host}:{port}" if port else None
    return {"username": username, "password": sip_password(sip_digest_key(config.secret), username),
            "realm": "trackmesh", "uri": uri}  # fmt: skip


def moq_scopes(req: TokenRequest) -> tuple[tuple[str, ...], tuple[str, ...]] | str:
    """The (publish, subscribe) namespace prefixes of a moq token request, or why it is refused."""
    if req.room is not None:
        if isinstance(req.publish, str) or isinstance(req.subscribe, str):
            return "invalid request: with room, publish and subscribe are true or false"
        scope = f"{MOQ_ROOM_PREFIX}/{req.room}"
        return ((scope,) if req.publish is not False else (), (scope,) if req.subscribe is not False else ())
    scopes = []
    for value in (req.publish, req.subscribe):
        if isinstance(value, bool):
            return "invalid request: without room, publish and subscribe are namespace prefixes ('a/b')"
        if value is not None and (not value or value.startswith("/") or value.endswith("/") or "//" in value):
            return f"invalid request: {value!r} is not a namespace prefix (fields joined by '/')"
        scopes.append((value,) if value else ())
    if not scopes[0] and not scopes[1]:
        return "invalid request: a moq token needs room, or a publish or subscribe namespace prefix"
    return scopes[0], scopes[1]


def _needs(kind: str, room: str | None, peer: str | None) -> str | None:
    if kind == "moq" and peer is None:
        return "invalid request: a moq token needs peer"
    if kind in ("whip", "rtpengine", "rtmp") and (room is None or peer is None):
        return f"invalid request: a {kind} token needs room and peer"
    if kind == "sip" and room is None:
        return "invalid request: a sip token needs room (peer defaults to sip-<caller>)"
    if kind == "whep" and room is None:
        return "invalid request: a whep token needs room"
    return None


def router(
    config: NodeConfig,
    throttle: FailureThrottle,
    tenant_app: Callable[[str], str | None] | None = None,
    rtmp_url: Callable[[str], str | None] | None = None,
) -> APIRouter:
    """The token routes of a node with ``config``. ``tenant_app`` (multi-tenancy, docs/connector.md)
    names the app whose secret was presented, or None; the node's own secret is app ``""``.
    ``rtmp_url(room)`` is the ``rtmp://host:port/live`` that takes the room's publishers, or None
    when RTMP ingest is off (a ``rtmp`` token is then a 503)."""

    def app_of(presented: str | None) -> str | None:
        if presented is None:
            return None
        if app_secret_matches(config.secret, presented):
            return ""
        return tenant_app(presented) if tenant_app is not None else None
    api = APIRouter()
    token_body = body_schema(TokenRequest)

    @api.post(
        "/token/{kind}",
        tags=["tokens"],
        summary="Create a session token (atm0s 0.2 compatible)",
        response_model=TokenResponse,
        response_model_exclude_none=True,  # other kinds keep atm0s's one-field data
        description="``rtmp`` tokens are stream keys: the answer also has ``rtmp_url`` (OBS's Server), "
        "``stream_key`` and ``publish_url`` (ffmpeg's output URL); see docs/rtmp.md.",
        responses={
            400: {"description": "the body does not validate; the error says why"},
            401: {"description": "wrong app secret"},
            503: {"description": "rtmp: RTMP ingest is off (--rtmp-port 0) or no media worker"},
            413: {"description": "body too large"},
            415: {"description": "Content-Type is not application/json"},
            429: {"description": "too many wrong secrets from this address; see Retry-After"},
        },
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": token_body}}, "required": True}},
    )
    async def create_token(
        kind: Kind,
        request: Request,
        authorization: str | None = Header(None, description="Bearer <app secret>"),
    ) -> Any:
        source = source_key(client_address(request, config.secret))
        now = time.monotonic()
        wait = throttle.retry_after(source, now)
        if wait:
            return error(429, f"too many wrong app secrets from this address; retry in {wait} s",
                         {"Retry-After": str(wait)})  # fmt: skip
        app = app_of(bearer(authorization))
        if app is None:  # neither the app secret nor any tenant's: one failure for this source
            throttle.failed(source, now)
            return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
        body = await read_json(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            req = TokenRequest.model_validate(body)
        except ValidationError as exc:
            return error(400, f"invalid request: {_problems(exc)}")
        problem = _needs(kind, req.room, req.peer)
        if problem is not None:
            return error(400, problem)
        publish: tuple[str, ...] = ()
        subscribe: tuple[str, ...] = ()
        if kind == "moq":
            scopes = moq_scopes(req)
            if isinstance(scopes, str):
                return error(400, scopes)
            publish, subscribe = scopes
        elif req.publish is not None or req.subscribe is not None:
            return error(400, "invalid request: publish and subscribe are for moq tokens")
        # A tenant's token carries its app (JWT ``sub``) and is signed with the node's token key like
        # every other, so WHIP/WHEP/SDK verify it with config.token_key in both token modes.
        url = None
        if kind == "rtmp":
            assert req.room is not None  # _needs
            url = rtmp_url(req.room) if rtmp_url is not None else None
            if url is None:
                return error(503, "RTMP ingest is off on this node (--rtmp-port 0) or it has no media worker")
        token = SessionToken(
            kind, req.room, req.peer, req.record, req.extra_data, app=app, publish=publish, subscribe=subscribe
        )
        signed = issue(config.token_key, token, req.ttl, int(time.time()))
        if url is not None:
            return ok({"token": signed, "rtmp_url": url, "stream_key": signed, "publish_url": f"{url}/{signed}"})
        if kind == "sip":
            assert req.room is not None  # _needs
            return ok({"token": signed, **sip_credentials(config, req.room, req.peer, int(time.time()) + req.ttl)})
        return ok({"token": signed})

    if config.dev:

        @api.get(
            "/dev/token/{kind}",
            tags=["tokens"],
            summary="--dev only: a demo token for a loopback client (no secret needed)",
            response_model=TokenResponse,
            responses={403: {"description": "not a loopback client"}, 400: {"description": "bad room or peer"}},
        )
        async def dev_token(kind: Kind, request: Request, room: str = "demo", peer: str | None = None) -> Any:
            # The peer address only: a gateway's forwarded header never makes a remote client local.
            if request.client is None or not is_loopback(request.client.host):
                return error(403, "demo tokens are for loopback clients only (--dev)")
            try:
                req = TokenRequest.model_validate({"room": room, "peer": peer, "ttl": DEV_TOKEN_TTL})
            except ValidationError as exc:
                return error(400, f"invalid request: {_problems(exc)}")
            problem = _needs(kind, req.room, req.peer)
            if problem is not None:
                return error(400, problem)
            scopes = moq_scopes(req) if kind == "moq" else ((), ())
            if isinstance(scopes, str):
                return error(400, scopes)
            token = SessionToken(kind, req.room, req.peer, publish=scopes[0], subscribe=scopes[1])
            return ok({"token": issue(config.token_key, token, DEV_TOKEN_TTL, int(time.time()))})

    return api


async def read_json(request: Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The parsed JSON body, or the enveloped 415/413/400 refusal."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return error(413, f"body larger than {max_bytes} bytes")
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != "application/json":
        return error(415, f"Content-Type must be application/json, got {given or 'none'}")
    raw = b""
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_bytes:
                return error(413, f"body larger than {max_bytes} bytes")
    except ClientDisconnect:
        # The client went away mid-body (or the body cap below us cut it): nobody reads an
        # answer, and a gone client is not a server error worth a traceback.
        return error(400, "the client disconnected before its body was complete")
    try:
        return json.loads(raw)
    except ValueError:
        return error(400, "invalid request: the body is not JSON")
