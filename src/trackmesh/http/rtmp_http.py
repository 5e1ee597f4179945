"""RTMP ingest over HTTP: the operator's view of RTMP publishers (docs/rtmp.md).

``GET /rtmp/conn`` lists this node's RTMP publishers; ``DELETE /rtmp/conn/<conn_id>`` ends one
(its encoder gets an onStatus and the TCP connection closes; the room sees its tracks stop and the
peer leave). Both need ``Authorization: Bearer <app secret>``. Tokens (stream keys) come from
``POST /token/rtmp`` (token_http.py); the publishers live in the media workers (runtime/rtmp_worker.py),
reached with the worker calls ``rtmp.list`` and ``rtmp.delete``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response

from trackmesh.rpc import RpcError
from trackmesh.security.tokens import app_secret_matches

from .envelope import error, ok
from .headers import bearer

if TYPE_CHECKING:
    from .api import NodeApi

_AUTH = Header(None, description="Bearer <app secret>")
_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"description": "missing or wrong app secret"}}


def rtmp_url(node: NodeApi) -> Any:
    """``room -> rtmp://<node ip>:<port of the room's worker>/live``, or None with RTMP off."""

    def url(room: str) -> str | None:
        port = node.config.rtmp_listen_port
        if not port or node.config.role not in ("standalone", "media"):
            return None
        try:
            worker = node.worker_for_room(room)
        except RpcError:
            return None
        host = node.config.node_ip
        host = f"[{host}]" if ":" in host else host
        return f"rtmp://{host}:{port + worker.index}/live"

    return url


def router(node: NodeApi) -> APIRouter:
    api = APIRouter(tags=["rtmp"])

    def refused(authorization: str | None) -> JSONResponse | None:
        presented = bearer(authorization)
        if presented is None or not app_secret_matches(node.config.secret, presented):
            return error(401, "APP_TOKEN_INVALID", {"WWW-Authenticate": "Bearer"})
        return None

    @api.get("/rtmp/conn", summary="This node's RTMP publishers", responses=_RESPONSES)
    async def list_conns(authorization: str | None = _AUTH) -> Any:
        bad = refused(authorization)
        if bad is not None:
            return bad
        conns: list[dict[str, Any]] = []
        for worker in getattr(node, "workers", []):
            try:
                conns.extend(await worker.call("rtmp.list", {}))
            except RpcError:
                continue  # a worker without RTMP (or not answering) lists nothing
        return ok({"conns": conns})

    @api.delete(
        "/rtmp/conn/{conn_id}",
        status_code=204,
        summary="End an RTMP publisher (its tracks stop, the peer leaves the room)",
        responses={**_RESPONSES, 404: {"description": "no such RTMP publisher on this node"}},
    )
    async def delete_conn(conn_id: str, authorization: str | None = _AUTH) -> Response:
        bad = refused(authorization)
        if bad is not None:
            return bad
        worker = node.worker_for_conn(conn_id)  # RpcError(404) for a foreign or forged id
        await worker.call("rtmp.delete", {"conn_id": conn_id})
        return Response(status_code=204)

    return api
