"""The router's HTTP API: health, info and Prometheus metrics (it serves no media API)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from trackmesh import __version__
from trackmesh.config import NodeConfig
from trackmesh.http.exposition import Exposition
from trackmesh.http.headers import bearer
from trackmesh.http.health import add_health_routes
from trackmesh.security.tokens import app_secret_matches


class RouterNode(Protocol):
    """What the HTTP API needs of the router (router/node.py implements it)."""

    config: NodeConfig
    draining: bool

    def readiness(self) -> tuple[bool, str]: ...

    def info(self) -> dict[str, Any]: ...


def render_router_metrics(router: RouterNode) -> str:
    info = router.info()
    labels = {"zone": str(info["zone"]), "router": str(info["router"])}
    ready, _ = router.readiness()
    exp = Exposition()
    exp.gauge("trackmesh_info", "Build and role of this node", 1, {"version": __version__, "role": "router"})
    exp.gauge("trackmesh_router_ready", "1 when the router is open and linked to another router (or has none to dial)",
              int(ready), labels)
    doc = "Authenticated zenoh links of this router, by the other side's mode"
    exp.gauge("trackmesh_router_links", doc, info["routers"], {**labels, "kind": "router"})
    exp.gauge("trackmesh_router_links", doc, info["peers"], {**labels, "kind": "peer"})
    exp.gauge("trackmesh_router_links", doc, info["clients"], {**labels, "kind": "client"})
    return exp.render()[0]


def create_router_app(router: RouterNode) -> FastAPI:
    app = FastAPI(title="trackmesh router", version=__version__,
                  description="Zone router: relays its zone's cluster (zenoh) traffic; no media API.")  # fmt: skip

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    add_health_routes(app, "router", router.readiness, lambda: router.draining)

    def unauthorized(request: Request) -> Response | None:
        expected = router.config.metrics_token
        presented = bearer(request.headers.get("authorization"))
        if not expected or (presented is not None and app_secret_matches(expected, presented)):
            return None
        return JSONResponse({"status": False, "error": "this node requires Authorization: Bearer <--metrics-token>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.get("/api/node/info", tags=["node"], summary="Zone, listen endpoint, seeds and links of the router")
    async def info(request: Request) -> Any:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        return {"status": True, "data": {"version": __version__, **router.info()}}

    @app.get("/metrics", tags=["node"], summary="Prometheus metrics: readiness and links")
    async def metrics(request: Request) -> Response:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        return Response(render_router_metrics(router), media_type="text/plain; version=0.0.4")

    return app
