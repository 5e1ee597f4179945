"""The atm0s SDK's HTTP calls: ``POST /webrtc/connect``, ``/webrtc/<conn_id>/ice-candidate`` and
``/webrtc/<conn_id>/restart-ice``.

Bodies are single protobuf messages (``Content-Type: application/grpc`` is only a label, no gRPC framing). Success
is ``200`` with the protobuf answer. The SDK ignores the HTTP status and decodes any body as the expected message,
so errors are a proper status with a short ``text/plain`` reason (which decodes, at best, into an empty answer the
SDK then fails on): 400 malformed body or offer, 401 missing/invalid token, 403 ``Wrong room``/``Wrong peer``
(the join does not match the token), 404 unknown conn id, 413 body too large, 415 wrong content type, 503 no media
worker.

ice-candidate carries no bearer (the SDK sends none): the signed, unguessable conn id is the credential and a
forged one is 404. restart-ice on a conn id this node does not know (another node's, or an expired one) rebuilds
a fresh session from the request, so a client can move to this node.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import PlainTextResponse

from trackmesh.rpc import RpcError
from trackmesh.security.tokens import SessionToken
from trackmesh.transports.sdk.protocol import HTTP_CONTENT_TYPE, ProtocolDecodeError, decode_connect_request

from .requests import problem as _problem
from .requests import read_body, route, session_token
from .token_http import client_address, via_gateway
from .whip_whep import token_hash

if TYPE_CHECKING:
    from .api import NodeApi

MAX_BODY_BYTES = 128 * 1024
# The SDK sends application/grpc; tools may prefer the usual protobuf labels.
ACCEPTED_TYPES = (HTTP_CONTENT_TYPE, "application/x-protobuf", "application/protobuf", "application/octet-stream")


async def _body(request: Request) -> bytes | PlainTextResponse:
    return await read_body(request, ACCEPTED_TYPES, MAX_BODY_BYTES)


def _token(node: NodeApi, authorization: str | None) -> tuple[SessionToken, str] | PlainTextResponse:
    return session_token(node, authorization, "webrtc")


def _protobuf(data: bytes) -> Response:
    return Response(data, status_code=200, media_type=HTTP_CONTENT_TYPE)


def router(node: NodeApi) -> APIRouter:
    api = APIRouter()
    grpc_body = {"requestBody": {"content": {HTTP_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}}
    errors = {
        400: {"description": "malformed body or unacceptable offer"},
        401: {"description": "missing, invalid or expired webrtc token"},
        403: {"description": "Wrong room / Wrong peer: the join does not match the token"},
        413: {"description": "body too large"},
        415: {"description": "wrong Content-Type"},
        503: {"description": "no media capacity"},
    }

    async def _connect(request: Request, authorization: str | None, conn_id: str | None) -> Response:
        routed_at = time.monotonic()
        checked = _token(node, authorization)
        if isinstance(checked, Response):
            return checked
        token, raw = checked
        body = await _body(request)
        if isinstance(body, Response):
            return body
        try:
            req = decode_connect_request(body)
        except ProtocolDecodeError as exc:
            return _problem(400, str(exc))
        if req.HasField("join"):
            if token.room is not None and token.room != req.join.room:
                return _problem(403, "Wrong room")
            if token.peer is not None and token.peer != req.join.peer:
                return _problem(403, "Wrong peer")
        params = {
            "request": body,
            "room": token.room,
            "peer": token.peer,
            "extra_data": token.extra_data,
            "record": token.record,
            "token_hash": token_hash(raw),
            # For the connector's log: the client's address (behind a gateway, the one it signed for us).
            "remote_ip": client_address(request, node.config.secret),
            "app": token.app,
            "routed_at": None if via_gateway(request, node.config.secret) else routed_at,
        }
        if conn_id is not None:
            try:
                worker = node.worker_for_conn(conn_id)
                result = await worker.call("sdk.restart_ice", {**params, "conn_id": conn_id})
                return _protobuf(result["response"])
            except RpcError as exc:
                if exc.status != 404:
                    raise
                # Unknown here: rebuild the session on this node from the request (a client moving nodes).
        room = token.room or (req.join.room if req.HasField("join") else None) or token.peer or ""
        result = await route(node, lambda: node.worker_for_room(room), "sdk.connect", params)
        return _protobuf(result["response"])

    @api.post(
        "/webrtc/connect",
        tags=["sdk"],
        summary="atm0s SDK: connect (ConnectRequest -> ConnectResponse)",
        responses=errors,  # type: ignore[arg-type]
        openapi_extra=grpc_body,
    )
    async def connect(request: Request, authorization: str | None = Header(None)) -> Response:
        return await _connect(request, authorization, None)

    @api.post(
        "/webrtc/{conn_id}/restart-ice",
        tags=["sdk"],
        summary="atm0s SDK: ICE restart, or rebuild a session this node does not know",
        responses=errors,  # type: ignore[arg-type]
        openapi_extra=grpc_body,
    )
    async def restart_ice(conn_id: str, request: Request, authorization: str | None = Header(None)) -> Response:
        return await _connect(request, authorization, conn_id)

    @api.post(
        "/webrtc/{conn_id}/ice-candidate",
        tags=["sdk"],
        summary="atm0s SDK: a client ICE candidate (RemoteIceRequest -> RemoteIceResponse)",
        responses={404: {"description": "unknown conn id"}, 400: errors[400], 413: errors[413], 415: errors[415]},
        openapi_extra=grpc_body,
    )
    async def ice_candidate(conn_id: str, request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        worker = node.worker_for_conn(conn_id)
        result = await worker.call("sdk.ice_candidate", {"conn_id": conn_id, "request": body})
        return _protobuf(result["response"])

    @api.get("/samples/room.html", include_in_schema=False)
    async def room_sample() -> Response:
        from importlib.resources import files

        # Generated by tests/e2e/sdk_page/build-room.mjs (the SDK bundled in): no npm needed at install or run time.
        page = files("trackmesh").joinpath("samples", "room.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8")

    return api
