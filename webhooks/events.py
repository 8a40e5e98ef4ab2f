"""Live events (read scope): the outbox as ``text/event-stream``, resumable with ``Last-Event-ID``.

- ``GET /v1/sessions/{id}/events``: one session's events, from its first unless resuming;
- ``GET /v1/events?type=&app_id=&session_id=``: every event from now on (or since Last-Event-ID).

Each event is ``id: <event id>``, ``event: <type>`` and ``data:`` the same object a webhook
carries. A stream reads the outbox in commit order (worker/events/outbox.py), so a client that
reconnects with the last id it saw misses nothing, whichever host committed the events. On
Postgres every web process LISTENs once and wakes its streams on NOTIFY; the outbox, not the
notification, is the record, so a lost notification costs at most one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
import psycopg
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from webhooks.auth import readable
from webhooks.queries import invalid_query
from webhooks.receiver import error
from worker.analysis import catalog, reads
from worker.events import outbox
from worker.events.outbox import Position, Wanted
from worker.models import OutboxEvent
from worker.sessions import reading as sessions

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 15.0
BATCH = 200


class Waker:
    """Wakes this process's open streams when events may have been committed anywhere."""

    def __init__(self, conninfo: str | None) -> None:
        self._conninfo = conninfo  # None: SQLite, one host; streams poll
        self._changed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.poll_seconds = 2.0 if conninfo else 0.5

    async def wait(self) -> None:
        """Until a notification, or the poll interval (what a lost notification costs)."""
        if self._conninfo and self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), self.poll_seconds)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()  # the next waiters wait for the next notification

    async def _listen(self) -> None:
        assert self._conninfo is not None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {outbox.CHANNEL}")
                    self._wake()  # whatever committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database restarting: streams poll meanwhile
                log.warning("events_listen_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener


def _frame(event: OutboxEvent) -> bytes:
    data = orjson.dumps(outbox.as_message(event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), data)


async def _events(request: Request, wanted: Wanted, since: Position | None) -> AsyncIterator[bytes]:
    state = request.app.state
    waker: Waker = state.waker

    def read(position: Position | None) -> tuple[list[bytes], Position]:
        with reads.budgeted(state.sessions, state.settings.read_timeout_seconds) as db:
            position = position if position is not None else outbox.now_position(db)
            found = outbox.after(db, position, wanted, limit=BATCH)
            if found:
                position = outbox.position(db, found[-1])
            return [_frame(e) for e in found], position

    yield b"retry: 2000\n: connected\n\n"
    position = since
    quiet_since = time.monotonic()
    while True:
        frames, position = await run_in_threadpool(read, position)
        if frames:
            yield b"".join(frames)
            quiet_since = time.monotonic()
            if len(frames) == BATCH:
                continue
        elif time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
            yield b": keepalive\n\n"  # proxies keep the connection; a gone client shows up here
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        await waker.wait()


def _resume_from(request: Request) -> int | None:
    """``Last-Event-ID`` (or ``?last_event_id=`` for clients that cannot set headers)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise catalog.FilterError("last_event_id", "Last-Event-ID must be an event id") from None
    if value < 0 or value >= 2**63:
        raise catalog.FilterError("last_event_id", "Last-Event-ID must be an event id")
    return value


async def _position(request: Request, resume: int | None, default: Position | None) -> Position | None:
    if resume is None:
        return default

    def find() -> Position:
        with reads.budgeted(
            request.app.state.sessions, request.app.state.settings.read_timeout_seconds
        ) as db:
            return outbox.position_of(db, resume)

    return await run_in_threadpool(find)


def _stream(request: Request, wanted: Wanted, since: Position | None) -> Response:
    return StreamingResponse(
        _events(request, wanted, since),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@readable
async def session_events(request: Request) -> Response:
    """GET /v1/sessions/{id}/events: the session's events from the first (or after Last-Event-ID)."""
    try:
        resume = _resume_from(request)
    except catalog.FilterError as exc:
        return invalid_query(exc)
    key = request.path_params["session_id"]

    def find() -> str | None:
        with reads.budgeted(
            request.app.state.sessions, request.app.state.settings.read_timeout_seconds
        ) as db:
            session = sessions.find_session(db, key)
            return session.id if session is not None else None

    session_id = await run_in_threadpool(find)
    if session_id is None:
        return error(404, "not_found", "no session with that id or agent instance id")
    since = await _position(request, resume, outbox.START)
    return _stream(request, Wanted(session_id=session_id), since)


@readable
async def all_events(request: Request) -> Response:
    """GET /v1/events?type=session.&type=turn.completed&app_id=&session_id=: from now on."""
    params = request.query_params
    try:
        resume = _resume_from(request)
        types = tuple(t for t in params.getlist("type") if t)
        for t in types:
            if len(t) > 64:
                raise catalog.FilterError("type", "an event type is at most 64 characters")
        app_id = params.get("app_id")
        session_id = params.get("session_id")
        wanted = Wanted(
            types=types,
            app_id=int(app_id) if app_id and app_id.isdigit() and len(app_id) < 19 else None,
            session_id=catalog.text_value("session_id", session_id) if session_id else None,
        )
        if app_id and wanted.app_id is None:
            raise catalog.FilterError("app_id", "app_id must be an integer")
    except catalog.FilterError as exc:
        return invalid_query(exc)
    since = await _position(request, resume, None)  # None: from now
    return _stream(request, wanted, since)
