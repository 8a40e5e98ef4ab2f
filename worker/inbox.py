"""Storing callbacks durably and finding the ones still waiting to be applied.

The receiver stores a whole batch of concurrent requests in one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING``: one commit makes many callbacks durable, and a
duplicate is simply a row that did not come back. Only on that rare path does a second query
tell a harmless redelivery from a replayed signature carrying another body.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from worker.callbacks import Callback
from worker.db import insert_ignoring_conflicts
from worker.models import InboxCallback, InboxState

StreamKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class NewCallback:
    """A verified callback on its way into the inbox."""

    callback: Callback
    payload_text: str
    content_type: str
    body_hash: str

    def row(self, received_at: dt.datetime) -> dict[str, Any]:
        cb = self.callback
        return {
            "app_id": cb.app_id,
            "event": cb.event,
            "agent_instance_id": cb.agent_instance_id,
            "sequence": cb.sequence,
            "dedup_key": cb.dedup_key,
            "signature": cb.signature,
            "body_hash": self.body_hash,
            "payload": self.payload_text,
            "content_type": self.content_type,
            "callback_ts": cb.timestamp_ms,
            "received_at": received_at,
            "state": InboxState.PENDING.value,
            "attempts": 0,
        }


Outcome = Literal["stored", "duplicate", "replay"]


def store_batch(
    connection: Connection, batch: Sequence[NewCallback], *, received_at: dt.datetime
) -> list[Outcome]:
    """Insert a batch; one outcome per callback, in order. The caller commits."""
    first_of_key: dict[str, int] = {}
    rows = []
    for index, item in enumerate(batch):
        key = item.callback.dedup_key
        if key not in first_of_key:
            first_of_key[key] = index
            rows.append(item.row(received_at))
    stmt = insert_ignoring_conflicts(InboxCallback, connection.dialect.name).returning(
        InboxCallback.dedup_key
    )
    inserted = set(connection.execute(stmt, rows).scalars()) if rows else set()
    outcomes: list[Outcome] = []
    for index, item in enumerate(batch):
        key = item.callback.dedup_key
        if key in inserted and first_of_key[key] == index:
            outcomes.append("stored")
        else:
            outcomes.append(_classify_conflict(connection, item))
    return outcomes


def _classify_conflict(connection: Connection, item: NewCallback) -> Outcome:
    stored_body = connection.execute(
        select(InboxCallback.body_hash).where(InboxCallback.signature == item.callback.signature)
    ).scalar_one_or_none()
    if stored_body is not None and stored_body != item.body_hash:
        return "replay"
    return "duplicate"


def pending_streams(
    session: Session, *, received_before: dt.datetime, now: dt.datetime, limit: int = 1000
) -> list[StreamKey]:
    """Streams with callbacks that should have been applied by now: what the sweeper re-enqueues."""
    rows = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .where(
            InboxCallback.state == InboxState.PENDING,
            InboxCallback.received_at < received_before,
            or_(InboxCallback.next_attempt_at.is_(None), InboxCallback.next_attempt_at <= now),
        )
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .limit(limit)
    )
    return [(app_id, instance) for app_id, instance in rows]


def all_streams(session: Session) -> list[StreamKey]:
    rows = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .order_by(func.min(InboxCallback.id))
    )
    return [(app_id, instance) for app_id, instance in rows]


def list_callbacks(
    session: Session, *, state: InboxState | None = None, limit: int = 50
) -> list[InboxCallback]:
    query = select(InboxCallback).order_by(InboxCallback.id.desc()).limit(limit)
    if state is not None:
        query = query.where(InboxCallback.state == state)
    return list(session.scalars(query))


def replay_failed(session: Session, *, ids: Iterable[int] | None = None) -> list[StreamKey]:
    """Put parked callbacks back in line (all of them, or the given ids); returns their streams."""
    condition = InboxCallback.state == InboxState.FAILED
    if ids is not None:
        condition = and_(condition, InboxCallback.id.in_(list(ids)))
    streams = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .where(condition)
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
    ).all()
    session.execute(
        update(InboxCallback)
        .where(condition)
        .values(state=InboxState.PENDING, attempts=0, next_attempt_at=None)
    )
    return [(app_id, instance) for app_id, instance in streams]


def reset_all(session: Session) -> None:
    """Mark every callback unapplied again: the first step of a rebuild."""
    session.execute(
        update(InboxCallback).values(
            state=InboxState.PENDING,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
            processed_at=None,
        )
    )


def purge(session: Session, *, ids: Iterable[int]) -> None:
    session.execute(delete(InboxCallback).where(InboxCallback.id.in_(list(ids))))
