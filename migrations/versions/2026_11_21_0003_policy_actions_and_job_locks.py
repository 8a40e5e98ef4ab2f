"""policy actions, job locks, session recovery and queue columns, inbox retention

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:18:57.220019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_locks")),
    )
    op.create_table(
        "policy_actions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("trigger_key", sa.String(length=320), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=False),
        sa.Column("agent_instance_id", sa.String(length=128), nullable=True),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_policy_actions_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_actions")),
        sa.UniqueConstraint("trigger_key", name=op.f("uq_policy_actions_trigger_key")),
    )
    op.create_index("ix_policy_actions_created_at", "policy_actions", ["created_at"], unique=False)
    op.create_index(
        "ix_policy_actions_due",
        "policy_actions",
        ["not_before"],
        unique=False,
        postgresql_where=sa.text("state IN ('pending', 'running')"),
        sqlite_where=sa.text("state IN ('pending', 'running')"),
    )
    op.create_index("ix_policy_actions_session_id", "policy_actions", ["session_id"], unique=False)
    op.add_column("inbox", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sessions", sa.Column("recovering_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sessions", sa.Column("policy_reason", sa.String(length=64), nullable=True))
    op.add_column("sessions", sa.Column("flag", sa.String(length=64), nullable=True))
    op.add_column("sessions", sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sessions", sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("reconciled_at")
        batch_op.drop_column("queued_at")
        batch_op.drop_column("flag")
        batch_op.drop_column("policy_reason")
        batch_op.drop_column("recovering_since")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
    op.drop_index("ix_policy_actions_session_id", table_name="policy_actions")
    op.drop_index(
        "ix_policy_actions_due",
        table_name="policy_actions",
        postgresql_where=sa.text("state IN ('pending', 'running')"),
        sqlite_where=sa.text("state IN ('pending', 'running')"),
    )
    op.drop_index("ix_policy_actions_created_at", table_name="policy_actions")
    op.drop_table("policy_actions")
    op.drop_table("job_locks")
