"""Recording over HTTP (docs/recording.md): start and stop a live room's recording, list files.

- ``POST /api/record/start`` ``{"room": "r1", "peers": ["alice"]?}``: record every track the peers
  (all of the room's, without ``peers``) publish, from now on and as they publish. In a cluster
  the call may reach any media node: the decision is kept in the registry and every media node
  records the room's tracks it ingests (runtime/recording.py).
- ``POST /api/record/stop`` ``{"room": "r1"}``: end the room's recording; its files are finalised.
- ``GET /api/record/status?room=``: the rooms being recorded now.
- ``GET /api/record/list?room=``: the recorded files of the app (of one room), with their sidecars.
- ``POST /api/record/compose`` ``{"path": "default/r1/<session>"}``: a job composing that recorded
  session into one file (recording/compose.py, in a child process); ``GET /api/record/jobs/<id>``:
  its status and progress.

All take ``Authorization: Bearer <app secret>`` (a tenant's secret works on its own app's rooms),
with the same throttling of wrong secrets as ``POST /token/<kind>``; answers use the
``{"status", "data"|"error"}`` envelope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from trackmesh.recording.jobs import ComposeJob, ComposeJobs
from trackmesh.recording.layout import DEFAULT_APP, list_recordings, seg
from trackmesh.rpc import RpcError
from trackmesh.security.throttle import FailureThrottle, source_key
from trackmesh.security.tokens import app_secret_matches

from .body_schema import body_schema
from .envelope import error, ok
from .headers import bearer
from .token_http import client_address, read_json

if TYPE_CHECKING:
    from .api import NodeApi

log = logging.getLogger("trackmesh.recording")


class RecordStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: StrictStr = Field(..., min_length=1, max_length=128, description="the room to record")
    peers: list[StrictStr] | None = Field(
        None, max_length=1000, description="record only these peers' tracks (default: every peer of the room)"
    )


class RecordStop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    room: StrictStr = Field(..., min_length=1, max_length=128, description="the room whose recording ends")


class RecordCompose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: StrictStr = Field(
        ..., min_length=1, max_length=1024,
        description="the session's folder under --record-dir, as /api/record/list shows it "
        "(e.g. default/demo/20261207T061609Z-9eb6)",
    )  # fmt: skip
    format: Literal["mp4", "webm"] = Field("mp4", description="mp4 (H.264 + AAC) or webm (VP9 + Opus)")
    width: int = Field(1280, ge=64, le=3840, multiple_of=2, description="output width")
    height: int = Field(720, ge=64, le=2160, multiple_of=2, description="output height")
    fps: int = Field(25, ge=1, le=60, description="output frame rate")


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


def compose_hooks(node: NodeApi) -> Callable[[str, ComposeJob], None]:
    """Compose.Started/Completed/Failed hook events of the node's jobs: sent by the worker that
    holds the composed session's room, through its connector event source (the room's other
    events take the same path, runtime/recording.py). Without a connector the worker drops them."""
    pending: set[asyncio.Task[None]] = set()

    async def send(room: str, params: dict[str, Any]) -> None:
        try:
            await node.worker_for_room(room).call("record.compose_event", params)
        except (TimeoutError, RpcError, OSError) as exc:
            log.warning("compose hook event not sent", extra={"fields": {"job": params["job"], "error": str(exc)}})

    def on_event(kind: str, job: ComposeJob) -> None:
        root = Path(node.config.record_dir).resolve()
        try:
            rel = job.folder.resolve().relative_to(root)
        except ValueError:
            return
        room = unquote(rel.parts[1]) if len(rel.parts) > 1 else ""
        params = {
            "kind": kind, "app": job.app, "room": room, "job": job.id, "path": rel.as_posix(),
            "output": job.output_rel, "error": job.error or "", "duration": (job.result or {}).get("duration"),
        }  # fmt: skip
        task = asyncio.get_running_loop().create_task(send(room, params))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return on_event


def router(node: NodeApi, on_compose_event: Callable[[str, ComposeJob], None] | None = None) -> APIRouter:
    api = APIRouter()
    jobs = ComposeJobs(Path(node.config.record_dir), on_compose_event or compose_hooks(node))

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
            apps = node.apps
            tenant = apps.app_for_secret(presented) if apps is not None else None
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
        return ok(await node.worker_for_room(room).call("record.status", {"room": room, "app": app}))

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
        failed), ``duration`` once complete. The files are this node's; with ``room``,
        ``recording`` says the room's recording now, cluster-wide (null when none): its
        session, peers and ``nodes``, the media nodes (and workers) recording its tracks, each
        in its own ``--record-dir``."""
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        root = Path(node.config.record_dir)
        files = await asyncio.to_thread(list_recordings, root, app, room)
        if room is None:
            return ok({"files": files})
        try:
            status = await node.worker_for_room(room).call("record.status", {"room": room, "app": app})
            recording = status.get("recording") if isinstance(status, dict) else None
        except (RpcError, TimeoutError):
            recording = None  # no worker: the files on disk only
        return ok({"files": files, "recording": recording})

    @api.post(
        "/api/record/compose",
        tags=["recording"],
        summary="Compose a recorded room session into one file (a job)",
        status_code=202,
        responses={
            202: {"description": "the job is queued: its id, and its status at /api/record/jobs/<id>"},
            404: {"description": "no such session folder of this app under --record-dir"},
            **_BODY_RESPONSES,
        },
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": RecordCompose.model_json_schema()}},
                "required": True,
            }
        },
    )
    async def compose(
        request: Request, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        """The session's voices mixed and its videos in a grid that follows who was present (with
        names), over its whole timeline, into ``composite.mp4`` (or ``.webm``) in the session's
        folder. Works on what is on disk (files already uploaded to S3 and deleted locally are
        not included). Jobs run one at a time, in a child process at a lower priority."""
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        req = await body_of(request, RecordCompose)
        if isinstance(req, JSONResponse):
            return req
        root = Path(node.config.record_dir).resolve()
        own = (root / seg(app or DEFAULT_APP)).resolve()
        rel = Path(req.path)
        folder = (root / rel).resolve()
        if rel.is_absolute() or ".." in rel.parts or not folder.is_relative_to(own) or folder == own:
            return error(404, f"no session folder {req.path!r} of this app under the recording folder")
        if not await asyncio.to_thread(folder.is_dir):
            return error(404, f"no session folder {req.path!r} under the recording folder")
        output = folder / f"composite.{req.format}"
        options = {"format": req.format, "width": req.width, "height": req.height, "fps": req.fps}
        job = jobs.submit(app, req.path, folder, output, options)
        return JSONResponse(ok(job.view()), status_code=202)

    @api.get(
        "/api/record/jobs/{job_id}",
        tags=["recording"],
        summary="A compose job's status and progress",
        responses={404: {"description": "no such job (of this app)"}, **_RESPONSES},
    )
    async def job_status(
        request: Request, job_id: str, authorization: str | None = Header(None, description="Bearer <app secret>")
    ) -> Any:
        """``status``: queued, running, completed or failed (then ``error`` says why); ``progress``
        0..1 (``done_seconds`` of ``total_seconds`` of the session); ``output``: the file, under
        ``--record-dir``; ``result`` once completed: duration, peers, files, the grid's changes."""
        app = app_of(request)
        if isinstance(app, JSONResponse):
            return app
        job = jobs.get(job_id, app)
        if job is None:
            return error(404, "no such compose job")
        return ok(job.view())

    return api
