"""indexes at scale: the session list's sorts and filters, turn counts read from an index

With a million turns the analyst views spent their time in scans the indexes could answer:

- ``ix_sessions_start`` on ``(coalesce(started_at, created_at), id)``: the list's default order
  (a session's start, then id, for keyset pages) read from an index, newest or oldest first.
- Postgres: ``ix_sessions_duration`` / ``ix_sessions_duration_asc`` on the list's duration (the
  exact expression ``catalog.duration_ms`` compiles to, whole milliseconds) and id, one per
  direction because live sessions (no duration) come last either way (``NULLS LAST``).
- ``ix_turns_interrupted``: the sessions with an interrupted turn (``has_interruptions``), a
  partial index holding those turns only, probed per session by the filter's EXISTS.
- Postgres: ``ix_turns_session_id`` again, now carrying ``speaker`` and ``interrupted``
  (``INCLUDE``): turn counts per session (summaries, ``min_turns``) and the stats' turn figures
  become index-only scans of a narrow index instead of reads of the text-laden table.
- ``ix_agent_instances_agent_instance_id``: a session found by its AgentInstanceId (the filter,
  and ``GET /v1/sessions/{id}``) without the AppId the unique constraint starts with.
- Postgres: ``ix_agent_instances_live`` on ``app_id`` for instances not deleted: the agent slots
  in use (quotas, the ``/metrics`` slot gauges) counted from the live ones, not from every
  instance the app ever had (the unique constraint's index would visit them all).
- Postgres: statistics ``st_timeline_events_kind`` on the event and its ``Action``/``Status``:
  without them the planner took the stats' per-Round filter (``detail ->> 'Action' =
  'SPEAK_END'``) to keep 0.2% of the timeline instead of nearly all of it, and chose a nested
  loop and an on-disk sort over a million rows (6 s instead of 1 s).

Expressions, partial indexes and INCLUDE columns are not in the models: migrations/env.py keeps
the new names out of ``alembic check`` (``ix_turns_session_id`` stays modelled by its key column).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 08:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# catalog.duration_ms on Postgres, column names unqualified: the planner matches the list's
# ORDER BY to it only if the expression is the same.
DURATION = "CAST(ROUND(EXTRACT(EPOCH FROM (ended_at) - (started_at)) * 1000) AS BIGINT)"

BOTH_UPGRADE = [
    "CREATE INDEX ix_sessions_start ON sessions (coalesce(started_at, created_at), id)",
    "CREATE INDEX ix_agent_instances_agent_instance_id ON agent_instances (agent_instance_id)",
]
BOTH_DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_agent_instances_agent_instance_id",
    "DROP INDEX IF EXISTS ix_sessions_start",
]
POSTGRES_UPGRADE = [
    f"CREATE INDEX ix_sessions_duration ON sessions (({DURATION}) DESC NULLS LAST, id DESC)",
    f"CREATE INDEX ix_sessions_duration_asc ON sessions (({DURATION}), id)",
    "CREATE INDEX ix_turns_interrupted ON turns (session_id) WHERE interrupted",
    "CREATE INDEX ix_agent_instances_live ON agent_instances (app_id) WHERE state <> 'deleted'",
    "DROP INDEX ix_turns_session_id",
    "CREATE INDEX ix_turns_session_id ON turns (session_id) INCLUDE (speaker, interrupted)",
    "CREATE STATISTICS st_timeline_events_kind (mcv) ON event, (detail ->> 'Action'), (detail ->> 'Status')"
    " FROM timeline_events",
]
POSTGRES_DOWNGRADE = [
    "DROP STATISTICS IF EXISTS st_timeline_events_kind",
    "DROP INDEX ix_turns_session_id",
    "CREATE INDEX ix_turns_session_id ON turns (session_id)",
    "DROP INDEX IF EXISTS ix_agent_instances_live",
    "DROP INDEX IF EXISTS ix_turns_interrupted",
    "DROP INDEX IF EXISTS ix_sessions_duration_asc",
    "DROP INDEX IF EXISTS ix_sessions_duration",
]
# SQLite stores booleans as 0/1 and compares ``turns.interrupted = 1`` (SQLAlchemy's rendering of
# a boolean column as a condition): the partial index's WHERE must be the same term to be used.
SQLITE_UPGRADE = ["CREATE INDEX ix_turns_interrupted ON turns (session_id) WHERE interrupted = 1"]
SQLITE_DOWNGRADE = ["DROP INDEX IF EXISTS ix_turns_interrupted"]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in BOTH_UPGRADE + (POSTGRES_UPGRADE if postgres else SQLITE_UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in (POSTGRES_DOWNGRADE if postgres else SQLITE_DOWNGRADE) + BOTH_DOWNGRADE:
        op.execute(statement)
