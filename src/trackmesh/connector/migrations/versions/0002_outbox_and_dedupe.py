"""The webhook outbox, and the source event id (dedupe) and app on events.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("source_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("app", sa.String(128), nullable=False, server_default=""))
    op.create_index("ix_events_source_id", "events", ["source_id"], unique=True)
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("msg_id", sa.String(160), nullable=False),
        sa.Column("app", sa.String(128), nullable=False),
        sa.Column("order_key", sa.String(512), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("done_at", sa.Float, nullable=True),
    )
    op.create_index("ix_outbox_msg_id", "outbox", ["msg_id"], unique=True)
    op.create_index("ix_outbox_state_id", "outbox", ["state", "id"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_events_source_id", "events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("app")
        batch.drop_column("source_id")
