"""room presence: who is in which RTC room, and the agent time billed with nobody there

- ``room_users``: one row per (app, room, user), folded from ZEGO's RTC room callbacks
  (``POST /callbacks/zego-rtc``, worker/sessions/rooms.py): in or out, since when, why, the user's
  stream, and every login and logout by ``user_update_seq``.
- ``sessions.user_present`` / ``user_absent_since`` / ``user_logout_reason``: that presence for the
  session's user, which the idle and wait policies read; ``sessions.no_user_seconds``: agent
  seconds billed while that user was out. All NULL until a room callback is heard for the user.
- The BI view of sessions gains ``no_user_seconds`` (last column; replaced in place on Postgres,
  so the BI role's grant stays).

Both databases add the columns in place (no table rebuild, which would take SQLite's views).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 00:17:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_COLUMNS = ("user_present", "user_absent_since", "user_logout_reason", "no_user_seconds")
_FROM = "\n  FROM sessions s\n"


def _bi() -> ModuleType:
    """Revision 0005, for the text of its views (migrations do not import app code)."""
    path = Path(__file__).with_name("2026_11_22_0005_bi_views_and_role.py")
    spec = importlib.util.spec_from_file_location("_roomwarden_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sessions_view(with_presence: bool) -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    bi = _bi()
    sql = (bi.PG_VIEWS if postgres else bi.SQLITE_VIEWS)["sessions"]
    assert _FROM in sql
    if with_presence:
        sql = sql.replace(_FROM, ",\n       s.no_user_seconds" + _FROM)
    if postgres:
        if not with_presence:
            op.execute("DROP VIEW IF EXISTS bi.sessions")  # CREATE OR REPLACE cannot drop a column
        op.execute(f"CREATE OR REPLACE VIEW bi.sessions AS {sql}")
        if not with_presence:
            op.execute(bi.PG_GRANT)
    else:
        op.execute("DROP VIEW IF EXISTS bi_sessions")
        op.execute(f"CREATE VIEW bi_sessions AS {sql}")


def upgrade() -> None:
    op.create_table(
        "room_users",
        sa.Column("app_id", sa.BigInteger(), primary_key=True),
        sa.Column("room_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("user_seq", sa.BigInteger(), nullable=False),
        sa.Column("zego_session_id", sa.String(64)),
        sa.Column("login_at", sa.DateTime(timezone=True)),
        sa.Column("absent_since", sa.DateTime(timezone=True)),
        sa.Column("logout_reason", sa.String(8)),
        sa.Column("stream_id", sa.String(128)),
        sa.Column("stream_seq", sa.BigInteger(), nullable=False),
        sa.Column("stream_at", sa.DateTime(timezone=True)),
        sa.Column("changes", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("sessions", sa.Column("user_present", sa.Boolean()))
    op.add_column("sessions", sa.Column("user_absent_since", sa.DateTime(timezone=True)))
    op.add_column("sessions", sa.Column("user_logout_reason", sa.String(8)))
    op.add_column("sessions", sa.Column("no_user_seconds", sa.Float()))
    # The room callbacks find a room's sessions by these.
    op.create_index("ix_sessions_room", "sessions", ["app_id", "room_id"])
    _sessions_view(with_presence=True)


def downgrade() -> None:
    _sessions_view(with_presence=False)
    op.drop_index("ix_sessions_room", table_name="sessions")
    for name in SESSION_COLUMNS:
        if op.get_bind().dialect.name == "postgresql":
            op.drop_column("sessions", name)
        else:
            # Not batch mode: rebuilding the table would take the bi_* views with it (as in 0011).
            op.execute(f"ALTER TABLE sessions DROP COLUMN {name}")
    op.drop_table("room_users")
