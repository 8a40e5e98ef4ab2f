"""Job leases on the real databases: one run at a time, a crashed run's lease expires."""

from __future__ import annotations

import datetime as dt
import threading
import time

from sqlalchemy import Engine, select

from worker.db import make_sessionmaker, session_scope, utcnow
from worker.jobs import leases as locks
from worker.models import JobLock


def test_a_held_lease_is_refused_until_it_expires_then_taken_over(clean_engine: Engine) -> None:
    """A second run is turned away while the first holds the job; a crashed holder's lease lapses."""
    factory = make_sessionmaker(clean_engine)
    now = utcnow()
    with session_scope(factory) as db:
        assert locks.acquire(db, "reconcile", "first", ttl=60, now=now)
    with session_scope(factory) as db:
        assert not locks.acquire(db, "reconcile", "second", ttl=60, now=now + dt.timedelta(seconds=59))
        assert locks.acquire(db, "other-job", "second", ttl=60, now=now)  # other jobs are unaffected
    with session_scope(factory) as db:
        assert locks.acquire(db, "reconcile", "second", ttl=60, now=now + dt.timedelta(seconds=61))
    with session_scope(factory) as db:
        # The first run, back late, cannot free the lease the second run now holds.
        assert not locks.release(db, "reconcile", "first")
        assert db.scalar(select(JobLock.holder).where(JobLock.name == "reconcile")) == "second"
        assert locks.release(db, "reconcile", "second")
    with session_scope(factory) as db:
        assert locks.acquire(db, "reconcile", "third", ttl=60, now=now + dt.timedelta(seconds=62))


def test_held_runs_the_body_once_and_frees_the_job_afterwards(clean_engine: Engine) -> None:
    """Inside a run the same job is refused; once it is over the next run goes ahead."""
    factory = make_sessionmaker(clean_engine)
    with locks.held(factory, "recycle-idle", ttl=60) as outer:
        assert outer
        with locks.held(factory, "recycle-idle", ttl=60) as inner:
            assert not inner
    with locks.held(factory, "recycle-idle", ttl=60) as again:
        assert again
    with session_scope(factory) as db:
        assert db.scalars(select(JobLock)).all() == []


def test_a_lease_is_released_when_the_job_fails(clean_engine: Engine) -> None:
    """A run that raises does not keep the job locked until its TTL."""
    factory = make_sessionmaker(clean_engine)
    try:
        with locks.held(factory, "start-queued", ttl=600) as mine:
            assert mine
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with locks.held(factory, "start-queued", ttl=600) as mine:
        assert mine


def test_racing_runs_never_overlap(clean_engine: Engine) -> None:
    """Eight workers firing one job at once: at most one is inside at any moment, and one ran."""
    factory = make_sessionmaker(clean_engine)
    inside, most, ran = 0, 0, 0
    guard = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        nonlocal inside, most, ran
        start.wait()
        with locks.held(factory, "sweep", ttl=60) as mine:
            if not mine:
                return
            with guard:
                inside += 1
                ran += 1
                most = max(most, inside)
            time.sleep(0.2)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1 and ran >= 1


def test_a_long_run_keeps_its_lease_past_the_ttl_and_a_dead_one_loses_it(clean_engine: Engine) -> None:
    """A run longer than the TTL is not overtaken while it lives; a holder that stops renewing
    (a worker killed with SIGKILL) frees the job within the TTL, not after its longest run."""
    factory = make_sessionmaker(clean_engine)
    with locks.held(factory, "outbound-fanout", ttl=0.6) as mine:
        assert mine
        time.sleep(1.5)  # two and a half TTLs: renewed meanwhile
        with session_scope(factory) as db:
            assert not locks.acquire(db, "outbound-fanout", "rival", ttl=0.6, now=utcnow())
    # A holder that took the lease and died (no renewal thread, no release).
    with session_scope(factory) as db:
        assert locks.acquire(db, "sweep-inbox", "killed", ttl=0.6, now=utcnow())
    time.sleep(0.8)
    with locks.held(factory, "sweep-inbox", ttl=0.6) as mine:
        assert mine
