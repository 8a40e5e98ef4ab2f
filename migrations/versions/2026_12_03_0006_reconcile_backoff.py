"""sessions.reconcile_attempts: reconciliation backs off per session, then gives up

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: no batch copy of sessions (the bi_* views read it).
    op.add_column(
        "sessions", sa.Column("reconcile_attempts", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE sessions DROP COLUMN reconcile_attempts")  # SQLite 3.35+, no copy
    else:
        op.drop_column("sessions", "reconcile_attempts")
