"""session analyses: post-call summary, data and outcome per configuration version

One row per (session, configuration version), so that a re-run after a prompt change keeps the
old results beside the new ones (worker/postcall/).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 00:13:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _json() -> sa.types.TypeEngine[object]:
    from sqlalchemy.dialects import postgresql

    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "session_analyses",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("config_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("summary", sa.Text()),
        sa.Column("data", _json()),
        sa.Column("outcome", sa.String(16)),
        sa.Column("outcome_reason", sa.Text()),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(1024)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("session_id", "config_version"),
    )
    op.create_index("ix_session_analyses_finished_at", "session_analyses", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_session_analyses_finished_at", table_name="session_analyses")
    op.drop_table("session_analyses")
