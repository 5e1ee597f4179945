"""The atm0s 0.2 connector tables: rooms, peers, sessions, peer_sessions, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trackmesh.connector.schema import U64

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("app", sa.String(128), nullable=False),
        sa.Column("room", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("destroyed_at", sa.BigInteger, nullable=True),
        sa.Column("last_peer_leaved_at", sa.BigInteger, nullable=True),
        sa.Column("record", sa.Boolean, nullable=False),
    )
    op.create_index("ix_rooms_app_room", "rooms", ["app", "room"])
    op.create_index("ix_rooms_created_at", "rooms", ["created_at"])
    op.create_table(
        "peers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("room", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("peer", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_peers_room_peer", "peers", ["room", "peer"], unique=True)
    op.create_table(
        "sessions",
        sa.Column("id", U64, primary_key=True, autoincrement=False),
        sa.Column("app", sa.String(128), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("sdk", sa.String(128), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("joined_at", sa.BigInteger, nullable=True),
        sa.Column("leaved_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_sessions_app_created", "sessions", ["app", "created_at"])
    op.create_table(
        "peer_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.Integer, sa.ForeignKey("peers.id"), nullable=False),
        sa.Column("session", U64, nullable=False),
        sa.Column("room", sa.Integer, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
        sa.Column("leaved_at", sa.BigInteger, nullable=True),
        sa.Column("record", sa.Boolean, nullable=False),
    )
    op.create_index("ix_peer_sessions_session", "peer_sessions", ["session"])
    op.create_index("ix_peer_sessions_room_open", "peer_sessions", ["room", "leaved_at"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.BigInteger, nullable=False),
        sa.Column("node_ts", sa.BigInteger, nullable=False),
        sa.Column("session", U64, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("meta", sa.Text, nullable=True),
    )
    op.create_index("ix_events_session_ts", "events", ["session", "node_ts"])


def downgrade() -> None:
    for table in ("events", "peer_sessions", "sessions", "peers", "rooms"):
        op.drop_table(table)
