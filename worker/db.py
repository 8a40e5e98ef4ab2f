"""Engine, session scope, and the declarative base shared by every model.

SQLite is the embedded default, so the engine puts it in WAL mode with a busy timeout (the
receiver and a worker share the file) and opens every transaction with ``BEGIN IMMEDIATE``:
SQLite has no ``SELECT ... FOR UPDATE``, and taking the write lock up front is what serialises
two workers applying callbacks of the same session there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Engine,
    MetaData,
    any_,
    bindparam,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that always comes back timezone-aware in UTC, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """A time as the API and events show it (ISO 8601), None staying None."""
    return value.isoformat() if value is not None else None


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def private_sqlite_file(url: str) -> None:
    """Create the SQLite file of ``url`` (a database or the broker's) readable by its owner only.

    The embedded database holds transcripts, user ids and sealed specs; sqlite3 would create it
    with the process umask (0644 as a rule). Made here first, with 0600, it never exists readable
    by others, and SQLite gives its -wal and -shm files the database file's permissions. A file
    left by an older release is narrowed to 0600 as well.
    """
    if "sqlite" not in url.split(":", 1)[0]:
        return
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    file = Path(path)
    if not file.parent.exists():
        file.parent.mkdir(mode=0o700, parents=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for existing in (file, Path(f"{file}-wal"), Path(f"{file}-shm"), Path(f"{file}-journal")):
        if existing.exists() and existing.stat().st_mode & 0o077:
            existing.chmod(0o600)


def make_engine(url: str, **kwargs: Any) -> Engine:
    # sqlalchemy.create_engine looked up at each call: worker/tracing.py may have wrapped it since.
    # Errors must not carry the statement's values into logs and inbox.last_error: they are
    # callback contents (transcript text, user ids), and a batch error quotes other callbacks'.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = sqlalchemy.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return sqlalchemy.create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten content is zeroed in the file, not left in free space: an
        # erasure or retention must not leave the words in the database's bytes (docs/erasure.md).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Long readers (exports) ask for a deferred BEGIN: in WAL mode it takes no write lock,
        # so the receiver and workers go on writing meanwhile.
        if connection.get_execution_options().get("sqlite_read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error. Callers own this, not domain code."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def id_in(
    column: ColumnElement[int] | InstrumentedAttribute[int], ids: list[int], dialect_name: str
) -> ColumnElement[bool]:
    """``column IN ids``, as ``= ANY(array)`` on Postgres: one short statement for any number of
    ids, which psycopg can cache, where a 500-placeholder IN list is parsed again every time."""
    if dialect_name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=postgresql.ARRAY(BigInteger)))
    return column.in_(ids)


def dialect_insert(model: type[Base], dialect_name: str) -> postgresql.Insert | sqlite.Insert:
    """The INSERT that speaks ``ON CONFLICT`` for whichever of our two databases is in use."""
    return postgresql.insert(model) if dialect_name == "postgresql" else sqlite.insert(model)


def insert_ignoring_conflicts(model: type[Base], dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING``."""
    return dialect_insert(model, dialect_name).on_conflict_do_nothing()


_FACTORIES: dict[tuple[int, str], sessionmaker[Session]] = {}


def sessions_for(url: str) -> sessionmaker[Session]:
    """The process's session factory for ``url``, made on first use (after any fork, never before)."""
    key = (os.getpid(), url)
    factory = _FACTORIES.get(key)
    if factory is None:
        factory = _FACTORIES[key] = make_sessionmaker(make_engine(url))
    return factory


def describe_failure(exc: BaseException) -> str:
    """What an operator may read about a failure (logs, ``inbox.last_error``): never the values.

    A database error's text quotes the statement's values (transcript text, user and room ids,
    those of other callbacks in the batch too), so it is named by its class and SQLSTATE only.
    Other libraries' messages may quote data too (``Invalid isoformat string: '...'``): class
    only. Our own errors' messages name fields, not their contents, and are kept.
    """
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
        return f"{type(exc).__name__} ({type(orig).__name__}{f', {state}' if state else ''})"
    if type(exc).__module__.split(".")[0] not in _OURS:
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:500]


_OURS = frozenset({"worker", "webhooks", "roomwarden", "emulator"})
