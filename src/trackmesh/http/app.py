"""The node's HTTP API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trackmesh import __version__
from trackmesh.rpc import RpcError
from trackmesh.security.throttle import FailureThrottle
from trackmesh.security.tokens import app_secret_matches

from .connector_http import router as connector_router
from .docs import create_docs_app
from .envelope import error, ok
from .headers import bearer
from .health import add_health_routes
from .metrics import render_metrics
from .record_http import router as record_router
from .requests import app_token_keys
from .rtmp_http import router as rtmp_router
from .rtmp_http import rtmp_url
from .rtpengine_http import router as rtpengine_router
from .sdk_http import router as sdk_router
from .sip_http import router as sip_router
from .token_http import router as token_router
from .whip_whep import router as whip_whep_router

if TYPE_CHECKING:
    from .api import NodeApi


# Paths whose clients (WHIP/WHEP, the atm0s SDK) read plain-text problems; the rest speak the
# {"status": false, "error"} envelope of atm0s's JSON APIs.
PLAIN_TEXT_PATHS = ("/whip/", "/whep/", "/webrtc/", "/rtpengine/")


def problem_for(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    path = request.url.path
    if path.startswith(PLAIN_TEXT_PATHS) and not path.endswith("/limit"):
        return PlainTextResponse(message + "\n", status_code=status, headers=headers)
    return error(status, message, headers)


def create_app(node: NodeApi) -> FastAPI:
    app = create_docs_app(
        title="trackmesh",
        version=__version__,
        description="Decentralized media server: tokens, WHIP, WHEP, WebRTC SDK, RTMP ingest and node APIs.",
    )
    app.state.node = node
    app.state.auth_throttle = throttle = FailureThrottle()
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
        return problem_for(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # 404/405 and friends in the same shapes as our own refusals (not FastAPI's {"detail"}).
        return problem_for(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette still re-raises, so the traceback is logged (under trackmesh.http) once.
        return problem_for(request, 500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return problem_for(request, 400, f"invalid request: {problems}")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    add_health_routes(app, node.config.role, node.readiness, lambda: node.draining)

    def unauthorized(authorization: str | None) -> JSONResponse | None:
        expected = node.config.metrics_token
        presented = bearer(authorization)
        if not expected or (presented is not None and app_secret_matches(expected, presented)):
            return None
        return error(401, "this node requires Authorization: Bearer <--metrics-token>", {"WWW-Authenticate": "Bearer"})

    @app.get(
        "/api/node/info",
        tags=["node"],
        summary="Identity, version and workers of this node",
        description="No authentication unless the node runs with --metrics-token (docs/security.md).",
        responses={401: {"description": "--metrics-token is set and the bearer does not match"}},
    )
    async def info(authorization: str | None = Header(None)) -> Any:
        refused = unauthorized(authorization)
        if refused is not None:
            return refused
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

    @app.get(
        "/moq/certificate.sha256",
        tags=["moq"],
        summary="SHA-256 of the Media over QUIC certificate (lowercase hex)",
        description="For WebTransport's serverCertificateHashes and for pinning raw QUIC clients "
        "(docs/moq.md). 404 when the node runs without MoQ (--moq-port 0).",
        response_class=PlainTextResponse,
        responses={404: {"description": "MoQ is off on this node"}},
    )
    async def moq_certificate_sha256() -> Response:
        listener = getattr(node, "moq", None)
        if listener is None:
            return error(404, "Media over QUIC is off on this node (--moq-port 0)")
        return PlainTextResponse(listener.certificate_sha256 + "\n", headers={"Cache-Control": "no-store"})

    @app.get(
        "/metrics",
        tags=["node"],
        summary="Prometheus metrics",
        description="No authentication unless the node runs with --metrics-token (docs/security.md).",
        response_class=PlainTextResponse,
        responses={401: {"description": "--metrics-token is set and the bearer does not match"}},
    )
    async def metrics(authorization: str | None = Header(None)) -> Response:
        refused = unauthorized(authorization)
        if refused is not None:
            return refused
        text, content_type = render_metrics(node, await node.stats(media=True), throttle)
        return PlainTextResponse(text, media_type=content_type)

    app.include_router(token_router(node.config, throttle, _tenant_app(node), rtmp_url(node), app_token_keys(node)))
    app.include_router(sip_router(node))
    if node.config.role in ("standalone", "console"):
        # The operator's console (docs/console.md); cluster media nodes and gateways have none.
        from .console.routes import console_router

        app.include_router(console_router(node, throttle))
    for router in node_routers(node):
        app.include_router(router)
    return app


def _tenant_app(node: NodeApi) -> Callable[[str], str | None]:
    """The app (multi-tenancy, docs/connector.md) whose secret was presented, from the node's
    app list at the time of the request (its connector's, or the zone connector's in a cluster);
    None without one or a match."""

    def tenant_app(presented: str) -> str | None:
        apps = node.apps
        return apps.app_for_secret(presented) if apps is not None else None

    return tenant_app


def node_routers(node: NodeApi) -> list[Any]:
    """Routers the transports add (WHIP, WHEP, SDK...), the connector's log API and the sample pages."""
    # First: the SDK's /samples/room.html must win over the generic /samples/{name} route.
    # On a node without media workers the WHIP/WHEP routes still exist and answer 503 with a reason;
    # on one without a connector the /api/connector routes answer 503.
    return [
        sdk_router(node),
        connector_router(lambda: node.connector),
        whip_whep_router(node),
        record_router(node),
        rtmp_router(node),
        rtpengine_router(node),
    ]
