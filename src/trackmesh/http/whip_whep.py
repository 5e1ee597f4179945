"""WHIP (RFC 9725) and WHEP over HTTP, at the paths of atm0s-media-server 0.2.

``POST /whip/endpoint`` and ``POST /whep/endpoint`` take a bearer session token and an SDP
offer and answer 201 with the SDP answer, ``Location: /whip/conn/<conn_id>`` and an ETag.
``PATCH`` on the Location carries ``application/trickle-ice-sdpfrag`` (candidates, or an ICE
restart when the ufrag changes, RFC 9725 s4.3); ``DELETE`` ends the session. Unlike atm0s,
PATCH and DELETE require the same bearer token as the POST (403 otherwise): the conn id is
signed and unguessable, and the token must match it too.

This module only speaks HTTP; the session lives in a media worker, reached through the node
with the calls ``<kind>.create``, ``<kind>.patch`` and ``<kind>.delete``.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from trackmesh.security.tokens import SessionToken

from .envelope import error
from .headers import bearer as _bearer
from .requests import problem as _problem
from .requests import read_body, route, session_token
from .token_http import client_address, read_json, via_gateway

if TYPE_CHECKING:
    from .api import NodeApi

MAX_SDP_BYTES = 64 * 1024
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
Kind = Literal["whip", "whep"]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _read_body(request: Request, content_type: str) -> bytes | PlainTextResponse:
    return await read_body(request, (content_type,), MAX_SDP_BYTES)


def _token(node: NodeApi, authorization: str | None, kind: Kind) -> SessionToken | PlainTextResponse:
    checked = session_token(node, authorization, kind)
    return checked if isinstance(checked, PlainTextResponse) else checked[0]


def _max_spatial(value: str | None) -> int | PlainTextResponse | None:
    if value is None or value in ("", "none"):
        return None
    if not value.isdigit() or int(value) > 3:
        return _problem(400, f"max_spatial must be a simulcast layer 0..3 (0 is the lowest) or none, got {value!r}")
    return int(value)


def router(node: NodeApi) -> APIRouter:
    api = APIRouter()
    for kind in ("whip", "whep"):
        _add_routes(api, node, kind)
    _add_limit_route(api, node)

    @api.get("/samples/{name}", include_in_schema=False)
    async def sample(name: str) -> Response:
        from importlib.resources import files

        if name not in ("whip.html", "whep.html", "index.html", "moq.html"):
            return _problem(404, "no such sample")
        path = files("trackmesh").joinpath("samples", name)
        return FileResponse(str(path), media_type="text/html")

    return api


def _add_routes(api: APIRouter, node: NodeApi, kind: Kind) -> None:
    label = "WHIP (publish)" if kind == "whip" else "WHEP (play)"
    responses: dict[int | str, dict[str, Any]] = {
        400: {"description": "the offer cannot be accepted; the body says why"},
        401: {"description": "missing, invalid or expired token"},
        413: {"description": "body too large"},
        415: {"description": "wrong Content-Type"},
        503: {"description": "no media capacity"},
    }

    @api.post(
        f"/{kind}/endpoint",
        tags=[kind],
        status_code=201,
        summary=f"{label}: send an SDP offer, get the answer",
        responses={201: {"content": {SDP: {}}, "description": "the SDP answer"}, **responses},
        openapi_extra={"requestBody": {"content": {SDP: {"schema": {"type": "string"}}}, "required": True}},
    )
    async def create(request: Request, authorization: str | None = Header(None)) -> Response:
        routed_at = time.monotonic()
        token = _token(node, authorization, kind)
        if isinstance(token, Response):
            return token
        body = await _read_body(request, SDP)
        if isinstance(body, Response):
            return body
        if token.room is None:
            return _problem(401, f"invalid {kind} token: it names no room")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _problem(400, "the offer is not UTF-8 text")
        raw = _bearer(authorization) or ""
        max_spatial = _max_spatial(request.query_params.get("max_spatial")) if kind == "whep" else None
        if isinstance(max_spatial, Response):
            return max_spatial
        params = {
            "room": token.room,
            "peer": token.peer,
            "extra_data": token.extra_data,
            "record": token.record,
            "offer": offer,
            "token_hash": token_hash(raw),
            "max_spatial": max_spatial,
            # For the connector's log: the client's address (behind a gateway, the one it signed for us).
            "remote_ip": client_address(request, node.config.secret),
            "app": token.app,
            "routed_at": None if via_gateway(request, node.config.secret) else routed_at,
        }
        room = token.room
        pick = node.worker_for_viewer if kind == "whep" else node.worker_for_room  # --room-spread: viewers spread
        result = await route(node, lambda: pick(room), f"{kind}.create", params)
        location = f"/{kind}/conn/{result['conn_id']}"
        return Response(
            result["sdp"],
            status_code=201,
            media_type=SDP,
            headers={"Location": location, "ETag": f'"{result["etag"]}"', "Accept-Patch": SDPFRAG},
        )

    @api.patch(
        f"/{kind}/conn/{{conn_id}}",
        tags=[kind],
        summary=f"{label}: trickle ICE candidates or restart ICE",
        responses={
            200: {"content": {SDPFRAG: {}}, "description": "ICE restarted: our new credentials"},
            204: {"description": "candidates added"},
            403: {"description": "the token is not the session's"},
            404: {"description": "unknown conn id"},
            412: {"description": "If-Match does not match the session's ETag"},
            **responses,
        },
        openapi_extra={"requestBody": {"content": {SDPFRAG: {"schema": {"type": "string"}}}, "required": True}},
    )
    async def patch(
        conn_id: str,
        request: Request,
        authorization: str | None = Header(None),
        if_match: str | None = Header(None),
    ) -> Response:
        raw = _bearer(authorization)
        if raw is None:
            return _problem(401, f"missing bearer {kind} token", {"WWW-Authenticate": "Bearer"})
        body = await _read_body(request, SDPFRAG)
        if isinstance(body, Response):
            return body
        worker = node.worker_for_conn(conn_id)
        params = {
            "conn_id": conn_id,
            "token_hash": token_hash(raw),
            "frag": body.decode("utf-8", "replace"),
            "if_match": if_match.strip('"') if if_match and if_match != "*" else None,
            "remote_ip": client_address(request, node.config.secret),  # the log's Reconnect
        }
        result = await worker.call(f"{kind}.patch", params)
        if result.get("sdpfrag"):
            return Response(
                result["sdpfrag"], status_code=200, media_type=SDPFRAG, headers={"ETag": f'"{result["etag"]}"'}
            )
        return Response(status_code=204)

    @api.delete(
        f"/{kind}/conn/{{conn_id}}",
        tags=[kind],
        summary=f"{label}: end the session",
        responses={403: {"description": "the token is not the session's"}, 404: {"description": "unknown conn id"}},
    )
    async def delete(conn_id: str, authorization: str | None = Header(None)) -> Response:
        raw = _bearer(authorization)
        if raw is None:
            return _problem(401, f"missing bearer {kind} token", {"WWW-Authenticate": "Bearer"})
        worker = node.worker_for_conn(conn_id)
        await worker.call(f"{kind}.delete", {"conn_id": conn_id, "token_hash": token_hash(raw)})
        return PlainTextResponse("OK")


def _add_limit_route(api: APIRouter, node: NodeApi) -> None:
    @api.post(
        "/whep/conn/{conn_id}/limit",
        tags=["whep"],
        summary="WHEP (play): cap or uncap the simulcast layer this viewer receives",
        responses={
            200: {"description": "the cap now in force"},
            400: {"description": "max_spatial is not 0..3 or null"},
            401: {"description": "missing bearer token"},
            413: {"description": "body too large"},
            415: {"description": "Content-Type is not application/json"},
            403: {"description": "the token is not the session's"},
            404: {"description": "unknown conn id"},
        },
    )
    async def limit(conn_id: str, request: Request, authorization: str | None = Header(None)) -> Response:
        """``{"max_spatial": 0}`` keeps the viewer on the lowest layer (as if its bandwidth allowed
        no more); ``{"max_spatial": null}`` leaves the choice to its bandwidth estimate again. The
        same cap can be set at creation with ``POST /whep/endpoint?max_spatial=0``."""
        # A JSON API: refusals in the {"status": false, "error"} envelope (http/app.py maps RpcErrors too).
        raw = _bearer(authorization)
        if raw is None:
            return error(401, "missing bearer whep token", {"WWW-Authenticate": "Bearer"})
        body = await read_json(request, 1024)
        if isinstance(body, Response):
            return body
        value = body.get("max_spatial") if isinstance(body, dict) else "missing"
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3):
            return error(400, f"max_spatial must be a simulcast layer 0..3 or null, got {value!r}")
        worker = node.worker_for_conn(conn_id)
        params = {"conn_id": conn_id, "token_hash": token_hash(raw), "max_spatial": value}
        result = await worker.call("whep.limit", params)
        return JSONResponse({"status": True, "data": result})
