"""The gateway's HTTP API: the media APIs of a media node, routed.

New sessions (``POST /token/<kind>``, ``/whip/endpoint``, ``/whep/endpoint``, ``/webrtc/connect``)
go to the least-loaded healthy media node of the zone; follow-up calls on a conn id
(``PATCH``/``DELETE /whip|whep/conn/<id>``, ``/whep/conn/<id>/limit``, ``/webrtc/<id>/...``,
``DELETE /rtmp/conn/<id>``) go to
the node that owns it (conn ids are signed and carry the node id). The call is proxied: the client
sees the node's answer, and the relative ``Location`` keeps pointing at the gateway.

Routing controls (query parameter or header; see docs/cluster.md):

- ``?zone=Z`` / ``X-Trackmesh-Zone: Z``: serve the request in zone Z (via one of its gateways).
- ``?node=N`` / ``X-Trackmesh-Node: N``: pin node N of the zone (tests, operators).

``POST /token/rtmp`` is answered by the chosen media node; a gateway with ``--rtmp-port`` puts its
own ``rtmp://`` URL in the answer (its port splices encoders to the zone's media nodes:
rtmp_splice.py), one without leaves the node's.

SIP dial-outs (docs/sip.md, *In a cluster*): ``POST /sip/invite/server`` and ``POST /api/sip/calls``
go to the least-loaded media node that runs SIP; ``POST /sip/invite/client`` to the node that holds
the softphone's REGISTER binding (each SIP node of the zone is asked in turn until one does not
answer 404: bindings are not in the load reports); ``DELETE /sip/call/<id>``,
``DELETE /api/sip/calls/<id>`` and their ``/dtmf`` to the node that owns the call (session ids carry
the node id, like conn ids).

Every proxied answer carries ``X-Trackmesh-Served-By: <zone>/<node>``. A request already forwarded
by another gateway (``X-Trackmesh-Forwarded``) is never forwarded again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trackmesh import __version__
from trackmesh.core.ids import InvalidConnId, SessionId, session_node
from trackmesh.http.body_schema import body_schema
from trackmesh.http.docs import create_docs_app
from trackmesh.http.headers import bearer
from trackmesh.http.health import add_health_routes
from trackmesh.http.sip_http import DialRequest, DtmfRequest, InviteClientRequest, InviteServerRequest
from trackmesh.http.token_http import FORWARDED_CLIENT_HEADER, client_address, refuse_app_secret
from trackmesh.security.keys import sign_forwarded
from trackmesh.security.throttle import FailureThrottle
from trackmesh.security.tokens import app_secret_matches

from .directory import NodeEntry
from .metrics import render_gateway_metrics
from .route_report import report_failure, report_success
from .sip_proxy import sip_address

if TYPE_CHECKING:
    from .api import GatewayApi

MAX_BODY = 256 * 1024
ZONE_HEADER = "x-trackmesh-zone"
NODE_HEADER = "x-trackmesh-node"
FORWARDED_HEADER = "x-trackmesh-forwarded"
SERVED_HEADER = "X-Trackmesh-Served-By"


def _rtmp_via_gateway(resp: Response, request: Request, port: int) -> Response:
    """A media node's ``/token/rtmp`` answer with the gateway's own RTMP URL (its --rtmp-port
    splices to the zone's media nodes), on the host the client reached the gateway by."""
    import json

    try:
        body = json.loads(bytes(resp.body))
        data = body["data"]
        host = (request.url.hostname or "127.0.0.1").strip("[]")
        url = f"rtmp://{f'[{host}]' if ':' in host else host}:{port}/live"
        data["rtmp_url"], data["publish_url"] = url, f"{url}/{data['stream_key']}"
    except (ValueError, KeyError, TypeError):
        return resp  # not the answer we know: passed on as it is
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(body, status_code=200, headers=headers)
REQUEST_HEADERS = ("authorization", "content-type", "if-match", "accept")
RESPONSE_HEADERS = ("content-type", "location", "etag", "accept-patch", "link", "www-authenticate", "retry-after")
ROUTING_PARAMS = ("zone", "node", "zone_rtt")  # zone_rtt: for global gateways (gateway/zone_choice.py)


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _problem(request: Request, status: int, message: str) -> Response:
    path = request.url.path
    if path.startswith(("/whip/", "/whep/", "/webrtc/")) and not path.endswith("/limit"):
        return PlainTextResponse(message + "\n", status_code=status)
    return JSONResponse({"status": False, "error": message}, status_code=status)


def _int_choice(request: Request, param: str, header: str, what: str, high: int) -> int | None:
    raw = request.query_params.get(param) or request.headers.get(header)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > high:
        raise RouteError(400, f"{param} must be a {what} 0..{high}, got {raw!r}")
    return int(raw)


def create_gateway_app(gw: GatewayApi) -> FastAPI:
    app = create_docs_app(
        title="trackmesh gateway",
        version=__version__,
        description="Zone gateway: routes tokens, WHIP, WHEP and SDK calls to media nodes.",
    )
    app.state.node = gw
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "X-Trackmesh-Zone", "X-Trackmesh-Node"],
        expose_headers=["Location", "ETag", "Accept-Patch", "Link", SERVED_HEADER, "X-Trackmesh-Zone"],
        max_age=3600,
    )
    zone = gw.config.zone

    @app.exception_handler(RouteError)
    async def route_error(request: Request, exc: RouteError) -> Response:
        return _problem(request, exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _problem(request, exc.status_code, str(exc.detail))

    async def body_of(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise RouteError(413, f"body larger than {MAX_BODY} bytes")
        return body

    def query_without(request: Request, drop: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in request.query_params.multi_items() if k not in drop]

    async def send(request: Request, base: str, body: bytes, *, drop: tuple[str, ...], extra: dict[str, str],
                   served_by: str | None) -> Response:  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k in REQUEST_HEADERS}
        # The client's address, signed, so a media node throttles failed secrets per real client.
        headers[FORWARDED_CLIENT_HEADER] = sign_forwarded(gw.config.secret, client_address(request, gw.config.secret))
        headers.update(extra)
        resp = await gw.client.request(
            request.method,
            base + request.url.path,
            params=query_without(request, drop),
            content=body if body else None,
            headers=headers,
        )
        out = {k: v for k, v in resp.headers.items() if k.lower() in RESPONSE_HEADERS}
        out.pop("content-length", None)
        if served_by is not None:
            out[SERVED_HEADER] = served_by
        elif SERVED_HEADER.lower() in resp.headers:
            out[SERVED_HEADER] = resp.headers[SERVED_HEADER.lower()]
        return Response(resp.content, status_code=resp.status_code, headers=out)

    async def to_node(request: Request, entry: NodeEntry, body: bytes) -> Response:
        import httpx

        try:
            resp = await send(request, entry.http, body, drop=ROUTING_PARAMS, extra={},
                              served_by=f"{entry.zone}/{entry.node}")  # fmt: skip
        except httpx.TransportError as exc:
            gw.counters["node_errors"] += 1
            gw.directory.remove(entry.node)  # back with its next load report, if it is alive
            raise RouteError(502, f"media node {entry.node} of zone {zone} did not answer: {exc!r}") from None
        gw.counters["routed"] += 1
        return resp

    async def to_zone(request: Request, target: int, body: bytes) -> Response:
        import httpx

        if request.headers.get(FORWARDED_HEADER):
            raise RouteError(503, f"zone {zone} cannot serve this forwarded request")
        other = gw.zones.gateway_of(target, gw.now())
        if other is None:
            raise RouteError(503, f"zone {target} has no live gateway known to zone {zone}")
        try:
            resp = await send(request, other.url, body, drop=("zone",), extra={FORWARDED_HEADER: str(zone)},
                              served_by=None)  # fmt: skip
        except httpx.TransportError as exc:
            gw.zones.remove(other.zone, other.gateway)
            raise RouteError(502, f"gateway {other.gateway} of zone {target} did not answer: {exc!r}") from None
        gw.counters["routed_other_zone"] += 1
        return resp

    async def route_new(request: Request) -> Response:
        """A new session (or token): the best node of the requested zone."""
        import httpx

        body = await body_of(request)
        want = _int_choice(request, "zone", ZONE_HEADER, "zone id", (1 << 24) - 1)
        if want is not None and want != zone:
            return await to_zone(request, want, body)
        pin = _int_choice(request, "node", NODE_HEADER, "node index", 255)
        now = gw.now()
        if pin is not None:
            entry = gw.directory.get(pin, now)
            if entry is None or not entry.healthy:
                why = "unknown" if entry is None else ("draining" if entry.draining else "not accepting sessions")
                raise RouteError(503, f"media node {pin} of zone {zone} is not available ({why})")
            return await to_node(request, entry, body)
        tried: set[int] = set()
        for _ in range(3):
            found = gw.directory.candidates(now, tried)
            if not found:
                break
            entry = found[0]
            try:
                return await to_node(request, entry, body)
            except RouteError as exc:
                if exc.status != 502:
                    raise
                tried.add(entry.node)
        gw.counters["no_capacity"] += 1
        if not request.headers.get(FORWARDED_HEADER):
            other = gw.zones.best_other(now)
            if other is not None:
                try:
                    return await to_zone(request, other.zone, body)
                except (RouteError, httpx.TransportError):
                    pass
        known = len(gw.directory.nodes)
        if known == 0:
            reason = f"no media node available in zone {zone}: none has reported in the last 5 s"
        else:
            reason = f"no media node available in zone {zone}: {known} known, none healthy (full, draining or down)"
        raise RouteError(503, reason)

    async def route_conn(request: Request, conn_id: str, *, rebuild: bool = False) -> Response:
        """A call on an existing session: the node that owns the conn id."""
        body = await body_of(request)
        try:
            parts = gw.codec.decode(conn_id)
        except InvalidConnId:
            gw.counters["unknown_conn"] += 1
            raise RouteError(404, "unknown conn id") from None
        owner_zone, owner = parts.node_id >> 8, parts.node_id & 0xFF
        if owner_zone != zone:
            if request.headers.get(FORWARDED_HEADER):
                raise RouteError(404, "unknown conn id")
            return await to_zone(request, owner_zone, body)
        entry = gw.directory.get(owner, gw.now())
        if entry is not None:
            try:
                return await to_node(request, entry, body)
            except RouteError as exc:
                if not rebuild or exc.status != 502:
                    raise
        if rebuild:
            # The owner is gone: any live node rebuilds the session from the restart request.
            return await _replay_new(request, body)
        gw.counters["unknown_conn"] += 1
        raise RouteError(404, f"unknown conn id: media node {owner} of zone {zone} is gone")

    async def _replay_new(request: Request, body: bytes) -> Response:
        now = gw.now()
        for entry in gw.directory.candidates(now)[:3]:
            try:
                return await to_node(request, entry, body)
            except RouteError as exc:
                if exc.status != 502:
                    raise
        raise RouteError(503, f"no media node available in zone {zone} to rebuild the session")

    # ---- node APIs -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.api_route("/api/zone/ping", methods=["GET"], tags=["zone"], status_code=204,
                   summary="An empty answer for clients to time their round trip to this zone",
                   description="A client measures its RTT to each zone's gateway with this call (the global "
                   "gateway lists them at GET /api/global/zones) and reports them to a global gateway as "
                   "?zone_rtt=ZONE:MS,... (docs/cluster.md). No body, never cached; X-Trackmesh-Zone names "
                   "the zone.")  # fmt: skip
    async def ping() -> Response:
        headers = {"X-Trackmesh-Zone": str(zone), "Cache-Control": "no-store", "Timing-Allow-Origin": "*"}
        return Response(status_code=204, headers=headers)

    # HEAD answers the same; a route of its own, out of the schema, so the OpenAPI document has
    # one operation id for the ping (two methods on one route gave both the same id).
    app.add_api_route("/api/zone/ping", ping, methods=["HEAD"], status_code=204, include_in_schema=False)

    add_health_routes(app, "gateway", gw.readiness, lambda: gw.draining)

    def unauthorized(request: Request) -> Response | None:
        expected = gw.config.metrics_token
        presented = bearer(request.headers.get("authorization"))
        if not expected or (presented is not None and app_secret_matches(expected, presented)):
            return None
        return JSONResponse({"status": False, "error": "this node requires Authorization: Bearer <--metrics-token>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.get("/metrics", tags=["node"], summary="Prometheus metrics: routing counters, media nodes seen")
    async def metrics(request: Request) -> Response:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        text, content_type = render_gateway_metrics(gw, gw.now())
        return Response(text, media_type=content_type)

    @app.get("/api/node/info", tags=["node"])
    async def info(request: Request) -> Any:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        now = gw.now()
        gw.directory.expire(now)
        return {
            "status": True,
            "data": {
                "version": __version__,
                "role": "gateway",
                "zone": zone,
                "gateway": gw.index,
                "node_id": gw.config.node_id,
                "url": gw.url,
                "uptime_s": round(time.time() - gw.started_at, 1),
                "peers": gw.cluster_peers(),
                "nodes": [e.summary(now) for _, e in sorted(gw.directory.nodes.items())],
                "zones": gw.zones.summary(now),
                "counters": dict(gw.counters),
            },
        }

    # ---- routed APIs ---------------------------------------------------------------------------

    # Failed app secrets are throttled here, per client, before anything about the zone is
    # told (the media node behind throttles again, per the client address we sign for it).
    throttle = FailureThrottle()
    app.state.auth_throttle = throttle

    @app.post(
        "/token/{kind}",
        tags=["tokens"],
        summary="Create a session token (served by a media node)",
        responses={401: {"description": "wrong app secret"}, 429: {"description": "too many wrong secrets"}},
    )
    async def token(kind: str, request: Request) -> Response:
        refused = refuse_app_secret(request, gw.config.secret, throttle)
        if refused is not None:
            return refused
        resp = await route_new(request)
        served = resp.headers.get(SERVED_HEADER, "")
        if kind == "rtmp" and gw.config.rtmp_port and resp.status_code == 200 and served.startswith(f"{zone}/"):
            return _rtmp_via_gateway(resp, request, gw.config.rtmp_port)
        return resp

    @app.post("/whip/endpoint", tags=["whip"], summary="WHIP: routed to the best media node")
    @app.post("/whep/endpoint", tags=["whep"], summary="WHEP: routed to the best media node")
    @app.post("/webrtc/connect", tags=["sdk"], summary="SDK connect: routed to the best media node")
    async def new_session(request: Request) -> Response:
        started = time.monotonic()
        try:
            response = await route_new(request)
        except RouteError as exc:
            report_failure(gw.route_audit, gw.route_ids, gw.config.secret, request, started, exc.status)
            raise
        report_success(gw, request, started, response, zone)
        return response

    @app.patch("/whip/conn/{conn_id}", tags=["whip"])
    @app.delete("/whip/conn/{conn_id}", tags=["whip"])
    @app.patch("/whep/conn/{conn_id}", tags=["whep"])
    @app.delete("/whep/conn/{conn_id}", tags=["whep"])
    @app.post("/whep/conn/{conn_id}/limit", tags=["whep"])
    @app.post("/webrtc/{conn_id}/ice-candidate", tags=["sdk"])
    @app.delete("/rtmp/conn/{conn_id}", tags=["rtmp"], summary="End an RTMP publisher: routed to its media node")
    async def on_conn(conn_id: str, request: Request) -> Response:
        return await route_conn(request, conn_id)

    @app.post("/webrtc/{conn_id}/restart-ice", tags=["sdk"],
              summary="SDK ICE restart: the owner node, or any live node that rebuilds the session")  # fmt: skip
    async def restart_ice(conn_id: str, request: Request) -> Response:
        return await route_conn(request, conn_id, rebuild=True)

    # A room's recording is cluster-wide (docs/recording.md, "In a cluster"): any media node of
    # the zone takes start/stop/status; list answers with that node's files (pin one with ?node=).
    @app.post("/api/record/start", tags=["recording"], summary="Start recording a room, cluster-wide (routed)")
    @app.post("/api/record/stop", tags=["recording"], summary="Stop recording a room, cluster-wide (routed)")
    @app.get("/api/record/status", tags=["recording"], summary="A room's recording now (routed)")
    @app.get("/api/record/list", tags=["recording"],
             summary="Recorded files of a media node (?node= pins it) and who records the room (routed)")  # fmt: skip
    async def record(request: Request) -> Response:
        return await route_new(request)

    # ---- SIP dial-outs (docs/sip.md, "In a cluster") ---------------------------------------------

    def sip_nodes(now: float) -> list[NodeEntry]:
        """The zone's media nodes that run SIP: healthy ones best first, then the others (a node
        that is full or draining still holds its calls and bindings)."""
        best = [e for e in gw.directory.candidates(now) if sip_address(e) is not None]
        rest = [e for e in gw.directory.nodes.values() if e not in best and sip_address(e) is not None]
        return best + sorted(rest, key=lambda e: e.node)

    async def sip_new(request: Request) -> Response:
        """A dial-out: the least-loaded SIP node (another on a 502)."""
        refused = refuse_app_secret(request, gw.config.secret, throttle)
        if refused is not None:
            return refused
        body = await body_of(request)
        healthy = [e for e in sip_nodes(gw.now()) if e.healthy]
        for entry in healthy[:3]:
            try:
                return await to_node(request, entry, body)
            except RouteError as exc:
                if exc.status != 502:
                    raise
        gw.counters["no_capacity"] += 1
        raise RouteError(503, f"no media node of zone {zone} with SIP on is available")

    async def sip_session(request: Request, session: int) -> Response:
        """A call's hang-up or DTMF: the node that owns the call (its session id names it)."""
        refused = refuse_app_secret(request, gw.config.secret, throttle)
        if refused is not None:
            return refused
        body = await body_of(request)
        if not 0 <= session < 1 << 64:
            raise RouteError(404, "no such call")
        node_id = session_node(SessionId(session))
        owner_zone, owner = node_id >> 8, node_id & 0xFF
        if owner_zone != zone:
            if request.headers.get(FORWARDED_HEADER):
                raise RouteError(404, "no such call")
            return await to_zone(request, owner_zone, body)
        entry = gw.directory.get(owner, gw.now())
        if entry is None:
            raise RouteError(404, f"no such call: media node {owner} of zone {zone} is gone")
        return await to_node(request, entry, body)

    def sip_body(model: Any) -> dict[str, Any]:
        return {"requestBody": {"content": {"application/json": {"schema": body_schema(model)}}}}

    @app.post("/sip/invite/server", tags=["sip"], summary="atm0s path: dial a trunk or phone (routed to a SIP node)",
              openapi_extra=sip_body(InviteServerRequest))  # fmt: skip
    async def sip_invite_server(request: Request) -> Response:
        return await sip_new(request)

    @app.post("/api/sip/calls", tags=["sip"], summary="Dial a phone or trunk (routed to a SIP node)",
              openapi_extra=sip_body(DialRequest))  # fmt: skip
    async def sip_dial(request: Request) -> Response:
        return await sip_new(request)

    @app.post("/sip/invite/client", tags=["sip"],
              summary="atm0s path: call a registered softphone (routed to the node holding its REGISTER)",
              responses={404: {"description": "no SIP node of the zone holds that session id"}},
              openapi_extra=sip_body(InviteClientRequest))  # fmt: skip
    async def sip_invite_client(request: Request) -> Response:
        refused = refuse_app_secret(request, gw.config.secret, throttle)
        if refused is not None:
            return refused
        body = await body_of(request)
        last: Response | None = None
        for entry in sip_nodes(gw.now()):
            try:
                last = await to_node(request, entry, body)
            except RouteError as exc:
                if exc.status != 502:
                    raise
                continue
            if last.status_code != 404:
                return last
            gw.counters["sip_binding_misses"] += 1
        if last is not None:
            return last
        raise RouteError(503, f"no media node of zone {zone} with SIP on is available")

    @app.delete("/sip/call/{session_id}", tags=["sip"], summary="atm0s path: hang up a call (routed to its node)")
    async def sip_call_atm0s(session_id: int, request: Request) -> Response:
        return await sip_session(request, session_id)

    @app.post("/sip/call/{session_id}/dtmf", tags=["sip"], summary="atm0s path: DTMF to a call (routed to its node)",
              openapi_extra=sip_body(DtmfRequest))  # fmt: skip
    async def sip_dtmf_atm0s(session_id: int, request: Request) -> Response:
        return await sip_session(request, session_id)

    @app.delete("/api/sip/calls/{session}", tags=["sip"], summary="Hang up a call (routed to its node)")
    async def sip_call(session: int, request: Request) -> Response:
        return await sip_session(request, session)

    @app.post("/api/sip/calls/{session}/dtmf", tags=["sip"], summary="DTMF to a call (routed to its node)",
              openapi_extra=sip_body(DtmfRequest))  # fmt: skip
    async def sip_dtmf(session: int, request: Request) -> Response:
        return await sip_session(request, session)

    @app.get("/samples/{name}", include_in_schema=False)
    async def sample(name: str, request: Request) -> Response:
        return await route_new(request)

    return app
