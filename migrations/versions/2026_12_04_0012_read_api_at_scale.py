"""the read API at scale: per-Round marks, turn counters on sessions, stored search vectors, CJK bigrams

Over a million turns the analyst views spent their time deriving, on every request, what could
be kept as callbacks are applied:

- ``rounds``: one row per (instance, Round) with the last SPEAK_END, the first SPEAKING and the
  first LLMResult's callback time, the three things a Round's response time comes from
  (worker/analysis/latency.py). The drain keeps it (worker/sessions/rounds.py) with max/min, so
  arrival order does not matter; stats read it instead of grouping the timeline (a million rows)
  and the sentences per Round. Postgres adds ``response_ms``, a generated column with the
  arithmetic ``latency.response_times`` did in each query, so percentiles read one number a Round.
- ``sessions.user_turns``, ``agent_turns``, ``interrupted_turns``: counted as turns are made;
  ``min_turns`` compares a column (it walked every session's turns when nothing matched) and the
  stats' turn figures sum sessions instead of reading every turn.
- Postgres: ``turns.text_tsv``, the stored ``to_tsvector('simple', text)`` of settled turns (a
  generated column, NULL while the turn is live, so a live agent turn's rewrites do not compute
  it), and the word index on it: search ranked each match by parsing its text again.
- Postgres: ``turn_cjk_bigrams(text)``, the two-character substrings with a CJK character of a
  turn's lower-cased text, indexed for settled turns that hold CJK: a two-character Chinese term
  is shorter than a trigram, so pg_trgm could only scan its whole index for it.

Filled here from the rows already stored, with the rules the drain applies. Neither the
generated columns, the function nor the expression indexes are in the models: migrations/env.py
keeps them out of ``alembic check``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Scripts written without spaces, as worker/analysis/search.py's _CJK (a regular expression
# class Postgres reads the \u escapes of). search.py writes the same text in its queries: the
# bigram index is partial on it, and the planner uses it only for a query that says the same.
CJK_CLASS = r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"

# The per-turn counts, as the drain keeps them (worker/sessions/transcripts.py).
COUNT_TURNS = (
    "UPDATE sessions SET"
    " user_turns = (SELECT count(*) FROM turns t WHERE t.session_id = sessions.id AND t.speaker = 'user'),"
    " agent_turns = (SELECT count(*) FROM turns t WHERE t.session_id = sessions.id AND t.speaker = 'agent'),"
    " interrupted_turns = (SELECT count(*) FROM turns t"
    " WHERE t.session_id = sessions.id AND t.speaker = 'agent' AND t.interrupted)"
)


def rounds_backfill(dialect: str) -> str:
    """Every Round's marks from the stored timeline and sentences, as worker/sessions/rounds.py
    folds them (the same rows ``latency.round_latencies`` grouped before this revision)."""
    if dialect == "postgresql":
        action, status = "detail ->> 'Action'", "detail ->> 'Status'"
        no_time, no_ts = "NULL::timestamptz", "NULL::bigint"
    else:
        action, status = "json_extract(detail, '$.Action')", "json_extract(detail, '$.Status')"
        no_time, no_ts = "NULL", "NULL"
    return (
        "INSERT INTO rounds (instance_id, round, user_speak_end_at, agent_speaking_at, first_llm_ts)"
        " SELECT instance_id, round, max(speak_end), min(speaking), min(llm) FROM ("
        f" SELECT instance_id, round, at AS speak_end, {no_time} AS speaking, {no_ts} AS llm"
        " FROM timeline_events WHERE round IS NOT NULL AND event = 'UserSpeakAction'"
        f" AND {action} = 'SPEAK_END'"
        f" UNION ALL SELECT instance_id, round, {no_time}, at, {no_ts}"
        " FROM timeline_events WHERE round IS NOT NULL AND event = 'AgentInstanceStatus'"
        f" AND {status} = 'SPEAKING'"
        f" UNION ALL SELECT instance_id, round, {no_time}, {no_time}, callback_ts FROM agent_sentences"
        ") AS marks GROUP BY instance_id, round"
    )


# latency.response_times' arithmetic before this revision, column for column: the earlier
# output (the LLMResult's milliseconds as a time), milliseconds after the speech ended, none
# when either is missing or the output came first.
_FIRST_OUTPUT = "least(agent_speaking_at, to_timestamp(CAST(first_llm_ts AS FLOAT) / CAST(1000.0 AS FLOAT)))"
RESPONSE_MS = (
    f"CASE WHEN ({_FIRST_OUTPUT} >= user_speak_end_at)"
    f" THEN CAST(EXTRACT(epoch FROM {_FIRST_OUTPUT} - user_speak_end_at) * 1000 AS FLOAT) END"
)

POSTGRES_UPGRADE = [
    f"ALTER TABLE rounds ADD COLUMN response_ms double precision GENERATED ALWAYS AS ({RESPONSE_MS}) STORED",
    "ALTER TABLE turns ADD COLUMN text_tsv tsvector"
    " GENERATED ALWAYS AS (CASE WHEN settled THEN to_tsvector('simple'::regconfig, text) END) STORED",
    "DROP INDEX IF EXISTS ix_turns_text_tsv",
    "CREATE INDEX ix_turns_text_tsv ON turns USING gin (text_tsv) WHERE settled",
    # Lower-cased as ILIKE compares (lower() of both sides), so a text ILIKE a two-character
    # term holds that term's bigram: the index finds a superset, the ILIKE decides.
    "CREATE FUNCTION turn_cjk_bigrams(t text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE"
    " AS $$ SELECT coalesce(array_agg(DISTINCT b), '{}') FROM"
    " (SELECT substr(lower(t), i, 2) AS b FROM generate_series(1, char_length(lower(t)) - 1) AS i) AS pairs"
    f" WHERE b ~ '{CJK_CLASS}' $$",
    "CREATE INDEX ix_turns_text_bigrams ON turns USING gin (turn_cjk_bigrams(text))"
    f" WHERE settled AND text ~ '{CJK_CLASS}'",
]
POSTGRES_DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_turns_text_bigrams",
    "DROP FUNCTION IF EXISTS turn_cjk_bigrams(text)",
    "DROP INDEX IF EXISTS ix_turns_text_tsv",
    "ALTER TABLE turns DROP COLUMN IF EXISTS text_tsv",
    "CREATE INDEX ix_turns_text_tsv ON turns USING gin (to_tsvector('simple'::regconfig, text))"
    " WHERE settled",
]
COUNTERS = ("user_turns", "agent_turns", "interrupted_turns")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "rounds",
        sa.Column(
            "instance_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("agent_instances.id", ondelete="CASCADE", name="fk_rounds_instance_id_agent_instances"),
            nullable=False,
        ),
        sa.Column("round", sa.BigInteger(), nullable=False),
        sa.Column("user_speak_end_at", sa.DateTime(timezone=True)),
        sa.Column("agent_speaking_at", sa.DateTime(timezone=True)),
        sa.Column("first_llm_ts", sa.BigInteger()),
        sa.PrimaryKeyConstraint("instance_id", "round", name="pk_rounds"),
    )
    op.execute(rounds_backfill(dialect))
    for name in COUNTERS:
        op.add_column("sessions", sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    op.execute(COUNT_TURNS)
    if dialect == "postgresql":
        for statement in POSTGRES_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_DOWNGRADE:
            op.execute(statement)
        for name in COUNTERS:
            op.drop_column("sessions", name)
    else:
        # Not batch mode: rebuilding the table would take the bi_* views with it (as in 0011).
        for name in COUNTERS:
            op.execute(f"ALTER TABLE sessions DROP COLUMN {name}")
    op.drop_table("rounds")
