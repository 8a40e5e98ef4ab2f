"""Leases on periodic jobs, so that no two runs of one job ever overlap.

Beats send each job once a round (``worker/schedule.py``), but a run can outlast its interval
(a slow vendor, a long scan), a worker can pick up a delayed message while the next one is
already running, and an operator can fire a job by hand. Each of those would scan the same
sessions twice over, so the scheduled tasks run inside ``held(...)``: the first to take the
lease runs, the others skip.

The lease is a row in ``job_locks`` with a holder token and an expiry. Taking it is one
statement, ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE expires_at < now RETURNING``,
which Postgres and SQLite (3.35+) both speak: it inserts a free lease, takes over an expired one,
and returns nothing when someone else holds it. Releasing deletes the row only if it is still
ours, so a run that overran its TTL (and lost the lease to a newer run) cannot free the newer
run's lease. A crashed holder never releases: its lease simply expires. So that a ``kill -9``
blocks a job for seconds rather than for its longest possible run, ``held`` keeps the lease short
(``LEASE_SECONDS``) and renews it from a thread while the body runs: a live run of any length
keeps it, a dead one loses it within ``LEASE_SECONDS`` (the chaos suite killed a worker during
the outbound fan-out, and every delivery then waited out the old 60 s TTL).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.db import dialect_insert, session_scope, utcnow
from worker.models import JobLock

log = structlog.get_logger(__name__)

# How long a crashed run keeps its job from running; a live run renews every third of it.
LEASE_SECONDS = 15.0


def new_holder() -> str:
    """A token naming this run: the pid helps an operator reading ``job_locks``, the uuid is unique."""
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def acquire(db: DbSession, name: str, holder: str, *, ttl: float, now: dt.datetime) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds if it is free or expired; True when taken."""
    insert = dialect_insert(JobLock, db.get_bind().dialect.name)
    values = {"name": name, "holder": holder, "expires_at": now + dt.timedelta(seconds=ttl)}
    statement = (
        insert.values(**values)
        .on_conflict_do_update(
            index_elements=[JobLock.name],
            set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
            where=JobLock.expires_at < now,
        )
        .returning(JobLock.holder)
    )
    return db.scalar(statement) == holder


def release(db: DbSession, name: str, holder: str) -> bool:
    """Give the lease back; False when it had expired and another run has it now."""
    result = db.execute(delete(JobLock).where(JobLock.name == name, JobLock.holder == holder))
    return bool(getattr(result, "rowcount", 0))


def renew(db: DbSession, name: str, holder: str, *, ttl: float, now: dt.datetime) -> bool:
    """Push our lease's expiry to ``now + ttl``; False when it is no longer ours."""
    result = db.execute(
        update(JobLock)
        .where(JobLock.name == name, JobLock.holder == holder)
        .values(expires_at=now + dt.timedelta(seconds=ttl))
    )
    return bool(getattr(result, "rowcount", 0))


class _Renewal(threading.Thread):
    """Renews one lease every ``ttl / 3`` seconds until stopped, in its own transactions."""

    def __init__(self, factory: sessionmaker[DbSession], name: str, holder: str, ttl: float) -> None:
        super().__init__(name=f"lease-{name}", daemon=True)
        self.factory, self.lease, self.holder, self.ttl = factory, name, holder, ttl
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.ttl / 3):
            try:
                with session_scope(self.factory) as db:
                    if not renew(db, self.lease, self.holder, ttl=self.ttl, now=utcnow()):
                        log.warning("job_lock_lost", job=self.lease, ttl=self.ttl)
                        return
            except SQLAlchemyError as exc:  # the database away for a moment: try again next time
                log.warning("job_lock_renew_failed", job=self.lease, error=type(exc).__name__)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


@contextmanager
def held(factory: sessionmaker[DbSession], name: str, ttl: float = LEASE_SECONDS) -> Iterator[bool]:
    """Run the body under the lease ``name``; yields False (run nothing) when another run has it.

    The lease lasts ``ttl`` seconds past the last renewal, renewed while the body runs.

    Taking and giving back the lease are transactions of their own, committed at once, so the
    lease is visible to other processes for the whole run and the body's own transactions are
    not held open by it.
    """
    holder = new_holder()
    with session_scope(factory) as db:
        taken = acquire(db, name, holder, ttl=ttl, now=utcnow())
    if not taken:
        log.info("job_skipped_lock_held", job=name)
        yield False
        return
    renewal = _Renewal(factory, name, holder, ttl)
    renewal.start()
    try:
        yield True
    finally:
        renewal.stop()
        with session_scope(factory) as db:
            if not release(db, name, holder):
                log.warning("job_lock_lost", job=name, ttl=ttl)
