"""Outbox to deliveries: each new event becomes one delivery per endpoint that wants it.

One run at a time (a lease), reading the outbox in commit order from a stored cursor, so every
event is fanned out once, and an endpoint created now receives what is committed from now on
(older events reach it through a replay).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session as DbSession

from worker.events import outbox
from worker.events.outbox import Position
from worker.models import Delivery, DeliveryState, Endpoint, OutboxCursor, OutboxEvent

CURSOR = "deliveries"
BATCH = 1000


def wants(endpoint: Endpoint, event: OutboxEvent) -> bool:
    if endpoint.app_id is not None and endpoint.app_id != event.app_id:
        return False
    return outbox.matches(endpoint.events, event.type)


def rows_for(
    endpoints: Sequence[Endpoint], events: Sequence[OutboxEvent], *, now: dt.datetime, replay: bool = False
) -> list[dict[str, object]]:
    return [
        {
            "endpoint_id": endpoint.id,
            "event_id": event.id,
            "session_id": event.session_id,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "replay": replay,
        }
        for event in events
        for endpoint in endpoints
        if wants(endpoint, event)
    ]


def fan_out(db: DbSession, *, now: dt.datetime, limit: int = BATCH) -> tuple[Counter[str], bool]:
    """One batch of new events into deliveries; (new deliveries per endpoint, whether more wait)."""
    cursor = db.get(OutboxCursor, CURSOR, with_for_update=True)
    if cursor is None:
        # A first run starts at the beginning: the outbox holds only what happened since 0007.
        cursor = OutboxCursor(name=CURSOR, txid=outbox.START.txid, event_id=outbox.START.id)
        db.add(cursor)
    events = outbox.after(db, Position(cursor.txid, cursor.event_id), limit=limit)
    if not events:
        return Counter(), False
    endpoints = db.scalars(select(Endpoint).where(Endpoint.enabled.is_(True))).all()
    rows = rows_for(endpoints, events, now=now)
    if rows:
        db.execute(insert(Delivery), rows)
    last = outbox.position(db, events[-1])
    cursor.txid, cursor.event_id = last.txid, last.id
    return Counter(str(row["endpoint_id"]) for row in rows), len(events) == limit
