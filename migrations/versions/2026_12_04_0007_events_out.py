"""events out: outbox_events, outbox_cursors, endpoints, deliveries, delivery_attempts; turns.completed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("state = 'pending'")


def _json() -> sa.types.TypeEngine[object]:
    from sqlalchemy.dialects import postgresql

    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "outbox_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("dedup_key", sa.String(200), nullable=False, unique=True),
        sa.Column("session_id", sa.String(36)),
        sa.Column("app_id", sa.BigInteger()),
        sa.Column("endpoint_id", sa.String(40)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", _json(), nullable=False),
        # The writing transaction's id: readers stay below the oldest one still running.
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint") if postgres else None,
        ),
    )
    op.create_index("ix_outbox_events_txid_id", "outbox_events", ["txid", "id"])
    op.create_index("ix_outbox_events_session_id", "outbox_events", ["session_id", "id"])
    op.create_index("ix_outbox_events_occurred_at", "outbox_events", ["occurred_at"])
    op.create_table(
        "outbox_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", _json()),
        sa.Column("app_id", sa.BigInteger()),
        sa.Column("description", sa.String(512)),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text()),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True)),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(256)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "endpoint_id", sa.String(40), sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "event_id", ID, sa.ForeignKey("outbox_events.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("session_id", sa.String(36)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.String(512)),
        sa.Column("replay", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["endpoint_id", "next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_deliveries_session_order",
        "deliveries",
        ["endpoint_id", "session_id", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_deliveries_endpoint_id", "deliveries", ["endpoint_id", "id"])
    op.create_index("ix_deliveries_event_id", "deliveries", ["event_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", ID, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(256)),
        sa.Column("response_excerpt", sa.String(1024)),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])
    # The highest Round of an instance whose turns are completed (announced as turn.completed).
    op.add_column("agent_instances", sa.Column("completed_round", sa.BigInteger()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE agent_instances DROP COLUMN completed_round")
    else:
        op.drop_column("agent_instances", "completed_round")
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("endpoints")
    op.drop_table("outbox_cursors")
    op.drop_table("outbox_events")
