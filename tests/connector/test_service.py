"""The connector service end to end: SQL log, real HTTP receiver verifying every signature."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from trackmesh.connector import events as ev
from trackmesh.connector.outbox import RetryPolicy
from trackmesh.connector.schema import outbox
from trackmesh.connector.service import AppHooks, ConnectorService
from trackmesh.connector.signing import derived_secret

from .receiver import HookReceiver, room_of

SECRET = derived_secret("app-secret-for-tests")
FAST = RetryPolicy(retry_for=600.0, base=0.05, factor=2.0, cap=0.5, jitter=0.2, attempt_timeout=1.0)


def peer(source: str, session: int, body: ev.PeerEventBody, app: str = "") -> ev.SourceEvent:
    return ev.SourceEvent(source, app, ev.HookEvent(1, int(time.time() * 1000), ev.PeerEvent(session, body)))


def room_traffic(rooms: int, peers_per_room: int) -> tuple[list[ev.SourceEvent], dict[int, str]]:
    out: list[ev.SourceEvent] = []
    where: dict[int, str] = {}
    n = 0
    for r in range(rooms):
        room = f"room{r}"
        for p in range(peers_per_room):
            session = 1000 * r + p + 1
            where[session] = room
            for body in (ev.Connecting("127.0.0.1"), ev.Connected(10, "127.0.0.1"), ev.Join(room, f"p{p}"),
                         ev.RemoteTrackStarted("audio", ev.Kind.AUDIO), ev.RemoteTrackEnded("audio", ev.Kind.AUDIO),
                         ev.Leave(room, f"p{p}"), ev.Disconnected(100, ev.DisconnectReason.USER_ACTION)):
                n += 1
                out.append(peer(f"evt_t_{n}", session, body))
    return out, where


async def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def check_order(rx: HookReceiver, engine: Any) -> None:
    """Every queued webhook accepted; per order key (room, or session before its Join) the first
    acceptances come in queue order; repeats only with the same id and the same body."""
    with engine.connect() as conn:
        queued = [(r.msg_id, r.order_key) for r in conn.execute(select(outbox.c.msg_id, outbox.c.order_key)
                                                                .order_by(outbox.c.id))]
    first: dict[str, bytes] = {}
    order: list[str] = []
    for r in rx.accepted():
        if r.msg_id in first:
            assert first[r.msg_id] == r.body
            continue
        first[r.msg_id] = r.body
        order.append(r.msg_id)
    assert set(first) == {m for m, _ in queued}
    key_of = dict(queued)
    for key in set(key_of.values()):
        assert [m for m in order if key_of[m] == key] == [m for m, k in queued if k == key], key
    assert rx.unverified == 0


@pytest.fixture
def receiver() -> Any:
    rx = HookReceiver(SECRET).start()
    yield rx
    rx.stop()


async def _start(db_url: str, url: str, **kw: Any) -> ConnectorService:
    svc = ConnectorService(db_url, 1, lambda app: AppHooks(url, SECRET), FAST, **kw)
    await svc.start()
    return svc


def test_every_event_arrives_signed_and_in_order_per_room(db_url: str, receiver: HookReceiver) -> None:
    receiver.answer = lambda n, msg_id: 500 if n <= 8 else 200

    async def main() -> None:
        svc = await _start(db_url, receiver.url, destroy_after=0.3)
        batch, where = room_traffic(rooms=4, peers_per_room=3)
        result = await svc.submit(batch)
        assert result.stored == len(batch)
        assert (await svc.submit(batch[:10])).duplicates == 10
        # 84 peer events + per room Started, 3 PeerJoined, 3 PeerLeaved, 3 AllPeersLeaved, Stopped
        total = len(batch) + 4 * (1 + 3 + 3 + 3 + 1)
        await wait_for(lambda: svc.outbox.delivered == total)
        check_order(receiver, svc.engine)
        assert {room_of(b, where) for _, b in receiver.accepted_bodies()} == {f"room{i}" for i in range(4)}
        assert svc.metrics()["retried"] >= 8 and svc.metrics()["queued"] == 0
        await svc.stop()

    asyncio.run(main())


def test_restart_resumes_pending_deliveries(db_url: str, receiver: HookReceiver) -> None:
    up = False
    receiver.answer = lambda n, msg_id: 200 if up else 503

    async def main() -> None:
        nonlocal up
        svc = await _start(db_url, receiver.url)
        batch, _where = room_traffic(rooms=2, peers_per_room=1)
        result = await svc.submit(batch)
        await wait_for(lambda: svc.outbox.retried >= 3)
        await svc.stop()
        up = True
        again = await _start(db_url, receiver.url)
        assert again.outbox.queued == len(result.deliveries)
        await wait_for(lambda: again.outbox.queued == 0)
        check_order(receiver, again.engine)
        assert {m for m, _ in receiver.accepted_bodies()} == {d.id for d in result.deliveries}
        await again.stop()

    asyncio.run(main())


@pytest.mark.parametrize("answer", [307, 404, None])
def test_bad_receivers_are_retried(tmp_path: Any, receiver: HookReceiver, answer: int | None) -> None:
    """A redirect is not followed, a 4xx is retried, a hanging receiver times out: all retried
    until the receiver answers 2xx."""
    receiver.answer = lambda n, msg_id: answer if n <= 2 else 204

    async def main() -> None:
        svc = await _start(f"sqlite:///{tmp_path / 'c.db'}", receiver.url)
        await svc.submit([peer("e1", 1, ev.Join("r", "p"))])
        await wait_for(lambda: svc.outbox.delivered == 3)
        assert svc.outbox.retried >= 2
        if answer is not None and answer < 400:
            assert all(r.msg_id != "" for r in receiver.requests)
        await svc.stop()

    asyncio.run(main())


def test_unreachable_receiver_is_retried_without_crashing(tmp_path: Any) -> None:
    async def main() -> None:
        svc = await _start(f"sqlite:///{tmp_path / 'c.db'}", "http://127.0.0.1:9/hook")
        await svc.submit([peer("e1", 1, ev.Join("r", "p"))])
        await wait_for(lambda: svc.outbox.retried >= 3)
        assert svc.metrics()["oldest_undelivered_age_s"] > 0
        await svc.stop()

    asyncio.run(main())
