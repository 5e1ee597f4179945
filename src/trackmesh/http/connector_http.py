"""The connector's HTTP API: the event log (atm0s's ``/api/connector/:node/log/*`` without the
node id: the zone's connector answers), the hook secret, and metrics. The routes see the node's
connector through ``api.ConnectorApi`` (the runtime's ``EmbeddedConnector`` satisfies it).

Every call needs ``Authorization: Bearer <app secret>`` and sees only that app's rows. Lists take
``page`` (from 0) and ``limit`` (1..1000, default 20); out-of-range values are a 400. Session ids
are decimal strings (they use all 64 bits: JavaScript numbers would round them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from trackmesh.connector import storage

from .envelope import error, ok
from .headers import bearer

if TYPE_CHECKING:
    from .api import ConnectorApi

MAX_LIMIT = 1000
_U64 = (1 << 64) - 1
_AUTH = Header(None, description="Bearer <app secret>")
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a parameter is out of range"},
    401: {"description": "missing or unknown app secret"},
    503: {"description": "this node runs no connector"},
}


def router(connector_of: Callable[[], ConnectorApi | None]) -> APIRouter:
    api = APIRouter(prefix="/api/connector", tags=["connector"])

    def auth(authorization: str | None) -> tuple[ConnectorApi, str] | JSONResponse:
        conn = connector_of()
        if conn is None:
            return error(503, "this node runs no connector")
        presented = bearer(authorization)
        app = conn.apps.app_for_secret(presented) if presented is not None else None
        if app is None:
            return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
        return conn, app

    async def query(conn: ConnectorApi, fn: Callable[[Any], Any]) -> Any:
        return await conn.read_log(fn)

    def page(page_: int, limit: int) -> storage.Page:
        return storage.Page(page_, limit)

    page_q = Query(0, ge=0, le=1_000_000, alias="page", description="page number, from 0")
    limit_q = Query(20, ge=1, le=MAX_LIMIT, description=f"rows per page, 1..{MAX_LIMIT}")

    @api.get("/log/rooms", summary="Rooms of the caller's app, newest first", responses=_RESPONSES)
    async def rooms(page_: int = page_q, limit: int = limit_q, authorization: str | None = _AUTH) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        conn, app = found
        return ok(await query(conn, lambda c: storage.list_rooms(c, app, page(page_, limit))))

    @api.get("/log/peers", summary="Peers (optionally of one room id) with their sessions", responses=_RESPONSES)
    async def peers(
        room: int | None = Query(None, ge=0, le=2**31 - 1, description="room id (from /log/rooms)"),
        page_: int = page_q,
        limit: int = limit_q,
        authorization: str | None = _AUTH,
    ) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        conn, app = found
        return ok(await query(conn, lambda c: storage.list_peers(c, app, room, page(page_, limit))))

    @api.get("/log/sessions", summary="Sessions with the rooms they joined, newest first", responses=_RESPONSES)
    async def sessions(page_: int = page_q, limit: int = limit_q, authorization: str | None = _AUTH) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        conn, app = found
        return ok(await query(conn, lambda c: storage.list_sessions(c, app, page(page_, limit))))

    @api.get("/log/events", summary="Events, oldest first, filtered by session and time", responses=_RESPONSES)
    async def events(
        session: str | None = Query(None, pattern=r"^[0-9]{1,20}$", description="session id, decimal"),
        start_ts: int | None = Query(None, ge=0, le=2**63 - 1, description="from this time (unix ms)"),
        end_ts: int | None = Query(None, ge=0, le=2**63 - 1, description="until this time (unix ms)"),
        page_: int = page_q,
        limit: int = limit_q,
        authorization: str | None = _AUTH,
    ) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        conn, app = found
        sid = int(session) if session is not None else None
        if sid is not None and sid > _U64:
            return error(400, "invalid request: session: larger than 2^64-1")
        if start_ts is not None and end_ts is not None and end_ts < start_ts:
            return error(400, "invalid request: end_ts is before start_ts")
        return ok(await query(conn, lambda c: storage.list_events(c, app, sid, start_ts, end_ts,
                                                                  page(page_, limit))))

    @api.get("/hook-secret", summary="The whsec_ secret this app's webhooks are signed with", responses=_RESPONSES)
    async def hook_secret(authorization: str | None = _AUTH) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        conn, app_id = found
        app = conn.apps.get(app_id)
        assert app is not None
        return ok({"app": app_id, "secret": app.hook_secret, "hook_url": app.hook_url})

    @api.get("/metrics", summary="Delivery metrics: queued, delivered, retried, oldest undelivered age",
             responses=_RESPONSES)
    async def metrics(authorization: str | None = _AUTH) -> Any:
        found = auth(authorization)
        if isinstance(found, JSONResponse):
            return found
        return ok(found[0].metrics())

    return api
