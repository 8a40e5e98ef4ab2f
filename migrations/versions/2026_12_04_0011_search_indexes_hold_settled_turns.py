"""search indexes hold settled turns only: turns.settled, partial GIN indexes on Postgres

An agent turn's text is re-joined each time one of its sentences arrives, and every rewrite of
``turns.text`` made Postgres insert every word and trigram of the whole text into both GIN
indexes again: the most expensive statement of a live drain (~45 us of Postgres time per
callback in a live-paced load, against ~8 us for the sentence's own insert). Now a turn is
``settled`` once its text should not change any more (its Round is over: the instance's
``completed_round`` reached it; a user's turn, which has one ASRResult, at once; a Coze turn,
written whole), and the two GIN indexes hold settled turns only (``WHERE settled``). Search reads
them for settled turns and scans the few unsettled ones through ``ix_turns_unsettled``, so a
reader finds the same turns as before.

``settled`` is derived like everything else (a function of the stored callbacks: the Round
marks are), so ``rebuild`` recomputes it. Existing rows get it from the same rule here.

SQLite keeps its FTS5 table and triggers as they are (the rewrite costs little there); the
column is added so that the models are the same on both.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rule the drain applies (worker/sessions/transcripts.py ``settles``), for the rows already there.
BACKFILL = (
    "UPDATE turns SET settled = true WHERE speaker = 'user'"
    " OR round <= (SELECT completed_round FROM agent_instances i WHERE i.id = turns.instance_id)"
    " OR session_id IN (SELECT id FROM sessions WHERE provider = 'coze')"
)
POSTGRES_UPGRADE = [
    "DROP INDEX IF EXISTS ix_turns_text_tsv",
    "DROP INDEX IF EXISTS ix_turns_text_trgm",
    "CREATE INDEX ix_turns_text_tsv ON turns USING gin (to_tsvector('simple'::regconfig, text))"
    " WHERE settled",
    "CREATE INDEX ix_turns_text_trgm ON turns USING gin (text gin_trgm_ops) WHERE settled",
    "CREATE INDEX ix_turns_unsettled ON turns (id) WHERE NOT settled",
]
POSTGRES_DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_turns_unsettled",
    "DROP INDEX IF EXISTS ix_turns_text_tsv",
    "DROP INDEX IF EXISTS ix_turns_text_trgm",
    "CREATE INDEX ix_turns_text_tsv ON turns USING gin (to_tsvector('simple'::regconfig, text))",
    "CREATE INDEX ix_turns_text_trgm ON turns USING gin (text gin_trgm_ops)",
]


def upgrade() -> None:
    op.add_column("turns", sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(BACKFILL)
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_DOWNGRADE:
            op.execute(statement)
        op.drop_column("turns", "settled")
    else:
        # Not batch mode: rebuilding the table would take the FTS5 triggers and the bi_* views
        # with it. SQLite (3.35 and later) drops a column that nothing indexes in place.
        op.execute("ALTER TABLE turns DROP COLUMN settled")
