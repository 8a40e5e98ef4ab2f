"""Reads on behalf of people (the API, the page): deferred, on a time budget, cancellable.

On SQLite every transaction used to open with ``BEGIN IMMEDIATE``, so one slow search held the
database's only write lock for as long as it ran, after its client had gone too, and callbacks
waited, then got 503. A read here:

- opens a deferred transaction (execution option ``sqlite_read_only``, see worker/db.py): in WAL
  mode it takes no write lock, and readers and the one writer go side by side;
- has a time budget per statement: SQLite's progress handler aborts a statement past the
  deadline, Postgres has ``SET LOCAL statement_timeout``;
- can be cancelled from another thread when the client goes away: ``sqlite3.Connection.interrupt``
  and psycopg's ``Connection.cancel_safe`` stop the statement where it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

# SQLite calls the progress handler every this many virtual machine instructions: often enough
# to stop within a millisecond or so, rarely enough to cost nothing measurable.
_PROGRESS_STEPS = 1000
_POSTGRES_CANCELED = "57014"  # query_canceled: statement_timeout and cancel requests alike


class ReadTimeout(Exception):
    """The read ran past its budget and was stopped."""


class ReadCancelled(Exception):
    """The read was stopped because nobody waits for it any more."""


class ReadHandle:
    """Lets another thread stop the read: ``cancel()`` is safe to call at any time, even before
    the read has a connection or after it ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw: Any = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            raw = self._raw
        if raw is None:
            return
        if hasattr(raw, "interrupt"):  # sqlite3
            raw.interrupt()
        else:  # psycopg: a cancel request on a connection of its own
            raw.cancel_safe(timeout=5)

    def _attach(self, raw: Any) -> None:
        with self._lock:
            self._raw = raw
        if self.cancelled:
            self.cancel()

    def _detach(self) -> None:
        with self._lock:
            self._raw = None


@contextmanager
def budgeted(
    factory: sessionmaker[DbSession], timeout_seconds: float, handle: ReadHandle | None = None
) -> Iterator[DbSession]:
    """A session for one read: deferred on SQLite, each statement within ``timeout_seconds``.

    Raises ``ReadTimeout`` or ``ReadCancelled`` (``handle.cancel()``) in place of the driver's
    error. Never commits: whatever the body does is rolled back.
    """
    handle = handle or ReadHandle()
    db = factory()
    raw: Any = None
    sqlite = False
    try:
        connection = db.connection(execution_options={"sqlite_read_only": True})
        raw = connection.connection.dbapi_connection
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            deadline = time.monotonic() + timeout_seconds
            raw.set_progress_handler(
                lambda: 1 if handle.cancelled or time.monotonic() > deadline else 0, _PROGRESS_STEPS
            )
        else:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout_seconds * 1000))}")
        handle._attach(raw)
        yield db
    except DBAPIError as exc:
        if _stopped(exc, sqlite):
            if handle.cancelled:
                raise ReadCancelled from None
            raise ReadTimeout(f"the read took longer than {timeout_seconds:g} s") from None
        raise
    finally:
        handle._detach()
        if sqlite and raw is not None:
            raw.set_progress_handler(None, 0)  # the pooled connection goes on to serve writers
        db.rollback()
        db.close()


def _stopped(exc: DBAPIError, sqlite: bool) -> bool:
    if sqlite:
        return "interrupted" in str(exc.orig)
    return getattr(exc.orig, "sqlstate", None) == _POSTGRES_CANCELED
