"""retention and erasure: sessions whose words were removed, the erasures log, sessions by user

- ``sessions.transcript_removed_at`` / ``transcript_removed_by``: transcript retention or a
  user's erasure emptied the session's text (worker/privacy/). The turns stay, with their
  timings, so counts and stats read the same.
- ``erasures``: one row per erasure (who asked, when, how much was erased); the user id is kept
  as its SHA-256 only.
- ``ix_sessions_user_id``: an erasure finds a user's sessions by it (so does the ``user_id``
  filter of the analyst views).

SQLite's ``PRAGMA secure_delete`` is a connection setting (worker/db.py), not a schema change.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("transcript_removed_at", "transcript_removed_by")


def upgrade() -> None:
    op.add_column("sessions", sa.Column("transcript_removed_at", sa.DateTime(timezone=True)))
    op.add_column("sessions", sa.Column("transcript_removed_by", sa.String(16)))
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("user_hash", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("counts", json, nullable=False),
        sa.Column("files_scrubbed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    op.create_index("ix_erasures_user_hash", "erasures", ["user_hash"])


def downgrade() -> None:
    op.drop_index("ix_erasures_user_hash", table_name="erasures")
    op.drop_table("erasures")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    if op.get_bind().dialect.name == "postgresql":
        for name in COLUMNS:
            op.drop_column("sessions", name)
    else:
        # Not batch mode: rebuilding the table would take the bi_* views with it (as in 0011, 0012).
        for name in COLUMNS:
            op.execute(f"ALTER TABLE sessions DROP COLUMN {name}")
