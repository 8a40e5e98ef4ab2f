"""Group commit for the receiver: many concurrent requests, one INSERT and one COMMIT.

Each request hands its verified callback to a writer and awaits a future. A writer takes
whatever has queued up (up to ``ingest_batch_max``), stores it in one statement, commits, and
resolves every future at once; the request then answers. With N requests in flight the database
sees about one commit per N callbacks instead of N commits. On Postgres the writers are
coroutines on the event loop (``PostgresInboxWriter``); on SQLite, threads around SQLAlchemy
(``InboxWriter``), since SQLite has one writer at a time anyway.

Enqueueing work for the Celery workers happens after the commit and off the request path, in
one enqueuer thread that coalesces: the streams made dirty since its last publish go out in a
single drain message. If the broker is down the callbacks are still stored and acknowledged;
the sweeper re-enqueues them once it is back.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from worker.db import utcnow
from worker.inbox.store import (
    POSTGRES_INSERT,
    POSTGRES_STORED_BODIES,
    POSTGRES_STORED_PAYLOADS,
    NewCallback,
    Outcome,
    PreparedBatch,
    StreamKey,
    conflict_row,
    conflicting,
    postgres_insert_params,
    store_batch,
)
from worker.inbox.wakeups import Wakeups
from worker.models import InboxState

log = structlog.get_logger(__name__)

_STOP = object()


class StorageUnavailable(Exception):
    """The database did not take the callback: answer 503 so that ZEGO retries."""


class InboxWriter:
    """The writer for SQLite (and any SQLAlchemy database): threads around a sync connection."""

    def __init__(
        self,
        engine: Engine,
        *,
        writers: int,
        batch_max: int,
        timeout: float,
        on_stored: Callable[[set[StreamKey]], None],
    ) -> None:
        self._engine = engine
        self._batch_max = batch_max
        self._timeout = timeout
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"inbox-writer-{i}", daemon=True) for i in range(writers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5)

    def queued(self) -> int:
        """Callbacks waiting for the writer thread: none unless the database is slower than the load."""
        return self._queue.qsize()

    async def submit(self, item: NewCallback) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put((item, future, loop))
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise StorageUnavailable("timed out waiting for the database") from None

    def _run(self) -> None:
        # One connection per writer for its whole life: no pool checkout or pre-ping per batch.
        connection: Connection | None = None
        while True:
            first = self._queue.get()
            if first is _STOP:
                if connection is not None:
                    connection.close()
                return
            batch = [first]
            while len(batch) < self._batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
            connection = self._write(connection, batch)

    def _write(
        self, connection: Connection | None, batch: list[tuple[NewCallback, asyncio.Future[Outcome], Any]]
    ) -> Connection | None:
        """Store and commit one batch, answer its requests; returns the connection to keep using."""
        items = [item for item, _, _ in batch]
        reused = connection is not None
        try:
            if connection is None:
                connection = self._engine.connect()
            with connection.begin():
                outcomes: list[Outcome] | Exception = store_batch(connection, items, received_at=utcnow())
        except Exception as exc:  # the writer must outlive any one batch
            if connection is not None:
                connection.invalidate()
                connection.close()
                connection = None
            if reused and isinstance(exc, OperationalError):
                return self._write(None, batch)  # died while idle: one more try, fresh
            if len(batch) > 1 and not isinstance(exc, OperationalError):
                # Not the database going away but something in the data: store the rest.
                for one in batch:
                    connection = self._write(connection, [one])
                return connection
            log.error(
                "inbox_store_failed",
                callbacks=len(batch),
                error=type(exc).__name__,
                detail=str(exc).splitlines()[0][:300],
            )
            outcomes = StorageUnavailable("database unavailable")
        by_loop: dict[Any, list[tuple[asyncio.Future[Outcome], Outcome | Exception]]] = {}
        for index, (_, future, loop) in enumerate(batch):
            result = outcomes if isinstance(outcomes, Exception) else outcomes[index]
            by_loop.setdefault(loop, []).append((future, result))
        for loop, results in by_loop.items():
            loop.call_soon_threadsafe(_resolve, results)
        if not isinstance(outcomes, Exception):
            stored = stored_streams(items, outcomes)
            if stored:
                self._on_stored(stored)
        return connection


def _resolve(results: list[tuple[asyncio.Future[Outcome], Outcome | Exception]]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


class PostgresInboxWriter:
    """The writer for Postgres: psycopg's async connections in the event loop itself.

    No threads means no handing each request to another thread and back, and no contention for
    the GIL between the event loop and the writers: on two cores that handoff, not the database,
    was what capped the threaded writer.

    A request waits at most ``timeout`` for its batch's commit. One watchdog task enforces that
    for every waiting request (deadlines in submission order, so it looks at the oldest only),
    instead of an ``asyncio.timeout`` per request: a timer armed and cancelled per callback was
    a few microseconds of event-loop work on the receiver's hottest path.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        writers: int,
        batch_max: int,
        timeout: float,
        on_stored: Callable[[set[StreamKey]], None],
    ) -> None:
        self._conninfo = conninfo
        self._writers = writers
        self._batch_max = batch_max
        self._timeout = timeout
        self._on_stored = on_stored
        # Callbacks waiting for a writer, and the writers waiting for callbacks (a future each):
        # a deque and a wake-up, not an asyncio.Queue, whose bookkeeping per item (unfinished-task
        # count, an Event cleared, putters woken) is paid by every request.
        self._pending: collections.deque[tuple[NewCallback, asyncio.Future[Outcome]]] = collections.deque()
        self._idle: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        # (deadline, future) of every request still waiting, oldest first: ``_watch`` fails the
        # ones past their deadline. Answered ones leave it when they reach the front.
        self._waiting: collections.deque[tuple[float, asyncio.Future[Outcome]]] = collections.deque()
        self._tick = min(0.25, timeout / 4)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"inbox-writer-{i}") for i in range(self._writers)
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name="inbox-writer-watchdog"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._waiting:  # none, once the server has drained its requests; never left hanging
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(StorageUnavailable("the receiver is stopping"))

    def queued(self) -> int:
        """Callbacks waiting for a writer: none unless the database is slower than the load."""
        return len(self._pending)

    async def submit(self, item: NewCallback) -> Outcome:
        """The callback's outcome once its batch is committed; StorageUnavailable if that takes
        longer than ``timeout`` (set by ``_watch``) or the database fails."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._waiting.append((time.monotonic() + self._timeout, future))
        while self._idle:
            idle = self._idle.pop()
            if not idle.done():
                idle.set_result(None)
                break
        return await future

    async def _watch(self) -> None:
        waiting = self._waiting
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
                _, future = waiting.popleft()
                if not future.done():
                    future.set_exception(StorageUnavailable("timed out waiting for the database"))

    async def _run(self) -> None:
        connection: psycopg.AsyncConnection[Any] | None = None
        pending = self._pending
        try:
            while True:
                while not pending:
                    wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    self._idle.append(wake)
                    try:
                        await wake
                    except asyncio.CancelledError:
                        if wake in self._idle:  # stopping: no longer a writer to wake
                            self._idle.remove(wake)
                        raise
                take = min(len(pending), self._batch_max)
                batch = [pending.popleft() for _ in range(take)]
                connection = await self._write(connection, batch)
        finally:
            if connection is not None:
                await connection.close()

    async def _write(
        self,
        connection: psycopg.AsyncConnection[Any] | None,
        batch: list[tuple[NewCallback, asyncio.Future[Outcome]]],
    ) -> psycopg.AsyncConnection[Any] | None:
        items = [item for item, _ in batch]
        reused = connection is not None
        try:
            if connection is None:
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5
                )
            received_at = utcnow()
            prepared = PreparedBatch.of(items, received_at)
            # One statement in autocommit: durable when it returns, and one round trip a batch.
            cursor = await connection.execute(
                POSTGRES_INSERT, postgres_insert_params(prepared.rows, received_at)
            )
            inserted = {key for (key,) in await cursor.fetchall()}
            conflicts = prepared.conflicts(inserted)
            hashes: dict[str, str] = {}
            if conflicts:
                signatures = [item.callback.signature for item in conflicts]
                cursor = await connection.execute(POSTGRES_STORED_BODIES, {"signatures": signatures})
                hashes = {signature: body for signature, body in await cursor.fetchall()}
            outcomes = prepared.outcomes(inserted, hashes)
            candidates = prepared.duplicates(outcomes)
            if candidates:
                keys = list({items[i].callback.dedup_key for i in candidates})
                cursor = await connection.execute(POSTGRES_STORED_PAYLOADS, {"keys": keys})
                clashes = conflicting(items, candidates, dict(await cursor.fetchall()))
                if clashes:
                    rows = [conflict_row(items[i], received_at) for i in clashes]
                    await connection.execute(
                        POSTGRES_INSERT, postgres_insert_params(rows, received_at, InboxState.CONFLICT)
                    )
                    for index in clashes:
                        outcomes[index] = "conflict"
        except Exception as exc:  # the writer must outlive any one batch
            if reused and isinstance(exc, psycopg.OperationalError):
                # A connection that died while idle (a database restart, a failover): one more
                # try on a fresh one before telling ZEGO to come back later.
                assert connection is not None
                await connection.close()
                return await self._write(None, batch)
            if len(batch) > 1 and not isinstance(exc, psycopg.OperationalError | OSError):
                # Not the database going away but something in the data: store the rest.
                for one in batch:
                    connection = await self._write(connection, [one])
                return connection
            log.error(
                "inbox_store_failed",
                callbacks=len(batch),
                error=type(exc).__name__,
                detail=str(exc).splitlines()[0][:300] if str(exc) else "",
            )
            if connection is not None:
                await connection.close()
            for _, future in batch:
                if not future.done():
                    future.set_exception(StorageUnavailable("database unavailable"))
            return None
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)
        stored = stored_streams(items, outcomes)
        if stored:
            self._on_stored(stored)
        return connection


def stored_streams(items: list[NewCallback], outcomes: list[Outcome]) -> set[StreamKey]:
    """The streams that got a new callback in a batch: what the enqueuer must wake a worker for."""
    return {
        (item.callback.app_id, item.callback.agent_instance_id)
        for item, outcome in zip(items, outcomes, strict=True)
        if outcome == "stored"
    }


def postgres_conninfo(database_url: str) -> str:
    """The libpq URI for a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Enqueuer:
    """Publishes one drain message for all streams made dirty since the last one, leaving out
    the streams whose message is still on its way or being worked (``worker.inbox.wakeups``)."""

    def __init__(
        self,
        publish: Callable[[list[StreamKey]], bool],
        *,
        marks: Wakeups | None = None,
        chunk: int = 200,
        interval: float = 0.05,
    ) -> None:
        self._publish = publish
        self._marks = marks or Wakeups(None)
        self._chunk = chunk
        self._interval = interval
        self._dirty: set[StreamKey] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="enqueuer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def mark(self, streams: set[StreamKey]) -> None:
        with self._cond:
            self._dirty |= streams
            self._cond.notify()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._dirty and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._dirty:
                    return
                streams, self._dirty = list(self._dirty), set()
            failed: list[StreamKey] = []
            # Marked first, chunked after: a message names only streams that need one, so each
            # carries up to ``chunk`` of them however many are marked already.
            wanted = self._marks.claim(streams)
            for start in range(0, len(wanted), self._chunk):
                chunk = wanted[start : start + self._chunk]
                if failed or not self._publish(chunk):
                    failed.extend(chunk)
            if failed:
                self._marks.unclaim(failed)  # not on their way: claimed again on the next try
            if failed:
                # The rows are stored; keep trying a while, and the sweeper covers the rest.
                backoff = min(max(backoff * 2, 0.5), 5.0)
                with self._cond:
                    if len(self._dirty) < 100_000:
                        self._dirty.update(failed)
                    if self._stopping:
                        return
                time.sleep(backoff)
            else:
                backoff = 0.0
                # A publish costs about a millisecond of CPU in Celery: gather streams for a
                # moment, so that a busy receiver sends a few messages a second per stream set,
                # not one per commit.
                time.sleep(self._interval)
