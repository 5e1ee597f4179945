"""The connector's tables (SQLAlchemy Core), as atm0s's connector keeps them plus our outbox.

atm0s 0.2 (SeaORM): room, peer, session, peer_session, event. We name them in the plural, add
the ``app`` column where atm0s lacks it (peer rows reach it through their room), the source
event id (unique: at-least-once transport is deduplicated here, in the same transaction that
stores the event) and the ``outbox`` of webhook deliveries. Times are unix milliseconds as in
atm0s, except the outbox's scheduling times, in seconds (the outbox core's clock).

The schema changes only through Alembic revisions in ``migrations/versions``; this module must
describe the head revision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class U64(TypeDecorator[int]):
    """An unsigned 64-bit id (session ids pack node, worker and counter into all 64 bits) in a
    signed BIGINT column: stored in two's complement, read back unsigned. Exact on SQLite and
    PostgreSQL; only the SQL ordering of ids >= 2**63 differs, which nothing relies on."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        v = int(value)
        return v - (1 << 64) if v >= (1 << 63) else v

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        v = int(value)
        return v + (1 << 64) if v < 0 else v


rooms = Table(
    "rooms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app", String(128), nullable=False),
    Column("room", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("destroyed_at", BigInteger, nullable=True),
    Column("last_peer_leaved_at", BigInteger, nullable=True),
    Column("record", Boolean, nullable=False, default=False),
    Index("ix_rooms_app_room", "app", "room"),
    Index("ix_rooms_created_at", "created_at"),
)

peers = Table(
    "peers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room", Integer, ForeignKey("rooms.id"), nullable=False),
    Column("peer", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_peers_room_peer", "room", "peer", unique=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", U64, primary_key=True, autoincrement=False),
    Column("app", String(128), nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(512), nullable=True),
    Column("sdk", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("joined_at", BigInteger, nullable=True),
    Column("leaved_at", BigInteger, nullable=True),
    Index("ix_sessions_app_created", "app", "created_at"),
)

peer_sessions = Table(
    "peer_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("peer", Integer, ForeignKey("peers.id"), nullable=False),
    Column("session", U64, nullable=False),
    Column("room", Integer, ForeignKey("rooms.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("joined_at", BigInteger, nullable=False),
    Column("leaved_at", BigInteger, nullable=True),
    Column("record", Boolean, nullable=False, default=False),
    Index("ix_peer_sessions_session", "session"),
    Index("ix_peer_sessions_room_open", "room", "leaved_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", BigInteger, nullable=False),
    Column("node_ts", BigInteger, nullable=False),
    Column("session", U64, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("meta", Text, nullable=True),
    # Added by revision 0002:
    Column("source_id", String(128), nullable=True),
    Column("app", String(128), nullable=False, server_default=""),
    Index("ix_events_session_ts", "session", "node_ts"),
    Index("ix_events_source_id", "source_id", unique=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("msg_id", String(160), nullable=False),
    Column("app", String(128), nullable=False),
    Column("order_key", String(512), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),
    # pending, delivered or failed (given up after --hook-retry-for)
    Column("state", String(16), nullable=False),
    Column("last_error", String(512), nullable=True),
    Column("done_at", Float, nullable=True),
    Index("ix_outbox_msg_id", "msg_id", unique=True),
    Index("ix_outbox_state_id", "state", "id"),
)
