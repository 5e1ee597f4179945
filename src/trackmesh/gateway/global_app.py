"""The global gateway's HTTP API: each call goes to the best zone's gateway (gateway/zone_choice.py).

- New sessions (``POST /token/<kind>``, ``/whip/endpoint``, ``/whep/endpoint``, ``/webrtc/connect``,
  ``GET /samples/*``) are proxied to a gateway of the chosen zone (same path and query, ``zone``
  removed); when that gateway answers 503 (the zone filled up since its last summary) or does not
  answer, the next zone of the ranking is tried. Answers carry ``X-Trackmesh-Zone`` (the zone
  chosen) and ``X-Trackmesh-Route`` (``named``, ``rtt``, ``geo``, ``load`` or ``conn``).
- With ``--global-redirect`` the global gateway answers ``307 Temporary Redirect`` to the zone
  gateway instead (same method and body). Only for clients that follow redirects *and* send their
  credentials again: HTTP clients drop ``Authorization`` on a redirect to another origin (httpx,
  browsers' fetch), so a WHIP/WHEP client with a bearer token needs the proxy.
- Calls on a conn id (``PATCH``/``DELETE /whip|whep/conn/<id>``, ``/whep/conn/<id>/limit``,
  ``/webrtc/<id>/...``) go to a gateway of the zone the (signed) conn id names; forged: 404. The
  zone gateway's ``Location`` is relative, so proxied clients keep talking to the global gateway.
- ``?zone_rtt=1:23,2:41`` / ``X-Trackmesh-Zone-Rtt``: the client's measured RTT (ms) to zone
  gateways (``GET /api/zone/ping`` on each, listed at ``GET /api/global/zones``); the lowest RTT
  weighed by load wins (gateway/zone_choice.py), else GeoIP, else load.
- Errors: an unknown ``?zone=`` is 400 with the zones known; a malformed ``zone_rtt`` is 400 with what
  is wrong; no zone with room is 503 with the reason.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse

from trackmesh import __version__
from trackmesh.config import NodeConfig
from trackmesh.core.audit import RouteAudit, RouteFailure
from trackmesh.core.ids import ConnIdCodec, InvalidConnId, SessionIdGenerator
from trackmesh.http.exposition import Exposition
from trackmesh.http.headers import bearer
from trackmesh.http.health import add_health_routes
from trackmesh.http.token_http import FORWARDED_CLIENT_HEADER, client_address, refuse_app_secret
from trackmesh.security.keys import sign_forwarded
from trackmesh.security.throttle import FailureThrottle
from trackmesh.security.tokens import app_secret_matches

from .app import FORWARDED_HEADER, MAX_BODY, REQUEST_HEADERS, RESPONSE_HEADERS, SERVED_HEADER
from .directory import ZoneDirectory
from .geo import GeoDb
from .route_report import report_failure
from .zone_choice import ZoneRttError, parse_zone_rtt, rank_zones


class GlobalGatewayNode(Protocol):
    """What the HTTP API needs of the global gateway (gateway/global_gateway.py implements it)."""

    config: NodeConfig
    index: int
    url: str
    started_at: float
    draining: bool
    zones: ZoneDirectory
    codec: ConnIdCodec
    geo: GeoDb | None
    counters: dict[str, int]
    client: Any  # httpx.AsyncClient
    redirect: bool
    route_audit: RouteAudit | None  # where route events go (gateway/route_report.py); None: not reported
    route_ids: SessionIdGenerator

    def now(self) -> float: ...

    def link_metrics(self) -> dict[str, float]:
        """Its route events' link to a zone's connector (runtime/connector_link.py); {} without one."""
        ...

    def readiness(self) -> tuple[bool, str]: ...

ZONE_HEADER = "x-trackmesh-zone"
ZONE_RTT_HEADER = "x-trackmesh-zone-rtt"
ZONE_RTT_PARAM = "zone_rtt"
ROUTE_HEADER = "X-Trackmesh-Route"


def _problem(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith(("/token/", "/api/")):
        return JSONResponse({"status": False, "error": message}, status_code=status)
    return PlainTextResponse(message + "\n", status_code=status)


def render_global_metrics(gw: GlobalGatewayNode, now: float) -> str:
    exp = Exposition()
    exp.gauge("trackmesh_info", "Build and role of this node", 1, {"version": __version__, "role": "global-gateway"})
    exp.gauge("trackmesh_ready", "1 when the node takes new requests (GET /api/node/health)",
              1 if gw.readiness()[0] else 0)
    counters = {**gw.counters, "bad_summaries": gw.zones.bad_summaries}
    if gw.geo is not None:
        counters.update(geo_lookups=gw.geo.lookups, geo_misses=gw.geo.misses)
    for name, value in sorted(counters.items()):
        exp.counter(f"trackmesh_global_{name}", f"Global gateway counter {name}", value)
    zones = sorted(gw.zones.zones(now).items())
    for zone, e in zones:
        exp.gauge("trackmesh_global_zone_free", "Free session capacity a zone last summarised", e.free,
                  {"zone": str(zone)})
    for zone, e in zones:
        exp.gauge("trackmesh_global_zone_nodes", "Healthy media nodes a zone last summarised", e.nodes,
                  {"zone": str(zone)})
    for name, link_value in gw.link_metrics().items():  # its refusals, to a zone's connector
        exp.gauge("trackmesh_connector_link", "Route events to a zone's connector: pending (queued, spilled or "
                  "unacknowledged), batches sent, resent and acknowledged, events spilled to disk or dropped",
                  link_value, {"what": name})
    return exp.render()[0]


class ProxyFailed(Exception):
    pass


def create_global_app(gw: GlobalGatewayNode) -> FastAPI:
    app = FastAPI(title="trackmesh global gateway", version=__version__,
                  description="Sends each client to the best zone's gateway (307).")  # fmt: skip
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization", "Content-Type", "If-Match", "X-Trackmesh-Zone", "X-Trackmesh-Node", "X-Trackmesh-Zone-Rtt",
        ],
        expose_headers=["Location", "ETag", "Accept-Patch", "Link", "X-Trackmesh-Zone", ROUTE_HEADER, SERVED_HEADER],
        max_age=3600,
    )

    async def body_of(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise ProxyFailed(f"body larger than {MAX_BODY} bytes")
        return body

    async def forward(request: Request, body: bytes, base: str, zone: int, why: str) -> Response:
        """307 to ``base`` (``--global-redirect``) or the zone gateway's answer, proxied."""
        import httpx

        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("zone", ZONE_RTT_PARAM)]
        marks = {"X-Trackmesh-Zone": str(zone), ROUTE_HEADER: why}
        if gw.redirect:
            url = base + request.url.path + ("?" + urlencode(query) if query else "")
            return RedirectResponse(url, status_code=307, headers=marks)
        headers = {k: v for k, v in request.headers.items() if k in REQUEST_HEADERS}
        headers[FORWARDED_HEADER] = "global"  # the zone gateway serves it in its zone, never forwards it again
        # The client's address, signed, so the zone's media nodes throttle per real client (gateway/app.py).
        headers[FORWARDED_CLIENT_HEADER] = sign_forwarded(gw.config.secret, client_address(request, gw.config.secret))
        try:
            resp = await gw.client.request(request.method, base + request.url.path, params=query,
                                           content=body or None, headers=headers)  # fmt: skip
        except httpx.TransportError as exc:
            gw.counters["zone_errors"] += 1
            raise ProxyFailed(f"gateway of zone {zone} did not answer: {exc!r}") from None
        out = {k: v for k, v in resp.headers.items() if k.lower() in RESPONSE_HEADERS}
        if SERVED_HEADER.lower() in resp.headers:
            out[SERVED_HEADER] = resp.headers[SERVED_HEADER.lower()]
        return Response(resp.content, status_code=resp.status_code, headers={**out, **marks})

    async def route_new(request: Request) -> Response:
        now = gw.now()
        zones = gw.zones.zones(now)
        body = await body_of(request)
        raw = request.query_params.get("zone") or request.headers.get(ZONE_HEADER)
        if raw:
            want = int(raw) if raw.isdigit() else None
            if want is None or want not in zones:
                gw.counters["unknown_zone"] += 1
                known = ", ".join(str(z) for z in sorted(zones)) or "none"
                return _problem(request, 400, f"unknown zone {raw!r}: zones with a live gateway are {known}")
            gw.counters["routed_named"] += 1
            return await forward(request, body, zones[want].url, want, "named")
        rtt = None
        raw_rtt = request.query_params.get(ZONE_RTT_PARAM) or request.headers.get(ZONE_RTT_HEADER)
        if raw_rtt is not None:
            try:
                rtt = parse_zone_rtt(raw_rtt)
            except ZoneRttError as exc:
                gw.counters["bad_zone_rtt"] += 1
                return _problem(request, 400, f"bad zone_rtt {raw_rtt[:200]!r}: {exc}")
        client = None
        if gw.geo is not None and not (rtt and any(z in zones for z in rtt)):
            client = gw.geo.locate(client_address(request, gw.config.secret))
        ranked = rank_zones(zones.values(), client, rtt)
        if not ranked:
            gw.counters["no_zone"] += 1
            why = "no zone is known" if not zones else f"{len(zones)} zone(s) known, none with free capacity"
            request.state.route_failure = RouteFailure.POOL_EMPTY
            return _problem(request, 503, f"no zone can take a new session: {why}")
        last = ""
        candidates = ranked[:3]
        for entry, why in candidates:
            try:
                resp = await forward(request, body, entry.url, entry.zone, why)
            except ProxyFailed as exc:
                last = str(exc)
                continue
            if resp.status_code == 503 and entry is not candidates[-1][0]:
                last = f"zone {entry.zone} answered 503"
                continue  # filled up since its last summary: the next best zone
            gw.counters[f"routed_{why}"] += 1
            return resp
        gw.counters["no_zone"] += 1
        request.state.route_failure = RouteFailure.GATEWAY_ERROR  # every zone gateway tried failed
        return _problem(request, 503, f"no zone can take a new session: {last}")

    async def route_conn(request: Request, conn_id: str, *, rebuild: bool = False) -> Response:
        try:
            parts = gw.codec.decode(conn_id)
        except InvalidConnId:
            gw.counters["unknown_conn"] += 1
            return _problem(request, 404, "unknown conn id")
        zone = parts.node_id >> 8
        entry = gw.zones.zones(gw.now()).get(zone)
        if entry is None:
            if rebuild:  # the zone is gone: another zone's node rebuilds the session (docs/cluster.md)
                return await route_new(request)
            gw.counters["unknown_conn"] += 1
            return _problem(request, 404, f"unknown conn id: zone {zone} has no live gateway")
        gw.counters["routed_conn"] += 1
        try:
            return await forward(request, await body_of(request), entry.url, zone, "conn")
        except ProxyFailed as exc:
            return _problem(request, 502, str(exc))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    add_health_routes(app, "global-gateway", gw.readiness, lambda: gw.draining)

    def unauthorized(request: Request) -> Response | None:
        expected = gw.config.metrics_token
        presented = bearer(request.headers.get("authorization"))
        if not expected or (presented is not None and app_secret_matches(expected, presented)):
            return None
        return JSONResponse({"status": False, "error": "this node requires Authorization: Bearer <--metrics-token>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.get("/api/node/info", tags=["node"], summary="Zones followed, GeoIP database, routing counters")
    async def info(request: Request) -> Any:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        now = gw.now()
        return {
            "status": True,
            "data": {
                "version": __version__,
                "role": "global-gateway",
                "gateway": gw.index,
                "url": gw.url,
                "uptime_s": round(time.time() - gw.started_at, 1),
                "geoip_db": gw.geo.database_type if gw.geo is not None else None,
                "zones": gw.zones.summary(now),
                "counters": {**gw.counters, "bad_summaries": gw.zones.bad_summaries},
            },
        }

    @app.get("/api/global/zones", tags=["zones"], summary="Zones with a live gateway, and where to time them")
    async def zones_list() -> Any:
        """What a client needs to measure its RTT to each zone: time ``ping`` (an empty 204 answer of a
        gateway of the zone) a few times, keep the smallest, and send ``?zone_rtt=ZONE:MS,...`` with its
        next new-session call here."""
        now = gw.now()
        out = [
            {"zone": z, "url": e.url, "ping": e.url + "/api/zone/ping", "free": e.free, "nodes": e.nodes,
             "location": list(e.location) if e.location is not None else None}
            for z, e in sorted(gw.zones.zones(now).items())
        ]  # fmt: skip
        return {"status": True, "data": {"zones": out}}

    @app.get("/metrics", tags=["node"], summary="Prometheus metrics: routing counters, zones followed")
    async def metrics(request: Request) -> Response:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        return Response(render_global_metrics(gw, gw.now()), media_type="text/plain; version=0.0.4")

    # As at a zone gateway (gateway/app.py): failed app secrets are throttled per client before
    # anything about the zones is told (the zone gateway behind checks again).
    throttle = FailureThrottle()
    app.state.auth_throttle = throttle

    refusals: dict[int | str, dict[str, Any]] = {401: {"description": "wrong app secret"},
                                                 429: {"description": "too many wrong secrets"}}  # fmt: skip

    @app.post("/token/{kind}", tags=["tokens"], summary="Create a session token in the best zone", responses=refusals)
    async def token(kind: str, request: Request) -> Response:
        refused = refuse_app_secret(request, gw.config.secret, throttle)
        if refused is not None:
            return refused
        return await route_new(request)

    @app.post("/whip/endpoint", tags=["whip"], summary="WHIP: 307 to the best zone's gateway")
    @app.post("/whep/endpoint", tags=["whep"], summary="WHEP: 307 to the best zone's gateway")
    @app.post("/webrtc/connect", tags=["sdk"], summary="SDK connect: 307 to the best zone's gateway")
    async def new_session(request: Request) -> Response:
        started = time.monotonic()
        response = await route_new(request)
        failure = getattr(request.state, "route_failure", None)
        if failure is not None:  # this gateway refused it (a zone's own refusal is that zone's to report)
            if gw.route_audit is None:
                gw.counters["unreported_refusals"] += 1  # no zone's connector seen yet
            report_failure(gw.route_audit, gw.route_ids, gw.config.secret, request, started, 503, failure)
        return response

    @app.get("/samples/{name}", include_in_schema=False)
    async def sample(name: str, request: Request) -> Response:
        return await route_new(request)

    @app.patch("/whip/conn/{conn_id}", tags=["whip"])
    @app.delete("/whip/conn/{conn_id}", tags=["whip"])
    @app.patch("/whep/conn/{conn_id}", tags=["whep"])
    @app.delete("/whep/conn/{conn_id}", tags=["whep"])
    @app.post("/whep/conn/{conn_id}/limit", tags=["whep"])
    @app.post("/webrtc/{conn_id}/ice-candidate", tags=["sdk"])
    async def on_conn(conn_id: str, request: Request) -> Response:
        return await route_conn(request, conn_id)

    @app.post("/webrtc/{conn_id}/restart-ice", tags=["sdk"], summary="SDK ICE restart: the conn id's zone")
    async def restart_ice(conn_id: str, request: Request) -> Response:
        return await route_conn(request, conn_id, rebuild=True)

    return app
