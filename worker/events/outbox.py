"""The transactional outbox: an event commits with the change that caused it, or not at all.

Readers (the fan-out to endpoints, the live streams) need an order in which nothing committed
later can appear *before* a position they have passed. Ids alone do not give that on Postgres:
a transaction may take id 10, commit after the one that took id 11, and a reader already past 11
would miss it. So each event carries its transaction's id (``txid``), readers walk events in
(txid, id) order and stop below the oldest transaction still running (``pg_snapshot_xmin``):
every later commit has a txid at or above that horizon. SQLite has one writer at a time, so
commit order is id order there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, or_, select, text, tuple_
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.inbox import recordsets
from worker.models import OutboxEvent

# Postgres wakes the live streams of every web process through this channel (webhooks/events.py).
CHANNEL = "roomwarden_events"
_QUIET = "roomwarden.events.quiet"
_NOTIFIED = "roomwarden.events.notified"


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    # The cause, unique for ever: the same cause seen twice is one event.
    key: str
    data: dict[str, Any]
    occurred_at: dt.datetime
    session_id: str | None = None
    app_id: int | None = None
    endpoint_id: str | None = None


def emit(db: DbSession, events: Sequence[Event]) -> None:
    """Write ``events`` in the caller's transaction; a cause already announced is skipped."""
    if not events or db.info.get(_QUIET):
        return
    dialect = db.get_bind().dialect.name
    # One statement for a drain batch's turn events, in the order given (their ids are their order).
    recordsets.insert_rows(
        db,
        OutboxEvent,
        [
            {
                "type": e.type,
                "dedup_key": e.key[:200],
                "session_id": e.session_id,
                "app_id": e.app_id,
                "endpoint_id": e.endpoint_id,
                "occurred_at": e.occurred_at,
                "data": e.data,
            }
            for e in events
        ],
        skip_conflicts=True,
    )
    transaction = db.get_transaction()
    if dialect == "postgresql" and db.info.get(_NOTIFIED) is not transaction:
        # Delivered at commit; once per transaction is enough to wake every stream.
        db.execute(text(f"NOTIFY {CHANNEL}"))
        db.info[_NOTIFIED] = transaction


@contextmanager
def quiet(db: DbSession) -> Iterator[None]:
    """Emit nothing in this database session: ``roomwarden rebuild`` replays history, it is not news."""
    db.info[_QUIET] = True
    try:
        yield
    finally:
        db.info.pop(_QUIET, None)


def quiet_sessions(factory: sessionmaker[DbSession]) -> sessionmaker[DbSession]:
    """``factory``'s database sessions, each of them quiet."""
    return sessionmaker(class_=factory.class_, **{**factory.kw, "info": {_QUIET: True}})


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the outbox's commit order; readers ask for what comes after it."""

    txid: int
    id: int


START = Position(0, 0)
_HORIZON: ColumnElement[int] = literal_column("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")


def _postgres(db: DbSession) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def horizon(db: DbSession) -> int | None:
    """The oldest transaction still running (Postgres): events at or above it may yet be joined."""
    if not _postgres(db):
        return None
    return int(db.scalar(text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")))


def now_position(db: DbSession) -> Position:
    """Where a reader starting "from now" starts: after everything already settled."""
    if _postgres(db):
        return Position(horizon(db) or 0, 0)
    return Position(0, db.scalar(select(func.coalesce(func.max(OutboxEvent.id), 0))) or 0)


def position_of(db: DbSession, event_id: int) -> Position:
    """The position of an event a reader last saw (``Last-Event-ID``)."""
    if not _postgres(db):
        return Position(0, event_id)
    txid = db.scalar(select(OutboxEvent.txid).where(OutboxEvent.id == event_id))
    if txid is None:  # gone (deleted with its endpoint's test, or never ours): resume by id alone
        txid = db.scalar(select(func.min(OutboxEvent.txid)).where(OutboxEvent.id > event_id)) or 0
        return Position(int(txid), event_id)
    return Position(int(txid), event_id)


def position(db: DbSession, event: OutboxEvent) -> Position:
    return Position(event.txid or 0, event.id) if _postgres(db) else Position(0, event.id)


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which events a reader wants: types or prefixes ending in ".", one app, one session."""

    types: tuple[str, ...] = ()
    app_id: int | None = None
    session_id: str | None = None


def matches(patterns: Sequence[str] | None, event_type: str) -> bool:
    if not patterns:
        return True
    return any(event_type == p or (p.endswith(".") and event_type.startswith(p)) for p in patterns)


def after(
    db: DbSession, since: Position, wanted: Wanted = Wanted(), *, limit: int = 500
) -> list[OutboxEvent]:
    """The settled events after ``since`` in commit order (broadcast ones; not one endpoint's tests)."""
    query: Select[OutboxEvent] = select(OutboxEvent).where(OutboxEvent.endpoint_id.is_(None))
    if _postgres(db):
        query = query.where(
            tuple_(OutboxEvent.txid, OutboxEvent.id) > tuple_(since.txid, since.id),
            OutboxEvent.txid < _HORIZON,  # in the statement: the same snapshot as the scan
        ).order_by(OutboxEvent.txid, OutboxEvent.id)
    else:
        query = query.where(OutboxEvent.id > since.id).order_by(OutboxEvent.id)
    if wanted.session_id is not None:
        query = query.where(OutboxEvent.session_id == wanted.session_id)
    if wanted.app_id is not None:
        query = query.where(OutboxEvent.app_id == wanted.app_id)
    if wanted.types:
        query = query.where(
            or_(
                *(
                    OutboxEvent.type.startswith(t, autoescape=True)
                    if t.endswith(".")
                    else OutboxEvent.type == t
                    for t in wanted.types
                )
            )
        )
    return list(db.scalars(query.limit(limit)))


def last_id(db: DbSession, session_id: str) -> int | None:
    """The session's latest event (in commit order): where a page that has just read it streams from."""
    return db.scalar(
        select(OutboxEvent.id)
        .where(OutboxEvent.session_id == session_id)
        .order_by(OutboxEvent.txid.desc().nulls_last(), OutboxEvent.id.desc())
        .limit(1)
    )


def as_message(event: OutboxEvent) -> dict[str, Any]:
    """The event as a webhook body and an SSE ``data:`` line carry it (Standard Webhooks' shape)."""
    return {
        "type": event.type,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }
