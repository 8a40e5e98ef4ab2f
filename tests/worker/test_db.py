"""The embedded database's files: private to their owner from the first byte."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from worker.db import make_engine, private_sqlite_file


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems give (0022): files made without care come out world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_are_readable_by_their_owner_only(
    tmp_path: Path, usual_umask: None
) -> None:
    """Transcripts and user ids live in these files: nobody else on the machine may read them."""
    database = tmp_path / "var" / "roomwarden.sqlite3"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE said (text TEXT)"))
        conn.execute(text("INSERT INTO said VALUES ('a secret')"))
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(database.parent) == 0o700
    engine.dispose()


def test_the_broker_file_and_an_older_world_readable_database_are_made_private(
    tmp_path: Path, usual_umask: None
) -> None:
    broker = tmp_path / "broker.sqlite3"
    private_sqlite_file(f"sqla+sqlite:///{broker}")
    assert mode(broker) == 0o600
    older = tmp_path / "older.sqlite3"
    older.write_bytes(b"")
    older.chmod(0o644)
    private_sqlite_file(f"sqlite:///{older}")
    assert mode(older) == 0o600


def test_memory_and_server_urls_touch_no_file(tmp_path: Path) -> None:
    private_sqlite_file("sqlite:///:memory:")
    private_sqlite_file("postgresql+psycopg://postgres@127.0.0.1/x")
    assert list(tmp_path.iterdir()) == []
