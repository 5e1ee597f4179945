"""SIP calls over HTTP (bearer app secret): list the calls in progress, send DTMF to a caller.

- ``GET /api/sip/calls``: every call of this node's workers (room, peer, codec, direction, RTP
  counters, digits received) and the SIP listener's counters.
- ``POST /api/sip/calls/{session}/dtmf {"digits": "123#"}``: RFC 4733 events toward the phone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field, StrictStr

from trackmesh.core.ids import SessionId, session_worker
from trackmesh.rpc import RpcError
from trackmesh.security.tokens import app_secret_matches

from .envelope import error, ok
from .headers import bearer
from .token_http import read_json

if TYPE_CHECKING:
    from .api import NodeApi


class DtmfRequest(BaseModel):
    digits: StrictStr = Field(..., min_length=1, max_length=32, pattern=r"^[0-9*#A-Da-d]+$",
                              description="digits to send: 0-9 * # A-D")  # fmt: skip


def router(node: NodeApi) -> APIRouter:
    api = APIRouter(tags=["sip"])

    def refused(authorization: str | None) -> Any:
        presented = bearer(authorization)
        if presented is None or not app_secret_matches(node.config.secret, presented):
            return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
        return None

    @api.get("/api/sip/calls", summary="SIP calls in progress on this node, and the SIP listener's counters",
             responses={401: {"description": "wrong app secret"}})  # fmt: skip
    async def calls(authorization: str | None = Header(None, description="Bearer <app secret>")) -> Any:
        if (bad := refused(authorization)) is not None:
            return bad
        out: list[dict[str, Any]] = []
        for worker in getattr(node, "workers", []):
            try:
                res = await worker.call("sip.stats", {})
            except RpcError:
                continue
            out.extend(res.get("calls", []))
        listener = getattr(node, "sip", None)
        return ok({"calls": out, "sip": listener.stats() if listener is not None else None})

    @api.post(
        "/api/sip/calls/{session}/dtmf",
        summary="Send DTMF digits (RFC 4733) to a caller",
        responses={
            401: {"description": "wrong app secret"},
            404: {"description": "no such call"},
            400: {"description": "bad digits"},
        },
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": DtmfRequest.model_json_schema()}}}},
    )
    async def dtmf(
        session: int, request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        if (bad := refused(authorization)) is not None:
            return bad
        body = await read_json(request)
        if not isinstance(body, dict):
            return body if body is not None else error(400, "invalid request")
        try:
            req = DtmfRequest.model_validate(body)
        except ValueError as exc:
            return error(400, f"invalid request: {exc}")
        workers = getattr(node, "workers", [])
        index = session_worker(SessionId(session)) if 0 <= session < 1 << 64 else -1
        if not 0 <= index < len(workers):
            return error(404, "no such call")
        try:
            res = await workers[index].call("sip.dtmf", {"session": session, "digits": req.digits})
        except RpcError as exc:
            return error(exc.status, exc.message)
        return ok(res)

    return api
