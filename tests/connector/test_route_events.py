"""Standalone's gateway part (http/requests.py ``route``): a WHIP request placed on a worker is
RouteBegin + RouteSuccess + Connecting in the log; one no worker takes is RouteBegin + RouteError;
a ConnectError ends its session in the log like a Disconnected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from trackmesh.config import resolve
from trackmesh.connector import events as ev
from trackmesh.connector.schema import events, sessions
from trackmesh.connector.service import ConnectorService
from trackmesh.http.app import create_app
from trackmesh.runtime.connector import EmbeddedConnector
from trackmesh.runtime.handles import InProcessWorker
from trackmesh.runtime.node import Node
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime

WHIP_OFFER = (Path(__file__).parents[1] / "sdp" / "fixtures" / "chrome_whip_simulcast.sdp").read_text()


def test_routed_and_refused_requests_in_the_log(tmp_path: Path) -> None:
    cfg = resolve("standalone", {"secret": "root-secret-12345", "connector_db": f"sqlite:///{tmp_path / 'c.db'}",
                                 "max_sessions": "1", "node_id": "5"}, {})
    node = Node(cfg)
    runtime = WorkerRuntime(cfg, 0)
    runtime.udp_port = 40000  # not started: answers only name the port
    WebRtcTransport(runtime)
    node.workers.append(InProcessWorker(runtime))
    node.connector = conn = EmbeddedConnector(node)
    web = create_app(node)

    async def main() -> None:
        await conn.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://t") as client:
            r = await client.post("/token/whip", json={"room": "r", "peer": "p", "ttl": 60},
                                  headers={"Authorization": "Bearer root-secret-12345"})
            token = r.json()["data"]["token"]
            sdp = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
            first = await client.post("/whip/endpoint", content=WHIP_OFFER, headers=sdp)
            second = await client.post("/whip/endpoint", content=WHIP_OFFER, headers=sdp)
        assert first.status_code == 201 and second.status_code == 503, (first.text, second.text)
        await conn.stop()

    asyncio.run(main())
    # What the node's connector stored (its pump hands every source's events to the database).
    svc = ConnectorService(cfg.connector_db, 5, lambda app: None)

    async def read() -> list[tuple[int, str, str]]:
        await svc.start()

        def q() -> list[tuple[int, str, str]]:
            with svc.engine.connect() as c:
                return [(r.session, r.event, r.meta) for r in c.execute(
                    select(events.c.session, events.c.event, events.c.meta).order_by(events.c.id))]

        rows = await svc.run_db(q)
        await svc.stop()
        return rows

    rows = asyncio.run(read())
    by_session: dict[int, list[str]] = {}
    for session, name, _ in rows:
        by_session.setdefault(session, []).append(name)
    placed = [names for names in by_session.values() if "RouteSuccess" in names]
    refused = [names for names in by_session.values() if "RouteError" in names]
    assert placed and placed[0][:3] == ["RouteBegin", "RouteSuccess", "Connecting"], by_session
    assert refused == [["RouteBegin", "RouteError"]], by_session
    meta = next(m for _, name, m in rows if name == "RouteError")
    assert '"error":0' in meta and '"dest_node":null' in meta  # PoolEmpty: the node is full
    success = next(m for _, name, m in rows if name == "RouteSuccess")
    assert '"dest_node":5' in success


def test_a_connect_error_ends_its_session_in_the_log(tmp_path: Path) -> None:
    svc = ConnectorService(f"sqlite:///{tmp_path / 'c.db'}", 1, lambda app: None)
    now_ms = int(time.time() * 1000)

    def peer(i: str, body: ev.PeerEventBody) -> ev.SourceEvent:
        return ev.SourceEvent(i, "", ev.HookEvent(1, now_ms, ev.PeerEvent(77, body)))

    async def main() -> None:
        await svc.start()
        await svc.submit([peer("e1", ev.Connecting("10.0.0.1")),
                          peer("e2", ev.ConnectError(10000, ev.ConnectErrorType.TIMEOUT))])

        def q() -> Any:
            with svc.engine.connect() as c:
                return c.execute(select(sessions.c.leaved_at).where(sessions.c.id == 77)).scalar_one()

        assert await svc.run_db(q) is not None
        ing = svc.ingestor
        assert ing is not None and ing.orphans(1, now_ms) == []  # nothing left open to close at a restart
        await svc.stop()

    asyncio.run(main())
