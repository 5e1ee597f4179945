"""SIP calls over HTTP (bearer app secret): list the calls in progress, send DTMF to a caller.

- ``GET /api/sip/calls``: every call of this node's workers (room, peer, codec, direction, RTP
  counters, digits received) and the SIP listener's counters.
- ``GET /api/sip/registrations``: the softphones registered here, with the session id of each binding
  (what ``POST /sip/invite/client`` takes).
- ``POST /api/sip/calls/{session}/dtmf {"digits": "123#"}``: RFC 4733 events toward the phone.
- ``POST /api/sip/calls {room, to, peer?, from_user?, auth?}``: the room calls a phone or a trunk
  (dial-out, UDP); ``DELETE /api/sip/calls/{session}`` hangs up (BYE, or CANCEL while it rings).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from trackmesh.core.ids import SessionId, session_worker
from trackmesh.rpc import RpcError
from trackmesh.security.tokens import app_secret_matches

from .body_schema import body_schema
from .envelope import error, ok
from .headers import bearer
from .token_http import read_json

if TYPE_CHECKING:
    from .api import NodeApi


class DialAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: StrictStr = Field(..., min_length=1, max_length=256)
    password: StrictStr = Field(..., min_length=1, max_length=256)


class DialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: StrictStr = Field(..., min_length=1, max_length=128, description="the room the call joins")
    to: StrictStr = Field(
        ..., min_length=5, max_length=512, description="sip:user@IP:port to call (UDP; ;transport=tcp for TCP)"
    )
    peer: StrictStr | None = Field(None, min_length=1, max_length=128, description="peer name (default sip-<user>)")
    from_user: StrictStr = Field("trackmesh", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9+._-]+$",
                                 description="user part of our From (the caller id the far end sees)")  # fmt: skip
    auth: DialAuth | None = Field(None, description="credentials for a 401/407 of the far end (digest)")


class InviteServerRequest(BaseModel):
    """atm0s 0.1's ``POST /sip/invite/server``."""

    model_config = ConfigDict(extra="forbid")

    room_id: StrictStr = Field(..., min_length=1, max_length=128, description="the room the call joins")
    dest_addr: StrictStr = Field(..., min_length=1, max_length=255, pattern=r"^[0-9A-Fa-f.:\[\]]+$",
                                 description="IP[:port] of the trunk or phone (port 5060 when omitted)")  # fmt: skip
    from_number: StrictStr = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9+._-]+$",
                                   description="user part of our From (the caller id)")  # fmt: skip
    to_number: StrictStr = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9+._*#-]+$",
                                 description="user part of the Request-URI (the number called)")  # fmt: skip
    dest_auth: DialAuth | None = Field(None, description="credentials for a 401/407 of the far end (digest)")
    transport: StrictStr | None = Field(None, pattern=r"^(udp|tcp)$", description="udp (default) or tcp")


class InviteClientRequest(BaseModel):
    """atm0s 0.1's ``POST /sip/invite/client``: call a softphone registered here."""

    model_config = ConfigDict(extra="forbid")

    room_id: StrictStr = Field(..., min_length=1, max_length=128, description="the room the call joins")
    dest_session_id: StrictStr = Field(
        ..., min_length=1, max_length=64, description="the session id of the softphone's REGISTER (the register hook's)"
    )
    from_number: StrictStr = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9+._-]+$",
                                   description="user part of our From (the caller id)")  # fmt: skip


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

    @api.get("/api/sip/registrations", summary="Softphones registered here (REGISTER bindings) and their session ids",
             responses={401: {"description": "wrong app secret"}})  # fmt: skip
    async def registrations(authorization: str | None = Header(None, description="Bearer <app secret>")) -> Any:
        """Each binding's ``session_id`` is what ``POST /sip/invite/client`` takes (atm0s 0.1 hands it
        to the register hook; without hooks this is where to read it)."""
        if (bad := refused(authorization)) is not None:
            return bad
        listener = getattr(node, "sip", None)
        if listener is None:
            return ok({"registrations": []})
        now = time.monotonic()
        out = [
            {"session_id": r.session_id, "username": name, "room": r.room, "peer": r.peer, "contact": r.contact,
             "transport": "tcp" if r.reliable else "udp", "expires_in": round(r.expires_at - now)}
            for name, r in sorted(listener.control.registrations.items())
            if r.expires_at > now
        ]  # fmt: skip
        return ok({"registrations": out})

    dtmf_doc: dict[str, Any] = {
        "summary": "Send DTMF digits (RFC 4733) to a caller",
        "responses": {
            401: {"description": "wrong app secret"},
            404: {"description": "no such call"},
            400: {"description": "bad digits"},
        },
        "openapi_extra": {"requestBody": {"content": {"application/json": {"schema": body_schema(DtmfRequest)}}}},
    }

    @api.post("/api/sip/calls/{session}/dtmf", **dtmf_doc)
    async def dtmf(
        session: int, request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        return await send_dtmf(session, request, authorization)

    @api.post("/sip/call/{session_id}/dtmf", **{**dtmf_doc, "summary": "atm0s path: send DTMF digits to a caller"})
    async def dtmf_atm0s(
        session_id: int, request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        return await send_dtmf(session_id, request, authorization)

    async def send_dtmf(session: int, request: Request, authorization: str | None) -> Any:
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

    @api.post(
        "/api/sip/calls",
        summary="The room calls a phone or trunk (dial-out over UDP); the call joins the room once answered",
        responses={
            401: {"description": "wrong app secret"},
            400: {"description": "bad request"},
            503: {"description": "SIP is off on this node"},
        },
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": body_schema(DialRequest)}}}},
    )
    async def dial(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        if (bad := refused(authorization)) is not None:
            return bad
        listener = getattr(node, "sip", None)
        if listener is None:
            return error(503, "SIP is off on this node (--sip-port 0, or the port was taken)")
        body = await read_json(request)
        if not isinstance(body, dict):
            return body if body is not None else error(400, "invalid request")
        try:
            req = DialRequest.model_validate(body)
        except ValidationError as exc:
            return error(400, f"invalid request: {exc.errors()[0]['msg']}")
        user = req.to.split(":", 1)[-1].split("@", 1)[0] if "@" in req.to else "phone"
        peer = req.peer or "sip-" + ("".join(ch for ch in user if ch.isalnum() or ch in "-_.+")[:64] or "phone")
        creds = (req.auth.username, req.auth.password) if req.auth is not None else None
        try:
            res = await listener.dial(req.room, peer, req.to, req.from_user, creds)
        except RpcError as exc:
            return error(exc.status, exc.message)
        return ok({**res, "peer": peer})

    @api.delete("/api/sip/calls/{session}", summary="Hang up a call (BYE; CANCEL while a dial-out rings)",
                responses={401: {"description": "wrong app secret"}, 404: {"description": "no such call"}})  # fmt: skip
    async def hang_up(session: int, authorization: str | None = Header(None, description="Bearer <app secret>")) -> Any:
        if (bad := refused(authorization)) is not None:
            return bad
        listener = getattr(node, "sip", None)
        if listener is None or not listener.hang_up_session(session):
            return error(404, "no such call")
        return ok({"session": session})

    # ---- atm0s 0.1's paths -------------------------------------------------------------------------

    async def invite(request: Request, authorization: str | None, model: type[BaseModel]) -> Any:
        if (bad := refused(authorization)) is not None:
            return bad
        listener = getattr(node, "sip", None)
        if listener is None:
            return error(503, "SIP is off on this node (--sip-port 0, or the port was taken)")
        body = await read_json(request)
        if not isinstance(body, dict):
            return body if body is not None else error(400, "invalid request")
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            return error(400, f"invalid request: {exc.errors()[0]['msg']}")
        try:
            if isinstance(req, InviteServerRequest):
                host, port = req.dest_addr, "5060"
                if (host.startswith("[") and "]:" in host) or host.count(":") == 1:
                    host, _, port = host.rpartition(":")
                elif ":" in host and not host.startswith("["):
                    host = f"[{host}]"  # a bare IPv6 address
                to = f"sip:{req.to_number}@{host}:{port}" + (";transport=tcp" if req.transport == "tcp" else "")
                peer = "sip-" + req.to_number.replace("*", "").replace("#", "")[:64]
                creds = (req.dest_auth.username, req.dest_auth.password) if req.dest_auth is not None else None
                res = await listener.dial(req.room_id, peer, to, req.from_number, creds)
            else:
                assert isinstance(req, InviteClientRequest)
                res = await listener.dial_registered(req.room_id, req.dest_session_id, req.from_number)
        except RpcError as exc:
            return error(exc.status, exc.message)
        return ok({"session_id": res["session"], "call_id": res["call_id"]})

    atm0s_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "wrong app secret"},
        400: {"description": "bad request"},
        503: {"description": "SIP is off on this node"},
    }

    @api.post(
        "/sip/invite/server",
        summary="atm0s path: the room calls a trunk or phone at dest_addr (UDP); answers {session_id}",
        responses=atm0s_responses,
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": body_schema(InviteServerRequest)}}}},
    )
    async def invite_server(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        return await invite(request, authorization, InviteServerRequest)

    @api.post(
        "/sip/invite/client",
        summary="atm0s path: the room calls a softphone registered here (by its REGISTER's session id)",
        responses={**atm0s_responses, 404: {"description": "no softphone registered with that session id"}},
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": body_schema(InviteClientRequest)}}}},
    )
    async def invite_client(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        return await invite(request, authorization, InviteClientRequest)

    @api.delete("/sip/call/{session_id}", summary="atm0s path: hang up a call (BYE; CANCEL while it rings)",
                responses={401: {"description": "wrong app secret"}, 404: {"description": "no such call"}})  # fmt: skip
    async def hang_up_atm0s(
        session_id: int, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        return await hang_up(session_id, authorization)

    return api
