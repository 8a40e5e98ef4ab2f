"""Alembic environment: the database is ROOMWARDEN_DATABASE_URL unless a caller hands over a connection."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from worker.db import Base, make_engine
from worker.models import __all__ as _models  # noqa: F401 - registers every table
from worker.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# Database objects the migrations make that the models cannot describe (expression and operator
# class indexes, FTS5 tables and their shadow tables, views): ``alembic check`` must not ask to
# drop them. Tables by name or prefix, indexes by name.
UNMODELLED_TABLE_PREFIXES = ("turns_fts",)
UNMODELLED_INDEXES = frozenset(
    {
        "ix_turns_text_tsv",
        "ix_turns_text_trgm",
        "ix_turns_unsettled",
        # 0010: the session list's sorts and filters (expressions, partial), lookups by instance id.
        "ix_sessions_start",
        "ix_sessions_duration",
        "ix_sessions_duration_asc",
        "ix_turns_interrupted",
        "ix_agent_instances_agent_instance_id",
        "ix_agent_instances_live",
        # 0012: the word index on the stored vector, CJK bigrams (an expression on a function).
        "ix_turns_text_bigrams",
    }
)
# Generated columns on Postgres only (0012), as (table, column).
UNMODELLED_COLUMNS = frozenset({("turns", "text_tsv"), ("rounds", "response_ms")})


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave unmodelled objects out of the comparison, before they are even reflected."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(UNMODELLED_TABLE_PREFIXES)
    if type_ == "index":
        return name not in UNMODELLED_INDEXES
    if type_ == "column" and isinstance(parent_names, dict):
        return (parent_names.get("table_name"), name) not in UNMODELLED_COLUMNS
    return True


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations()
