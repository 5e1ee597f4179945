"""The console at ``/console`` (docs/console.md): a login page, a static page with a small script
(no build step, no CDN), and the JSON APIs it calls under ``/api/console`` (in the OpenAPI docs).

- ``POST /console/login`` takes the app secret from a form and sets an HttpOnly, SameSite=Strict,
  expiring session cookie (session.py); wrong secrets are throttled per client like ``/token``.
- Every ``/api/console`` call needs that cookie (401 otherwise); every POST also needs our own
  origin and the session's CSRF token in ``X-CSRF-Token`` (403 otherwise).
- The live view comes from the media workers (``console.rooms``, runtime/console_rpc.py), pushed
  over Server-Sent Events once a second when it changed; the timelines and the event log from the
  connector's event log (read only).

Names (rooms, peers, tracks) are data: the page puts them in the DOM as text, never as markup, and
the Content-Security-Policy allows no inline script, so a peer named ``<img src=x onerror=...>``
shows as those characters.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from trackmesh import __version__
from trackmesh.connector import storage
from trackmesh.connector.schema import events as events_table
from trackmesh.recording.layout import list_recordings
from trackmesh.rpc import RpcError
from trackmesh.security.throttle import FailureThrottle, source_key
from trackmesh.security.tokens import app_secret_matches

from ..envelope import error
from ..envelope import ok as ok_body
from ..token_http import client_address
from .session import COOKIE_NAME, ConsoleSession, ConsoleSessions, same_origin

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from ..api import NodeApi

__all__ = ["console_router"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
MAX_LOGIN_BODY = 4096
PUSH_INTERVAL = 1.0
MAX_LIMIT = 500

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"description": "no valid console session cookie"}}
_POST_REFUSALS: dict[int | str, dict[str, Any]] = {
    **_UNAUTHORIZED,
    403: {"description": "cross-site request: wrong Origin or missing X-CSRF-Token; or `app` names another "
                         "app than the session's (only the console role's cluster secret acts across apps)"},
    404: {"description": "no such live session in your app"},
}
_APP_QUERY = ("the app (tenant) to act on or read: the cluster secret's session on the console role may name any "
              "app (default: the default app); any other session only its own")

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trackmesh console: log in</title>
<link rel="stylesheet" href="/console/static/console.css">
</head><body class="login">
<main>
<h1>trackmesh console</h1>
<form method="post" action="/console/login">
<label for="secret">App secret</label>
<input id="secret" name="secret" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
{message}
<p class="hint">The node's <code>--secret</code>, or an app's secret with multi-tenancy.</p>
</main>
</body></html>
"""


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"})  # fmt: skip


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def ok(data: Any) -> JSONResponse:
    return JSONResponse(ok_body(data))


def _static(name: str) -> str:
    return (files("trackmesh.http.console") / "static" / name).read_text(encoding="utf-8")


def group_rooms(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers' session rows as rooms -> peers, rooms by (app, name): a room is per app
    (registry.room_key); sessions not in a room last."""
    rooms: dict[tuple[str, str], list[dict[str, Any]]] = {}
    lobby: list[dict[str, Any]] = []
    for row in rows:
        if row.get("room") is None:
            lobby.append(row)
        else:
            rooms.setdefault((str(row.get("app", "")), str(row["room"])), []).append(row)
    out: list[dict[str, Any]] = [
        {"app": app, "room": name, "peers": sorted(peers, key=lambda p: (str(p.get("peer")), p["session"]))}
        for (app, name), peers in sorted(rooms.items())
    ]
    if lobby:
        out.append({"room": None, "peers": lobby})
    return out


def list_events(conn: Connection, app: str, session: int | None, event: str | None, start_ts: int | None,
                end_ts: int | None, page: int, limit: int, newest_first: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The event log of ``app`` with the console's filters (connector storage's, plus the event name)."""
    q = select(events_table).where(events_table.c.app == app)
    if session is not None:
        q = q.where(events_table.c.session == session)
    if event:
        q = q.where(events_table.c.event == event)
    if start_ts is not None:
        q = q.where(events_table.c.created_at >= start_ts)
    if end_ts is not None:
        q = q.where(events_table.c.created_at <= end_ts)
    order = (events_table.c.created_at.desc(), events_table.c.id.desc()) if newest_first else (
        events_table.c.created_at.asc(), events_table.c.id.asc())
    q = q.order_by(*order).limit(limit).offset(page * limit)
    return [
        {"id": r.id, "node": r.node, "session": str(r.session), "created_at": r.created_at, "event": r.event,
         "meta": r.meta}
        for r in conn.execute(q)
    ]


def console_router(node: NodeApi, throttle: FailureThrottle, sessions: ConsoleSessions | None = None) -> APIRouter:
    sessions = sessions or ConsoleSessions(node.config.secret)
    api = APIRouter()

    # ---- authentication -------------------------------------------------------------------------

    def current(request: Request) -> ConsoleSession | None:
        return sessions.verify(request.cookies.get(COOKIE_NAME), time.time())

    def unauthorized() -> JSONResponse:
        return error(401, "log in at /console first (no valid console session cookie)")

    def refused_post(request: Request, session: ConsoleSession) -> JSONResponse | None:
        h = request.headers
        if not same_origin(h.get("origin"), h.get("referer"), h.get("host")):
            return error(403, "cross-site request refused (Origin is not this console's)")
        if not sessions.csrf_ok(session, h.get("x-csrf-token")):
            return error(403, "missing or wrong X-CSRF-Token")
        return None

    def target_app(session: ConsoleSession, app: str | None) -> str | JSONResponse:
        """The app a call reads or acts on: the session's own, or (the cluster operator) the one named."""
        if app is None or app == session.app:
            return session.app
        if session.root:
            return app
        return error(403, "your console session is scoped to its own app")

    def app_of_secret(secret: str) -> str | None:
        apps = node.apps
        if apps is not None:
            return apps.app_for_secret(secret)
        return "" if app_secret_matches(node.config.secret, secret) else None

    # ---- pages ----------------------------------------------------------------------------------

    @api.get("/console", include_in_schema=False)
    async def console_page(request: Request) -> Response:
        if current(request) is None:
            return _page(LOGIN_PAGE.replace("{message}", ""))
        return _page(_static("index.html"))

    @api.get("/console/static/{name}", include_in_schema=False)
    async def console_static(name: str) -> Response:
        kind = STATIC.get(name)
        if kind is None:
            return error(404, "not found")
        return Response(_static(name), media_type=kind, headers={"Cache-Control": "no-cache",
                                                                  "X-Content-Type-Options": "nosniff"})

    @api.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        h = request.headers
        if not same_origin(h.get("origin"), h.get("referer"), h.get("host")):
            return _page(LOGIN_PAGE.replace("{message}", '<p class="error">Cross-site login refused.</p>'), 403)
        source = source_key(client_address(request, node.config.secret))
        now = time.monotonic()
        wait = throttle.retry_after(source, now)
        if wait:
            msg = f'<p class="error">Too many wrong secrets: retry in {int(wait)} s.</p>'
            return _page(LOGIN_PAGE.replace("{message}", msg), 429)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return _page(LOGIN_PAGE.replace("{message}", '<p class="error">Request too large.</p>'), 413)
        try:
            form = parse_qs(body.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            form = {}
        secret = (form.get("secret") or [""])[0]
        app = app_of_secret(secret) if secret else None
        if app is None:
            throttle.failed(source, now)
            return _page(LOGIN_PAGE.replace("{message}", '<p class="error" role="alert">Wrong secret.</p>'), 401)
        # The console role's cluster secret: the operator over every app (docs/console.md).
        value, _ = sessions.issue(app, time.time(), root=node.config.role == "console" and app == "")
        resp = RedirectResponse("/console", status_code=303)
        resp.set_cookie(COOKIE_NAME, value, max_age=sessions.ttl, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
        return resp

    @api.post("/console/logout", tags=["console"], summary="End the console session (the cookie stops working)",
              responses=_POST_REFUSALS)  # fmt: skip
    async def logout(request: Request) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        refused = refused_post(request, session)
        if refused is not None:
            return refused
        sessions.revoke(session, time.time())
        resp = ok({"logged_out": True})
        resp.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return resp

    # ---- reads ----------------------------------------------------------------------------------

    @api.get("/api/console/session", tags=["console"], summary="The console session: app, expiry, CSRF token",
             responses=_UNAUTHORIZED)  # fmt: skip
    async def session_info(request: Request) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        # The cluster operator's choice of app (Events, Peers): every app the cluster lists.
        apps = sorted({"", *(a.app_id for a in node.apps.all())} if node.apps is not None else {""})
        return ok({"app": session.app, "all_apps": session.root, "apps": apps if session.root else [session.app],
                   "expires": session.expires, "csrf": sessions.csrf_token(session), "node_id": node.config.node_id,
                   "role": node.config.role})  # fmt: skip

    @api.get("/api/console/node", tags=["console"], responses=_UNAUTHORIZED,
             summary="This node: role, version, health with the reason, workers (sessions, rooms, loop lag), memory")
    async def node_view(request: Request) -> Response:
        if current(request) is None:
            return unauthorized()
        ready, reason = node.readiness()
        workers = []
        for st in await node.stats():
            if "error" in st:
                workers.append({"worker": st.get("worker"), "error": st["error"]})
                continue
            workers.append({"worker": st["worker"], "udp_port": st.get("udp_port"), "sessions": st["endpoints"],
                            "rooms": st["rooms"], "loop_lag_ms": round(1000 * st["loop_lag"]["recent_max_s"], 1)})
        return ok({"role": node.config.role, "version": __version__, "node_id": node.config.node_id,
                   "zone": node.config.zone, "uptime_s": round(time.time() - node.started_at), "ready": ready,
                   "reason": reason, "draining": node.draining, "rss_bytes": _rss_bytes(), "workers": workers,
                   "sessions_capacity": node.config.max_sessions})  # fmt: skip

    def scope(session: ConsoleSession) -> dict[str, str]:
        """A worker call's app scope: the session's app, or every app (the cluster operator)."""
        return {"app": session.app, "apps": "*"} if session.root else {"app": session.app}

    async def live_rooms(session: ConsoleSession) -> dict[str, Any]:
        """``rooms`` (rooms -> peers -> tracks) and ``unanswered``: the workers that did not answer, whose
        sessions are missing from ``rooms`` (the page says so instead of showing a partial view as whole)."""
        rows: list[dict[str, Any]] = []
        unanswered: list[str] = []
        cluster = node.config.role == "console"
        # Every transport's sessions: WebRTC, and RTMP, SIP and MoQ (their OtherSessions adapters).
        results = await node.call_workers("console.rooms", scope(session))
        for index, result in enumerate(results):
            if isinstance(result, list):
                rows.extend(result)
            else:
                message = getattr(result, "message", result)
                unanswered.append(message if cluster else f"worker {index}: {message}")
        out: dict[str, Any] = {"rooms": group_rooms(rows), "unanswered": unanswered}
        if cluster:
            out["stale"] = node.console_stale()  # type: ignore[attr-defined]
        return out

    @api.get("/api/console/rooms", tags=["console"], summary="Live rooms of your app (the console role's cluster "
             "secret: of every app, each with its `app`), their peers and tracks (`rooms`), and the workers that did "
             "not answer (`unanswered`)", responses=_UNAUTHORIZED)  # fmt: skip
    async def rooms(request: Request) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        return ok(await live_rooms(session))

    @api.get("/api/console/stream", tags=["console"], responses=_UNAUTHORIZED,
             summary="Server-Sent Events: `rooms` (as GET /api/console/rooms) when it changes, checked every second")
    async def stream(request: Request) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        cookie = request.cookies.get(COOKIE_NAME)
        # The zones view is the cluster's operator's (the default app), never a tenant's.
        cluster_view = getattr(node, "console_cluster", None) if session.app == "" else None

        async def events() -> AsyncIterator[str]:
            last = None
            quiet = 0
            yield "retry: 2000\n\n"
            while not node.draining and not await request.is_disconnected():
                if sessions.verify(cookie, time.time()) is None:
                    yield "event: logout\ndata: {}\n\n"
                    return
                data = json.dumps(await live_rooms(session), separators=(",", ":"))
                changed = data != last
                if changed:
                    last = data
                    yield f"event: rooms\ndata: {data}\n\n"
                if cluster_view is not None:  # the console role: zones and nodes (report ages change: every push)
                    changed = True
                    yield f"event: cluster\ndata: {json.dumps(cluster_view(), separators=(',', ':'))}\n\n"
                if changed:
                    quiet = 0
                else:
                    quiet += 1
                    if quiet % 15 == 0:
                        yield ": keep-alive\n\n"
                await asyncio.sleep(PUSH_INTERVAL)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    @api.get("/api/console/cluster", tags=["console"], responses={**_UNAUTHORIZED, 404: {"description":
             "not the console role"}, 403: {"description": "a tenant's session (an app other than the default)"}},
             summary="The console role (the cluster secret's session): zones -> gateways, media and connector "
                     "nodes with CPU, memory, sessions, capacity, health and report age (`state`: up, stale or "
                     "gone)")  # fmt: skip
    async def cluster(request: Request) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        view = getattr(node, "console_cluster", None)
        if view is None:
            return error(404, "this node is not a console role node (trackmesh console): see /api/console/node")
        if session.app != "":
            return error(403, "the zones view is the cluster operator's: log in with the cluster secret")
        return ok(view())

    def connector_or_503() -> Any:
        return node.connector

    async def remote_log(path: str, params: dict[str, Any], app: str) -> list[Any] | JSONResponse:
        """The console role: the zone connectors' log API of ``app`` (runtime/console_node.py)."""
        fetch = getattr(node, "connector_log", None)
        if fetch is None:
            return error(503, "this node runs no connector")
        try:
            rows: list[Any] = await fetch(path, params, app)
        except RpcError as exc:
            return error(exc.status, exc.message)
        return rows

    @api.get("/api/console/events", tags=["console"], responses={**_UNAUTHORIZED, 503: {"description": "no connector"}},
             summary="The event log of your app, filtered; newest first unless `session` is given (then a timeline, "
                     "oldest first)")  # fmt: skip
    async def event_log(
        request: Request,
        session_id: str | None = Query(None, alias="session", pattern=r"^[0-9]{1,20}$", description="session id"),
        event: str | None = Query(None, max_length=64, pattern=r"^[A-Za-z]+$", description="event name, e.g. "
                                  "Disconnected"),
        start_ts: int | None = Query(None, ge=0, le=2**63 - 1, description="from (unix ms)"),
        end_ts: int | None = Query(None, ge=0, le=2**63 - 1, description="until (unix ms)"),
        page: int = Query(0, ge=0, le=100_000),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        app_name: str | None = Query(None, alias="app", max_length=128, description=_APP_QUERY),
    ) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        sid = int(session_id) if session_id is not None else None
        if sid is not None and sid >= 1 << 64:
            return error(400, "invalid request: session: larger than 2^64-1")
        conn = connector_or_503()
        if conn is None:
            # The console role: the connectors filter by session and time; the event name here.
            found = await remote_log("events", {"session": session_id, "start_ts": start_ts, "end_ts": end_ts,
                                                "page": page, "limit": limit}, app)  # fmt: skip
            if isinstance(found, JSONResponse):
                return found
            found = [r for r in found if isinstance(r, dict) and (not event or r.get("event") == event)]
            if sid is None:
                found.sort(key=lambda r: (r.get("created_at", 0), r.get("id", 0)), reverse=True)
            return ok(found[:limit])
        rows = await conn.read_log(lambda c: list_events(c, app, sid, event, start_ts, end_ts, page, limit,
                                                         newest_first=sid is None))  # fmt: skip
        return ok(rows)

    @api.get("/api/console/peers", tags=["console"], responses={**_UNAUTHORIZED, 503: {"description": "no connector"}},
             summary="Peers of your app from the event log (live or gone), newest first, with their sessions")
    async def log_peers(request: Request, page: int = Query(0, ge=0, le=100_000),
                        limit: int = Query(50, ge=1, le=MAX_LIMIT),
                        app_name: str | None = Query(None, alias="app", max_length=128,
                                                     description=_APP_QUERY)) -> Response:  # fmt: skip
        session = current(request)
        if session is None:
            return unauthorized()
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        conn = connector_or_503()
        if conn is None:
            found = await remote_log("peers", {"page": page, "limit": limit}, app)
            return found if isinstance(found, JSONResponse) else ok(found[:limit])
        return ok(await conn.read_log(lambda c: storage.list_peers(c, app, None, storage.Page(page, limit))))

    # ---- recordings (standalone: the files are this node's; the console role: the media nodes') ---

    def record_root() -> Path | None:
        return Path(node.config.record_dir) if node.config.role == "standalone" else None

    # The console role (runtime/console_node.py): the media nodes' files, over their console queryables.
    cluster_recordings = getattr(node, "console_recordings", None)
    cluster_chunk = getattr(node, "console_recording_chunk", None)

    @api.get("/api/console/recordings", tags=["console"], responses={**_UNAUTHORIZED, 404: {"description":
             "no recordings on this node (the console role: they are on the media nodes)"}},
             summary="Recorded files of your app (of one room), oldest first, each with its `download` "
                     "link")  # fmt: skip
    async def recordings(request: Request, room: str | None = Query(None, min_length=1, max_length=128),
                         app_name: str | None = Query(None, alias="app", max_length=128,
                                                      description=_APP_QUERY)) -> Response:  # fmt: skip
        session = current(request)
        if session is None:
            return unauthorized()
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        root = record_root()
        unanswered: list[str] = []
        if root is not None:
            files = await asyncio.to_thread(list_recordings, root, app, room)
        elif cluster_recordings is not None:
            try:
                files, unanswered = await cluster_recordings(app, room)
            except RpcError as exc:
                return error(exc.status, exc.message)
        else:
            return error(404, "this node keeps no recordings (they are on the media nodes)")
        for f in files:
            if not f.get("uploaded"):
                where = {"zone": f["zone"], "node": f["node"]} if root is None else {}  # the console role
                other = {"app": app} if app != session.app else {}  # the cluster operator's look at a tenant's
                f["download"] = "/api/console/recordings/file?" + urlencode({"path": f["path"], **where, **other})
        return ok({"files": files, "unanswered": unanswered})

    @api.get("/api/console/recordings/file", tags=["console"], responses={**_UNAUTHORIZED, 404: {"description":
             "no such recorded file of your app"}},
             summary="Download a recorded file (a path from the list)")  # fmt: skip
    async def recording_file(request: Request, path: str | None = Query(None, max_length=1024),
                             zone: int | None = Query(None, ge=0, lt=1 << 24),
                             node_index: int | None = Query(None, alias="node", ge=0, lt=256),
                             app_name: str | None = Query(None, alias="app", max_length=128,
                                                          description=_APP_QUERY)) -> Response:  # fmt: skip
        session = current(request)
        if session is None:
            return unauthorized()
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        if not path:
            return error(400, "invalid request: path is required (from GET /api/console/recordings)")
        root = record_root()
        if root is None and cluster_chunk is not None:
            if zone is None or node_index is None:
                return error(400, "invalid request: zone and node are required (from GET /api/console/recordings)")
            return await cluster_download(app, path, zone, node_index)
        if root is None:
            return error(404, "this node keeps no recordings")
        # Only a path the app's own listing names: no traversal, no other app's files.
        files = await asyncio.to_thread(list_recordings, root, app, None)
        if path not in {f["path"] for f in files if not f.get("uploaded")}:
            return error(404, "no such recorded file of your app")
        full = root / path
        return FileResponse(full, filename=full.name, content_disposition_type="attachment",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})  # fmt: skip

    async def cluster_download(app: str, path: str, zone: int, index: int) -> Response:
        """A media node's file, streamed chunk by chunk over its console queryable (the first chunk is
        fetched before answering, so a refused path is a 404, not a broken download)."""
        assert cluster_chunk is not None
        try:
            first, done = await cluster_chunk(zone, index, app, path, 0)
        except RpcError as exc:
            return error(exc.status, exc.message)

        async def body() -> AsyncIterator[bytes]:
            chunk, last, offset = first, done, 0
            while True:
                yield chunk
                offset += len(chunk)
                if last:
                    return
                chunk, last = await cluster_chunk(zone, index, app, path, offset)  # RpcError: the download breaks

        name = quote(path.rsplit("/", 1)[-1])
        return StreamingResponse(body(), media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})  # fmt: skip

    # ---- actions --------------------------------------------------------------------------------

    @api.post("/api/console/sessions/{session_id}/kick", tags=["console"], responses=_POST_REFUSALS,
              summary="Kick a peer: close its session now (the connector logs KickByApi)")  # fmt: skip
    async def kick(request: Request, session_id: str) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        refused = refused_post(request, session)
        if refused is not None:
            return refused
        if not session_id.isdigit() or len(session_id) > 20:
            return error(404, "no live session with this id in your app")
        results = await node.call_workers("console.kick", {**scope(session), "session": session_id})
        if any(isinstance(r, dict) and r.get("kicked") for r in results):
            return ok({"kicked": 1})
        return error(404, "no live session with this id in your app")

    @api.post("/api/console/sessions/{session_id}/tracks/{track:path}/{action}", tags=["console"],
              responses={**_POST_REFUSALS, 400: {"description": "action is not mute or unmute"}},
              summary="Mute or unmute a peer's published track: its viewers stop (or resume) receiving it; "
                      "packets still counted")  # fmt: skip
    async def mute_track(request: Request, session_id: str, track: str, action: str) -> Response:
        session = current(request)
        if session is None:
            return unauthorized()
        refused = refused_post(request, session)
        if refused is not None:
            return refused
        if action not in ("mute", "unmute"):
            return error(400, "action is mute or unmute")
        if not session_id.isdigit() or len(session_id) > 20 or len(track) > 128:
            return error(404, "no live session with this id in your app")
        params = {**scope(session), "session": session_id, "track": track}
        results = await node.call_workers(f"console.{action}", params)
        done = next((r for r in results if isinstance(r, dict) and "muted" in r), None)
        if done is not None:
            return ok({"muted": done["muted"], "changed": done["changed"]})
        found = [r for r in results if isinstance(r, RpcError) and r.status == 404 and "track" in r.message]
        return error(404, found[0].message if found else "no live session with this id in your app")

    @api.post("/api/console/rooms/{room:path}/end", tags=["console"], responses=_POST_REFUSALS,
              summary="End a room: kick every peer in it")  # fmt: skip
    async def end_room(request: Request, room: str, app_name: str | None = Query(None, alias="app", max_length=128,
                       description=_APP_QUERY)) -> Response:  # fmt: skip
        session = current(request)
        if session is None:
            return unauthorized()
        refused = refused_post(request, session)
        if refused is not None:
            return refused
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        results = await node.call_workers("console.end_room", {"app": app, "room": room})
        kicked = sum(int(r.get("kicked", 0)) for r in results if isinstance(r, dict))
        failed = [r.message for r in results if isinstance(r, RpcError)]
        if failed and not kicked:
            return error(503, f"the workers did not answer: {failed[0]}")
        return ok({"kicked": kicked})

    @api.post("/api/console/rooms/{room:path}/record/{action}", tags=["console"], responses={**_POST_REFUSALS,
              400: {"description": "action is not start or stop"},
              503: {"description": "the console role: no media node available (or the cluster is lost)"},
              504: {"description": "the console role: no media node answered"}},
              summary="Start or stop recording a room (every peer's tracks, cluster-wide on the console role; "
                      "docs/recording.md)")  # fmt: skip
    async def record_room(request: Request, room: str, action: str, app_name: str | None = Query(
                          None, alias="app", max_length=128, description=_APP_QUERY)) -> Response:  # fmt: skip
        session = current(request)
        if session is None:
            return unauthorized()
        refused = refused_post(request, session)
        if refused is not None:
            return refused
        app = target_app(session, app_name)
        if isinstance(app, JSONResponse):
            return app
        if action not in ("start", "stop"):
            return error(400, "action is start or stop")
        if len(room) > 128:
            return error(404, "no such live room on this node")
        # The console role: a media node's worker takes it (cluster-wide, runtime/console_node.py).
        cluster_record = getattr(node, "console_record", None)
        if node.config.role != "standalone" and cluster_record is None:
            return error(404, "no such live room on this node")
        params: dict[str, Any] = {"room": room, "app": app}
        if action == "start":
            params["peers"] = None
        try:
            if cluster_record is not None:
                return ok(await cluster_record(app, room, action))
            return ok(await node.worker_for_room(room).call(f"record.{action}", params))
        except RpcError as exc:
            return error(exc.status, exc.message)

    return api
