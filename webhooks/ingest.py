"""Group commit for the receiver: many concurrent requests, one INSERT and one COMMIT.

Each request hands its verified callback to a writer thread and awaits a future. A writer takes
whatever has queued up (up to ``ingest_batch_max``), stores it in one statement, commits, and
resolves every future at once; the request then answers. With N requests in flight the database
sees about one commit per N callbacks instead of N commits, which is what lets a durable insert
per request keep pace with a bare endpoint.

Enqueueing work for the Celery workers happens after the commit and off the request path, in
one enqueuer thread that coalesces: the streams made dirty since its last publish go out in a
single drain message. If the broker is down the callbacks are still stored and acknowledged;
the sweeper re-enqueues them once it is back.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.db import utcnow
from worker.inbox import NewCallback, Outcome, StreamKey, store_batch

log = structlog.get_logger(__name__)

_STOP = object()


class StorageUnavailable(Exception):
    """The database did not take the callback: answer 503 so that ZEGO retries."""


class InboxWriter:
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

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=5)

    async def submit(self, item: NewCallback) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put((item, future, loop))
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise StorageUnavailable("timed out waiting for the database") from None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
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
            self._write(batch)

    def _write(self, batch: list[tuple[NewCallback, asyncio.Future[Outcome], Any]]) -> None:
        items = [item for item, _, _ in batch]
        try:
            with self._engine.begin() as connection:
                outcomes: list[Outcome] | Exception = store_batch(connection, items, received_at=utcnow())
        except SQLAlchemyError as exc:
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
            stored = {
                (item.callback.app_id, item.callback.agent_instance_id)
                for item, outcome in zip(items, outcomes, strict=True)
                if outcome == "stored"
            }
            if stored:
                self._on_stored(stored)


def _resolve(results: list[tuple[asyncio.Future[Outcome], Outcome | Exception]]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


class Enqueuer:
    """Publishes one drain message for all streams made dirty since the last one."""

    def __init__(self, publish: Callable[[list[StreamKey]], bool], *, chunk: int = 100) -> None:
        self._publish = publish
        self._chunk = chunk
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
            for start in range(0, len(streams), self._chunk):
                chunk = streams[start : start + self._chunk]
                if failed or not self._publish(chunk):
                    failed.extend(chunk)
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
