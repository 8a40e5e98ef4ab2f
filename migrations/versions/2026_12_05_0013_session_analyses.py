"""session analyses: post-call summary, data and outcome per configuration version

One row per (session, configuration version), so that a re-run after a prompt change keeps the
old results beside the new ones (worker/postcall/).

The BI views gain the analyses as a view of their own, ``bi.analyses`` (``bi_analyses`` on
SQLite): one row per session and version, joined to ``bi.sessions`` on ``session_id``. A view
beside the others rather than columns added to ``bi.sessions``: the results of several versions
stay side by side, and ``bi.sessions`` keeps one row per session. It holds no secret (the API key
lives in the settings only); the Postgres role ``roomwarden_bi`` is granted it when it exists.

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


ROLE = "roomwarden_bi"
COLUMNS = """
       a.session_id,
       a.config_version,
       a.status,
       a.model,
       a.summary,
       a.outcome,
       a.outcome_reason,
       {data} AS data,
       a.prompt_tokens,
       a.completion_tokens,
       a.chunks,
       a.attempts,
       a.error,
       a.started_at,
       a.finished_at
  FROM session_analyses a"""
PG_GRANT = f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        GRANT SELECT ON bi.analyses TO {ROLE};
    END IF;
END
$$"""


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
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE VIEW bi.analyses AS SELECT" + COLUMNS.format(data="a.data"))
        op.execute(PG_GRANT)
    else:
        op.execute("CREATE VIEW bi_analyses AS SELECT" + COLUMNS.format(data="a.data"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW IF EXISTS bi.analyses")
    else:
        op.execute("DROP VIEW IF EXISTS bi_analyses")
    op.drop_index("ix_session_analyses_finished_at", table_name="session_analyses")
    op.drop_table("session_analyses")
