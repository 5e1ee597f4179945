"""The node's HTTP API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from pydantic import BaseModel, Field

from trackmesh import __version__
from trackmesh.runtime.worker import RpcError
from trackmesh.security.tokens import SessionToken, app_secret_matches, issue

from .envelope import error, ok
from .metrics import render_metrics
from .requests import bearer

if TYPE_CHECKING:
    from trackmesh.runtime.node import Node


class TokenRequest(BaseModel):
    room: str | None = Field(None, min_length=1, max_length=128, description="room the token is for")
    peer: str | None = Field(None, min_length=1, max_length=128, description="peer name in the room")
    ttl: int = Field(..., gt=0, le=7 * 24 * 3600, description="lifetime in seconds")
    record: bool = Field(False, description="record this peer's media")
    extra_data: str | None = Field(None, max_length=4096, description="opaque data handed to other peers")


class TokenData(BaseModel):
    token: str


class TokenResponse(BaseModel):
    status: bool
    data: TokenData


def create_app(node: Node) -> FastAPI:
    app = FastAPI(
        title="trackmesh",
        version=__version__,
        description="Decentralized media server: tokens, WHIP, WHEP, WebRTC SDK and node APIs.",
    )
    app.state.node = node
    # WHIP/WHEP pages on another origin must be able to call us (RFC 9725 s4.7).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "If-Match"],
        expose_headers=["Location", "ETag", "Accept-Patch", "Link"],
        max_age=3600,
    )

    @app.exception_handler(RpcError)
    async def rpc_error(request: Request, exc: RpcError) -> Any:
        if request.url.path.startswith(("/whip/", "/whep/", "/webrtc/")):
            # WHIP/WHEP and SDK clients read plain-text problems; the JSON envelope is for JSON APIs.
            return PlainTextResponse(exc.message + "\n", status_code=exc.status)
        return error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error(400, f"invalid request: {problems}")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/api/node/health", tags=["node"], summary="Liveness and readiness of this node")
    async def health() -> JSONResponse:
        ready, reason = node.readiness()
        data: dict[str, Any] = {"ready": ready, "role": node.config.role, "draining": node.draining}
        if not ready:
            data["reason"] = reason
        body = ok(data)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/api/node/info", tags=["node"], summary="Identity, version and workers of this node")
    async def info() -> dict[str, Any]:
        return ok(
            {
                "version": __version__,
                "role": node.config.role,
                "node_id": node.config.node_id,
                "zone": node.config.zone,
                "loop": node.loop_name,
                "uptime_s": round(time.time() - node.started_at, 1),
                "workers": await node.stats(),
            }
        )

    @app.get("/metrics", tags=["node"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text, content_type = render_metrics(node, await node.stats())
        return PlainTextResponse(text, media_type=content_type)

    @app.post(
        "/token/{kind}",
        tags=["tokens"],
        summary="Create a session token (atm0s 0.2 compatible)",
        response_model=TokenResponse,
        responses={400: {"description": "bad request"}, 401: {"description": "wrong app secret"}},
    )
    async def create_token(
        kind: Literal["whip", "whep", "webrtc", "rtpengine"],
        body: TokenRequest,
        authorization: str | None = Header(None, description="Bearer <app secret>"),
    ) -> Any:
        presented = bearer(authorization)
        app = _app_of(node, presented)
        if app is None:
            return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
        room, peer = body.room, body.peer
        if kind in ("whip", "rtpengine") and (room is None or peer is None):
            return error(400, f"invalid request: a {kind} token needs room and peer")
        if kind == "whep" and room is None:
            return error(400, "invalid request: a whep token needs room")
        token = SessionToken(kind, room, peer, body.record, body.extra_data, app=app)
        return ok({"token": issue(node.config.secret, token, body.ttl, int(time.time()))})

    for router in node_routers(node):
        app.include_router(router)
    return app


def _app_of(node: Node, presented: str | None) -> str | None:
    """The app whose secret was presented: "" for the node's ``--secret``, an app id from the
    connector's app list (multi-tenancy, docs/connector.md), or None."""
    if presented is None:
        return None
    if app_secret_matches(node.config.secret, presented):
        return ""
    connector = getattr(node, "connector", None)
    return connector.apps.app_for_secret(presented) if connector is not None else None


def node_routers(node: Node) -> list[Any]:
    """Routers the transports add (WHIP, WHEP, SDK...) and the sample pages."""
    routers: list[Any] = []
    try:
        from trackmesh.http.sdk_http import router as sdk_router
    except ImportError:
        pass
    else:
        # First: its /samples/room.html must win over the generic /samples/{name} route.
        routers.append(sdk_router(node))
    try:
        from trackmesh.connector.api import router as connector_router
    except ImportError:
        pass
    else:
        routers.append(connector_router(lambda: getattr(node, "connector", None)))
    try:
        from trackmesh.http.whip_whep import router as webrtc_router
    except ImportError:
        pass
    else:
        # On a node without media workers the routes still exist and answer 503 with a reason.
        routers.append(webrtc_router(node))
    return routers
