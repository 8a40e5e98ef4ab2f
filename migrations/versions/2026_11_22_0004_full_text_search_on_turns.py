"""full-text search on turns: Postgres tsvector and trigram indexes, SQLite FTS5

Postgres: a GIN index on ``to_tsvector('simple', text)`` for word search (the 'simple'
configuration: no stemming, no stop words, the same for every language), and a pg_trgm GIN index
on ``text`` for substring search (Chinese has no spaces between words, so its "words" are
substrings). SQLite: an FTS5 table over ``turns.text`` with the trigram tokenizer (substrings of
3 characters or more, any language), kept in step by triggers and filled from existing turns.

Neither is in the models (expressions, operator classes, virtual tables): migrations/env.py
keeps them out of ``alembic check``. The pg_trgm extension stays on downgrade: other databases
objects may use it, and it is harmless.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UPGRADE = [
    "CREATE VIRTUAL TABLE turns_fts USING fts5("
    "text, content='turns', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN "
    "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN "
    "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER turns_fts_update AFTER UPDATE OF text ON turns BEGIN "
    "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')",
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER IF EXISTS turns_fts_update",
    "DROP TRIGGER IF EXISTS turns_fts_delete",
    "DROP TRIGGER IF EXISTS turns_fts_insert",
    "DROP TABLE IF EXISTS turns_fts",
]
POSTGRES_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_turns_text_tsv ON turns USING gin (to_tsvector('simple'::regconfig, text))",
    "CREATE INDEX ix_turns_text_trgm ON turns USING gin (text gin_trgm_ops)",
]
POSTGRES_DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_turns_text_trgm",
    "DROP INDEX IF EXISTS ix_turns_text_tsv",
]


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_UPGRADE if sqlite else POSTGRES_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_DOWNGRADE if sqlite else POSTGRES_DOWNGRADE:
        op.execute(statement)
