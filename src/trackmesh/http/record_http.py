"""Recording over HTTP (docs/recording.md): start and stop a live room's recording, list files.

- ``POST /api/record/start`` ``{"room": "r1", "peers": ["alice"]?}``: record every track the peers
  (all of the room's, without ``peers``) publish, from now on and as they publish.
- ``POST /api/record/stop`` ``{"room": "r1"}``: end the room's recording; its files are finalised.
- ``GET /api/record/status?room=``: the rooms being recorded now.
- ``GET /api/record/list?room=``: the recorded files of the app (of one room), with their sidecars.

All take ``Authorization: Bearer <app secret>`` (a tenant's secret works on its own app's rooms),
with the same throttling of wrong secrets as ``POST /token/<kind>``; answers use the
``{"status", "data"|"error"}`` envelope.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from trackmesh.recording.layout import list_recordings
from trackmesh.security.throttle import FailureThrottle, source_key
from trackmesh.security.tokens import app_secret_matches

from .body_schema import body_schema
from .envelope import error, ok
from .headers import bearer
from .token_http import client_address, read_json

if TYPE_CHECKING:
    from .api import NodeApi


class RecordStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: StrictStr = Field(..., min_length=1, max_length=128, description="the room to record")
    peers: list[StrictStr] | None = Field(
        None, max_length=1000, description="record only these peers' tracks (default: every peer of the room)"
    )


class RecordStop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: StrictStr = Field(..., min_length=1, max_length=128, description="the room whose recording ends")


_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong app secret"},
    429: {"description": "too many wrong secrets from this address; see Retry-After"},
}
_BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body does not validate; the error says why"},
    413: {"description": "body too large"},
    415: {"description": "Content-Type is not application/json"},
    503: {"description": "no media worker"},
    **_RESPONSES,
}


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def router(node: NodeApi) -> APIRouter:
    api = APIRouter()

    def app_of(request: Request) -> str | JSONResponse:
        """The app whose secret was presented ("" for the node's own), or the 401/429 refusal."""
        throttle: FailureThrottle = request.app.state.auth_throttle
        source = source_key(client_address(request, node.config.secret))
        now = time.monotonic()
        wait = throttle.retry_after(source, now)
        if wait:
            return error(429, f"too many wrong app secrets from this address; retry in {wait} s",
                         {"Retry-After": str(wait)})  # fmt: skip
        presented = bearer(request.headers.get("authorization"))
        if presented is not None:
            if app_secret_matches(node.config.secret, presented):
                return ""
            connector = node.connector
            tenant = connector.apps.app_for_secret(presented) if connector is not None else None
            if tenant is not None:
                return tenant
        throttle.failed(source, now)
        return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})

    async def body_of(request: Request, model: type[BaseModel]) -> Any:
        body = await read_json(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            return error(400, f"invalid request: {_problems(exc)}")

    @api.post(
        "/api/record/start",
        tags=["recording"],
        summary="Start recording a live room (every peer, or the ones named)",
        responses=_BODY_RESPONSES,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": body_schema(RecordStart)}},
                "required": True,
            }
        },
    )
    async def start(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        """Every track the room's peers publish (now, and later while the recording runs) is recorded
        to its own file under ``--record-dir``. Calling it again adds peers (or, without ``peers``,
        every peer) to the running recording. The answer names the recording session (its folder)."""
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        req = await body_of(request, RecordStart)
        if isinstance(req, JSONResponse):
            return req
        params = {"room": req.room, "peers": req.peers, "app": app}
        return ok(await node.worker_for_room(req.room).call("record.start", params))

    @api.post(
        "/api/record/stop",
        tags=["recording"],
        summary="Stop recording a room; its files are finalised",
        responses={404: {"description": "the room is not being recorded"}, **_BODY_RESPONSES},
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": body_schema(RecordStop)}},
                "required": True,
            }
        },
    )
    async def stop(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        req = await body_of(request, RecordStop)
        if isinstance(req, JSONResponse):
            return req
        return ok(await node.worker_for_room(req.room).call("record.stop", {"room": req.room, "app": app}))

    @api.get(
        "/api/record/status",
        tags=["recording"],
        summary="The room's recording now (or none)",
        responses={503: {"description": "no media worker"}, **_RESPONSES},
    )
    async def status(
        request: Request,
        room: str = Query(..., min_length=1, max_length=128),
        authorization: str | None = Header(None, description="Bearer <app secret>"),
    ) -> Any:
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        return ok(await node.worker_for_room(room).call("record.status", {"room": room}))

    @api.get(
        "/api/record/list",
        tags=["recording"],
        summary="Recorded files of the app (of one room), oldest session first",
        responses=_RESPONSES,
    )
    async def list_files(
        request: Request,
        room: str | None = Query(None, min_length=1, max_length=128),
        authorization: str | None = Header(None, description="Bearer <app secret>"),
    ) -> Any:
        """Each file: its ``path`` under ``--record-dir``, ``size``, and its sidecar: room, peer,
        track, kind, codec, container, session, ``start_time``, ``status`` (recording, complete,
        failed), ``duration`` once complete."""
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        root = Path(node.config.record_dir)
        files = await asyncio.to_thread(list_recordings, root, app, room)
        return ok({"files": files})

    return api
