"""Reads on a budget: they never stop callback intake, and they stop when told or when too slow."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from tests.factories import Signer, inbox_rows, ingest
from worker.analysis import reads
from worker.db import make_sessionmaker, session_scope
from worker.models import Session

# Counts to a billion: minutes of work on either database, unless something stops it.
RUNAWAY = text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
    "SELECT count(*) FROM c"
)
LONGER_THAN_THE_BUDGET = text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c"
)


@pytest.fixture
def factory(clean_engine: Engine) -> sessionmaker[DbSession]:
    return make_sessionmaker(clean_engine)


def test_callbacks_are_stored_while_a_read_is_open(factory: sessionmaker[DbSession], signer: Signer) -> None:
    """A read holds its transaction open; the receiver stores a callback meanwhile, without waiting
    (on SQLite, WAL lets the one writer go on beside readers once reads take no write lock)."""
    stored = threading.Event()

    def write() -> None:
        with session_scope(factory) as db:
            ingest(db, [signer.callback("ASRResult")])
        stored.set()

    with reads.budgeted(factory, timeout_seconds=30) as db:
        db.execute(select(Session)).all()
        writer = threading.Thread(target=write)
        writer.start()
        assert stored.wait(10), "the write waited for the read to end"
    writer.join()
    assert len(inbox_rows(factory.kw["bind"])) == 1


def test_a_runaway_read_is_stopped_at_its_budget(factory: sessionmaker[DbSession]) -> None:
    """A statement that would run for minutes ends with ReadTimeout once its budget is spent."""
    started = time.monotonic()
    with pytest.raises(reads.ReadTimeout), reads.budgeted(factory, timeout_seconds=0.3) as db:
        db.execute(RUNAWAY).scalar()
    assert time.monotonic() - started < 10


def test_a_read_is_stopped_when_its_client_goes_away(factory: sessionmaker[DbSession]) -> None:
    """Cancelling from another thread (the route does, on disconnect) stops the statement where it is."""
    handle = reads.ReadHandle()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with reads.budgeted(factory, timeout_seconds=600, handle=handle) as db:
                db.execute(RUNAWAY).scalar()
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=run)
    reader.start()
    time.sleep(0.5)
    handle.cancel()
    reader.join(10)
    assert not reader.is_alive(), "the read went on after it was cancelled"
    assert len(outcome) == 1 and isinstance(outcome[0], reads.ReadCancelled)


def test_the_connection_serves_writers_normally_after_a_stopped_read(
    factory: sessionmaker[DbSession], signer: Signer
) -> None:
    """The budget belongs to the read: the same pooled connection then runs a long statement unhindered."""
    with pytest.raises(reads.ReadTimeout), reads.budgeted(factory, timeout_seconds=0.05) as db:
        db.execute(RUNAWAY).scalar()
    time.sleep(0.1)
    with session_scope(factory) as db:
        assert db.execute(LONGER_THAN_THE_BUDGET).scalar() == 2_000_000
        ingest(db, [signer.callback("ASRResult")])
