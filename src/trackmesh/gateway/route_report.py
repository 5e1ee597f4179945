"""A zone gateway's route events for the event log (connector): each new-session request it routes
(WHIP, WHEP, SDK connect) is ``RouteBegin`` then ``RouteSuccess`` (to the media node that took it)
or ``RouteError`` (no node took it), as atm0s's gateway reports them.

The gateway tells a :class:`~trackmesh.core.audit.RouteAudit` (``GatewayApi.route_audit``: a zone
gateway's event source on its link to the zone's connector, gateway/node.py; None: nothing is
reported, as on a global gateway). The session id of a success is the one the media node made (read
from the conn id it answered with), so the route events and the node's own events share it; a
failure gets an id of the gateway's own (worker index ``MAX_WORKER``, which no media worker has).

Apps: a success is reported under the app its token names (the media node has verified that token
before answering 2xx); a failure under the single-tenant app, since no node checked the token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from trackmesh.core.audit import RouteAudit, RouteFailure
from trackmesh.core.ids import InvalidConnId, SessionId, SessionIdGenerator
from trackmesh.http.headers import bearer
from trackmesh.http.token_http import client_address
from trackmesh.security.tokens import TokenError, claimed_app
from trackmesh.transports.sdk.protocol import gateway_pb2

if TYPE_CHECKING:
    from fastapi import Request, Response

    from .api import GatewayApi

#: The new-session requests a gateway routes (not /token: it makes no session).
NEW_SESSION_PATHS = ("/whip/endpoint", "/whep/endpoint", "/webrtc/connect")


def _conn_id(request: Request, response: Response) -> str | None:
    if request.url.path == "/webrtc/connect":
        try:
            return gateway_pb2.ConnectResponse.FromString(bytes(response.body)).conn_id or None
        except Exception:  # a body that is not a ConnectResponse: nothing to report
            return None
    location = response.headers.get("location", "")
    return location.rpartition("/")[2] or None


def _app(request: Request) -> str:
    token = bearer(request.headers.get("authorization"))
    if token is None:
        return ""
    try:
        return claimed_app(token)
    except TokenError:
        return ""


def report_success(gw: GatewayApi, request: Request, started: float, response: Response, zone: int) -> None:
    """A 2xx from a media node of this zone: RouteBegin + RouteSuccess under the node's session."""
    audit = gw.route_audit
    if audit is None or request.url.path not in NEW_SESSION_PATHS or not 200 <= response.status_code < 300:
        return
    served = response.headers.get("x-trackmesh-served-by", "")
    if not served.startswith(f"{zone}/"):
        return  # another zone's gateway routed it and reports it
    conn_id = _conn_id(request, response)
    if conn_id is None:
        return
    try:
        parts = gw.codec.decode(conn_id)
    except InvalidConnId:
        return
    audit.route_succeeded(time.monotonic(), parts.session, client_address(request, gw.config.secret),
                          _app(request), started, parts.node_id)


def report_failure(
    audit: RouteAudit | None, ids: SessionIdGenerator, secret: str, request: Request, started: float, status: int,
    error: RouteFailure | None = None,
) -> None:
    """No media node took the request: by default 503 is PoolEmpty (none with room) and another
    5xx MediaError (the chosen one failed). Used by zone and global gateways alike (a global
    gateway reports only failures: the zone gateway that places a session reports its success)."""
    if audit is None or request.url.path not in NEW_SESSION_PATHS or status < 500:
        return
    if error is None:
        error = RouteFailure.POOL_EMPTY if status == 503 else RouteFailure.MEDIA_ERROR
    session: SessionId = ids.next()
    audit.route_failed(time.monotonic(), session, client_address(request, secret), "", started, error, None)
