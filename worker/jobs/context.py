"""The job context: what every task needs, built once per worker process and handed down.

A task takes ids from its message, asks for :func:`current`, and passes the context to one domain
function. The context holds the settings, the database session factory, the vendor clients (their
connections and rate limiter are reused across tasks), the sealer for stored credentials and the
policy book. A Celery worker builds it when each pool process starts (``worker_process_init``,
after the fork, so no connection crosses it); anything else that runs tasks in-process (a test,
``roomwarden`` commands) either lets the first :func:`current` build it from the environment or
installs its own with :func:`installed`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.db import sessions_for
from worker.policies.config import PolicyBook, book_for
from worker.sealing import Sealer
from worker.settings import Settings, get_settings
from worker.vendors.clients import Vendors


@dataclass
class JobContext:
    settings: Settings
    sessions: sessionmaker[DbSession]
    vendors: Vendors
    sealer: Sealer | None
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobContext:
        key = settings.secret_key
        return cls(
            settings=settings,
            sessions=sessions_for(settings.database_url),
            vendors=Vendors(settings),
            sealer=Sealer(key.get_secret_value()) if key is not None else None,
        )

    @property
    def book(self) -> PolicyBook:
        """The policy file, parsed once per process (a change takes a restart)."""
        return book_for(self.settings.policies_file)

    def close(self) -> None:
        self.vendors.close()


_current: JobContext | None = None
_lock = threading.Lock()


def current() -> JobContext:
    """This process's context; built from the environment's settings on first use."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():  # never reuse a parent's after a fork
            _current = JobContext.from_settings(get_settings())
        return _current


def install(context: JobContext | None) -> JobContext | None:
    """Make ``context`` this process's (None: build afresh on next use); returns the one it replaced."""
    global _current
    with _lock:
        previous, _current = _current, context
    return previous


@contextmanager
def installed(context: JobContext) -> Iterator[JobContext]:
    """Run tasks in-process against ``context`` (a test's settings), then put the old one back."""
    previous = install(context)
    try:
        yield context
    finally:
        install(previous)
