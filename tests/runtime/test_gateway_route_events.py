"""A zone gateway's route events (gateway/route_report.py), in process: the gateway app proxies to
a real standalone node's HTTP app (httpx ASGI transport, no sockets). A WHIP request it places is
RouteBegin + RouteSuccess under the session the media node made (which then reports no route
events of its own); a request no node takes is RouteBegin + RouteError (PoolEmpty)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from trackmesh.config import resolve
from trackmesh.connector import events as ev
from trackmesh.connector.source import EventSource
from trackmesh.gateway.directory import NodeEntry
from trackmesh.gateway.node import GatewayNode
from trackmesh.http.app import create_app
from trackmesh.runtime.handles import InProcessWorker
from trackmesh.runtime.node import Node
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.security.tokens import SessionToken, issue

WHIP_OFFER = (Path(__file__).parents[1] / "sdp" / "fixtures" / "chrome_whip_simulcast.sdp").read_text()
SECRET = "cluster-secret-12345"


def test_the_zone_gateway_reports_the_route_of_each_new_session() -> None:
    media_cfg = resolve("standalone", {"secret": SECRET, "node_id": "4"}, {})
    media = Node(media_cfg)
    runtime = WorkerRuntime(media_cfg, 0)
    runtime.udp_port = 40000
    WebRtcTransport(runtime)
    runtime.core.audit = node_events = EventSource(4, 1, 0.0)
    media.workers.append(InProcessWorker(runtime))
    gw = GatewayNode(resolve("gateway", {"secret": SECRET, "node_id": "9"}, {}))
    gw.route_audit = gateway_events = EventSource(9, 2, 0.0)
    token = issue(media_cfg.token_key, SessionToken("whip", "r", "p"), 60, int(time.time()))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}

    async def main() -> tuple[int, int]:
        gw.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(media)), base_url="http://media")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.create_app()), base_url="http://gw") as c:
            gw.directory.update(NodeEntry(gw.config.zone, 4, 4, "http://media", 0, 10, 1.0, 100.0, True, False,
                                          gw.now()))
            placed = await c.post("/whip/endpoint", content=WHIP_OFFER, headers=headers)
            gw.directory.remove(4)
            refused = await c.post("/whip/endpoint", content=WHIP_OFFER, headers=headers)
        await gw.client.aclose()
        return placed.status_code, refused.status_code

    assert asyncio.run(main()) == (201, 503)
    reported = [(e.hook.event.session_id, e.hook.event.event) for e in gateway_events.take()
                if isinstance(e.hook.event, ev.PeerEvent)]
    assert [type(b) for _, b in reported] == [ev.RouteBegin, ev.RouteSuccess, ev.RouteBegin, ev.RouteError]
    [made] = runtime.core.endpoints
    assert reported[0][0] == reported[1][0] == made  # the media node's session
    success = reported[1][1]
    assert isinstance(success, ev.RouteSuccess) and success.dest_node == 4
    error = reported[3][1]
    assert isinstance(error, ev.RouteError)
    assert error == ev.RouteError(error.after_ms, None, ev.RouteErrorType.POOL_EMPTY)
    assert reported[2][0] == reported[3][0] != made
    # The media node reports the session itself, without route events of its own.
    names = [e.name for e in node_events.take()]
    assert names[0] == "Connecting" and "RouteBegin" not in names


def test_a_global_gateway_reports_the_requests_no_zone_took() -> None:
    from trackmesh.gateway.global_gateway import GlobalGatewayNode

    gw = GlobalGatewayNode(resolve("gateway", {"secret": SECRET, "node_id": "2", "global_gateway": True}, {}))
    gw.route_audit = events = EventSource(2, 3, 0.0)

    async def main() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.create_app()), base_url="http://g") as c:
            r = await c.post("/whip/endpoint", content=WHIP_OFFER, headers={"Content-Type": "application/sdp"})
            return r.status_code

    assert asyncio.run(main()) == 503
    reported = [e.hook.event.event for e in events.take() if isinstance(e.hook.event, ev.PeerEvent)]
    assert [type(b) for b in reported] == [ev.RouteBegin, ev.RouteError]
    assert isinstance(reported[1], ev.RouteError) and reported[1].error is ev.RouteErrorType.POOL_EMPTY
