"""What was delivered: deliveries and their attempts as the API and CLI show them, replays and tests."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.events import fanout, outbox
from worker.events.outbox import Event
from worker.models import Delivery, DeliveryAttempt, DeliveryState, Endpoint, OutboxEvent

# One replay re-sends at most this many events: a wider window is several replays.
REPLAY_LIMIT = 10_000


def listed(
    db: DbSession, endpoint_id: str, *, state: str | None, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """Newest first; ``before`` (a delivery id) pages back."""
    query = (
        select(Delivery, OutboxEvent.type)
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .where(Delivery.endpoint_id == endpoint_id)
    )
    if state is not None:
        query = query.where(Delivery.state == state)
    if before is not None:
        query = query.where(Delivery.id < before)
    rows = db.execute(query.order_by(Delivery.id.desc()).limit(limit)).all()
    return [describe(d, type_) for d, type_ in rows]


def detail(db: DbSession, endpoint_id: str, delivery_id: int) -> dict[str, Any] | None:
    row = db.execute(
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.id == delivery_id)
    ).first()
    if row is None:
        return None
    delivery, event = row
    attempts = db.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id)
    )
    shown = describe(delivery, event.type)
    shown["event"] = outbox.as_message(event)
    shown["attempt_log"] = [
        {
            "attempted_at": a.attempted_at.isoformat(),
            "status": a.status,
            "latency_ms": a.latency_ms,
            "error": a.error,
            "response_excerpt": a.response_excerpt,
        }
        for a in attempts
    ]
    return shown


def describe(delivery: Delivery, event_type: str) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "webhook_id": f"evt_{delivery.event_id}",
        "type": event_type,
        "session_id": delivery.session_id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "replay": delivery.replay,
        "created_at": iso(delivery.created_at),
        "finished_at": iso(delivery.finished_at),
    }


def replay(
    db: DbSession,
    endpoint: Endpoint,
    *,
    since: dt.datetime,
    until: dt.datetime | None,
    types: Sequence[str] | None,
    now: dt.datetime,
) -> int:
    """Send the endpoint's events of a time window again, as new deliveries with the same webhook-ids."""
    query = select(OutboxEvent).where(OutboxEvent.endpoint_id.is_(None), OutboxEvent.occurred_at >= since)
    if until is not None:
        query = query.where(OutboxEvent.occurred_at < until)
    events = [
        e
        for e in db.scalars(query.order_by(OutboxEvent.id).limit(REPLAY_LIMIT))
        if outbox.matches(types, e.type)
    ]
    rows = fanout.rows_for([endpoint], events, now=now, replay=True)
    if rows:
        db.execute(insert(Delivery), rows)
    return len(rows)


def send_test(db: DbSession, endpoint: Endpoint, *, now: dt.datetime) -> int:
    """An ``endpoint.test`` event for this endpoint alone; returns its delivery's id."""
    key = f"endpoint.test:{endpoint.id}:{secrets.token_hex(8)}"
    outbox.emit(
        db,
        [
            Event(
                type="endpoint.test",
                key=key,
                data={"endpoint_id": endpoint.id, "message": "a test event from roomwarden"},
                occurred_at=now,
                endpoint_id=endpoint.id,
            )
        ],
    )
    event_id = db.scalar(select(OutboxEvent.id).where(OutboxEvent.dedup_key == key))
    delivery = Delivery(
        endpoint_id=endpoint.id,
        event_id=event_id,
        session_id=None,
        state=DeliveryState.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        replay=False,
    )
    db.add(delivery)
    db.flush()
    return delivery.id


def purge_expired(db: DbSession, *, now: dt.datetime, retention_days: int, batch: int = 5000) -> int:
    """Events older than the retention, with their deliveries and attempts; never one still pending.

    An event is the app's record only until it was delivered; what it said stays in the tables
    it came from (sessions, turns, actions). ``retention_days`` 0 keeps them for ever.
    """
    if retention_days <= 0:
        return 0
    still_pending = select(Delivery.event_id).where(Delivery.state == DeliveryState.PENDING)
    ids = list(
        db.scalars(
            select(OutboxEvent.id)
            .where(
                OutboxEvent.occurred_at < now - dt.timedelta(days=retention_days),
                OutboxEvent.id.not_in(still_pending),
            )
            .order_by(OutboxEvent.id)
            .limit(batch)
        )
    )
    if ids:
        # Attempts, then deliveries, then events: no reliance on ON DELETE CASCADE being enforced.
        deliveries = select(Delivery.id).where(Delivery.event_id.in_(ids))
        db.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))
        db.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
        db.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))
    return len(ids)
