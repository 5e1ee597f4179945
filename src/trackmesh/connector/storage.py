"""The connector's database: engine, migrations, the outbox rows and the log queries.

``--connector-db`` takes an SQLAlchemy URL: ``sqlite:///path`` (the default is a file in
``./trackmesh-data/``, in WAL mode so the log API reads while the connector writes) or
``postgresql://user@host/db`` (psycopg 3; ``postgresql+psycopg://`` is implied). Everything here
is blocking; the driver runs it in a thread, never on a media worker's loop.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select, update
from sqlalchemy.engine import make_url

from .outbox import Delivery
from .schema import events, outbox, peer_sessions, peers, rooms, sessions

log = logging.getLogger("trackmesh.connector")

DEFAULT_DB = "sqlite:///trackmesh-data/connector.db"
MIGRATIONS = Path(__file__).parent / "migrations"


class StorageError(RuntimeError):
    """The database cannot be used (bad URL, unreachable server...); the message says which."""


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver we ship)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    if isinstance(dbapi_conn, sqlite3.Connection):
        cur = dbapi_conn.cursor()
        # WAL: readers (log API) never block the writer; synchronous=NORMAL in WAL mode loses
        # nothing on a process crash (kill -9), only possibly the last commits on power loss.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def open_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StorageError(f"--connector-db: {url!r} is not a database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise StorageError(f"--connector-db: {parsed.get_backend_name()!r} is not supported; accepted: sqlite, postgresql")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic; an empty database gets every table)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# ---- the outbox -----------------------------------------------------------------------------


def load_pending(conn: Connection, now: float) -> Iterator[Delivery]:
    """Pending deliveries in order, each due at once (a restart resumes them right away)."""
    rows = conn.execute(select(outbox).where(outbox.c.state == "pending").order_by(outbox.c.id))
    for r in rows:
        yield Delivery(r.msg_id, r.id, r.order_key, r.app, r.url, bytes(r.body), r.created_at, r.attempts,
                       min(r.next_at, now))


def mark_delivered(conn: Connection, seq: int, attempts: int, now: float) -> None:
    conn.execute(update(outbox).where(outbox.c.id == seq).values(state="delivered", attempts=attempts, done_at=now))


def mark_retry(conn: Connection, seq: int, attempts: int, next_at: float, error: str) -> None:
    conn.execute(
        update(outbox).where(outbox.c.id == seq).values(attempts=attempts, next_at=next_at, last_error=error[:500])
    )


def mark_failed(conn: Connection, seq: int, attempts: int, error: str, now: float) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.id == seq)
        .values(state="failed", attempts=attempts, last_error=error[:500], done_at=now)
    )


def outbox_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
    return {state: n for state, n in rows}


# ---- log queries (the log API, atm0s shapes) -----------------------------------------------


@dataclass(frozen=True)
class Page:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return self.page * self.limit


def _peer_session(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "peer_id": r.peer_id,
        "peer": r.peer,
        "session": str(r.session),
        "created_at": r.created_at,
        "joined_at": r.joined_at,
        "leaved_at": r.leaved_at,
    }


def _peer_sessions_of(conn: Connection, column: Any, keys: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {k: [] for k in keys}
    if not keys:
        return out
    q = (
        select(
            peer_sessions.c.id,
            peer_sessions.c.peer.label("peer_id"),
            peers.c.peer,
            peer_sessions.c.session,
            peer_sessions.c.created_at,
            peer_sessions.c.joined_at,
            peer_sessions.c.leaved_at,
            column.label("key"),
        )
        .join(peers, peers.c.id == peer_sessions.c.peer)
        .where(column.in_(keys))
        .order_by(peer_sessions.c.id)
    )
    for r in conn.execute(q):
        out[r.key].append(_peer_session(r))
    return out


def list_rooms(conn: Connection, app: str, page: Page) -> list[dict[str, Any]]:
    q = (
        select(rooms, func.count(peers.c.id).label("peers"))
        .outerjoin(peers, peers.c.room == rooms.c.id)
        .where(rooms.c.app == app)
        .group_by(rooms.c.id)
        .order_by(rooms.c.created_at.desc(), rooms.c.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return [
        {
            "id": r.id,
            "room": r.room,
            "app": r.app,
            "created_at": r.created_at,
            "destroyed_at": r.destroyed_at,
            "last_peer_leaved_at": r.last_peer_leaved_at,
            "record": r.record,
            "peers": r.peers,
        }
        for r in conn.execute(q)
    ]


def list_peers(conn: Connection, app: str, room: int | None, page: Page) -> list[dict[str, Any]]:
    q = select(peers, rooms.c.room.label("room_name")).join(rooms, rooms.c.id == peers.c.room).where(rooms.c.app == app)
    if room is not None:
        q = q.where(peers.c.room == room)
    rows = list(conn.execute(q.order_by(peers.c.created_at.desc(), peers.c.id.desc()).limit(page.limit)
                             .offset(page.offset)))
    by_peer = _peer_sessions_of(conn, peer_sessions.c.peer, [r.id for r in rows])
    return [
        {
            "id": r.id,
            "room_id": r.room,
            "room": r.room_name,
            "peer": r.peer,
            "created_at": r.created_at,
            "sessions": by_peer[r.id],
        }
        for r in rows
    ]


def list_sessions(conn: Connection, app: str, page: Page) -> list[dict[str, Any]]:
    q = (
        select(sessions)
        .where(sessions.c.app == app)
        .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    rows = list(conn.execute(q))
    by_session = _peer_sessions_of(conn, peer_sessions.c.session, [r.id for r in rows])
    return [
        {
            "id": str(r.id),
            "app": r.app,
            "ip": r.ip,
            "user_agent": r.user_agent,
            "sdk": r.sdk,
            "created_at": r.created_at,
            "joined_at": r.joined_at,
            "leaved_at": r.leaved_at,
            "peers": by_session[r.id],
        }
        for r in rows
    ]


def list_events(
    conn: Connection, app: str, session: int | None, start_ts: int | None, end_ts: int | None, page: Page
) -> list[dict[str, Any]]:
    q = select(events).where(events.c.app == app)
    if session is not None:
        q = q.where(events.c.session == session)
    if start_ts is not None:
        q = q.where(events.c.created_at >= start_ts)
    if end_ts is not None:
        q = q.where(events.c.created_at <= end_ts)
    q = q.order_by(events.c.created_at.asc(), events.c.id.asc()).limit(page.limit).offset(page.offset)
    return [
        {
            "id": r.id,
            "node": r.node,
            "node_ts": r.node_ts,
            "session": str(r.session),
            "created_at": r.created_at,
            "event": r.event,
            "meta": r.meta,
        }
        for r in conn.execute(q)
    ]
