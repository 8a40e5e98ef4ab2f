"""Which workers are running, wherever they run: a row each in ``job_locks``, renewed while alive.

``roomwarden rebuild`` wipes derived state and applies the inbox again; a worker draining at the
same time would apply callbacks on top of the wipe. Celery's remote-control ping does not work on
every broker (not on the embedded SQLite one) and says nothing of workers that are only starting,
so each worker's main process keeps a short lease named ``worker:<node>`` instead: renewed every
few seconds, given back when it stops, expired a little after it was killed.
"""

from __future__ import annotations

import datetime as dt
import threading

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from worker.db import dialect_insert, make_engine, make_sessionmaker, session_scope, utcnow
from worker.models import JobLock

log = structlog.get_logger(__name__)

PREFIX = "worker:"
EVERY_SECONDS = 5.0
# Three missed renewals: a worker killed with -9 holds up a rebuild this long at most.
TTL_SECONDS = 15.0


def renew(db: DbSession, node: str, *, now: dt.datetime, ttl: float = TTL_SECONDS) -> None:
    insert = dialect_insert(JobLock, db.get_bind().dialect.name)
    # job_locks columns are 64 characters: a long host name is cut, still unique enough to read.
    values = {
        "name": (PREFIX + node)[:64],
        "holder": node[:64],
        "expires_at": now + dt.timedelta(seconds=ttl),
    }
    db.execute(
        insert.values(**values).on_conflict_do_update(
            index_elements=[JobLock.name], set_={"expires_at": insert.excluded.expires_at}
        )
    )


def leave(db: DbSession, node: str) -> None:
    db.execute(delete(JobLock).where(JobLock.name == (PREFIX + node)[:64]))


def live(db: DbSession, *, now: dt.datetime) -> list[str]:
    """The workers that renewed their presence recently, by node name."""
    query = select(JobLock.holder).where(JobLock.name.startswith(PREFIX), JobLock.expires_at >= now)
    return sorted(db.scalars(query))


class Heartbeat:
    """A daemon thread in a worker's main process. Its engine keeps no connection between beats:
    the pool's children are forked from this process and must not share a socket with it."""

    def __init__(self, database_url: str, node: str) -> None:
        self.node = node
        self._engine = make_engine(database_url)
        self._factory = make_sessionmaker(self._engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roomwarden-presence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with session_scope(self._factory) as db:
                    renew(db, self.node, now=utcnow())
            except Exception as exc:  # the database away: the next beat tries again
                log.warning("worker_presence_unrecorded", error=type(exc).__name__)
            finally:
                self._engine.dispose()
            self._stop.wait(EVERY_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=EVERY_SECONDS)
        try:
            with session_scope(self._factory) as db:
                leave(db, self.node)
        except Exception as exc:
            log.warning("worker_presence_not_withdrawn", error=type(exc).__name__)
        finally:
            self._engine.dispose()
