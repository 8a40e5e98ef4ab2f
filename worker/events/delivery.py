"""Sending one endpoint's due deliveries: in order per session, a few at once, every attempt kept.

A session's events reach an endpoint one at a time, oldest first: a delivery is due only when no
earlier delivery of the same session to the same endpoint is still pending. So a
``session.ended`` never overtakes that session's ``turn.completed`` events, even through
retries, and other sessions' events flow past a session that is waiting out a backoff.

Nothing is marked "in flight" in the database: a worker killed mid-request leaves its
deliveries pending, and they are sent again (at least once; the same ``webhook-id``) when the
endpoint's lease expires.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import structlog
from sqlalchemy import and_, exists, func, insert, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session as DbSession

from worker.db import session_scope, utcnow
from worker.events import endpoints, outbox, signing
from worker.events.sender import Answer, Message, send_all
from worker.jobs import leases
from worker.jobs.context import JobContext
from worker.metrics import OUTBOUND_DELIVERIES
from worker.models import Delivery, DeliveryAttempt, DeliveryState, Endpoint, OutboxEvent
from worker.settings import Settings
from worker.vendors.retries import RetryPolicy

log = structlog.get_logger(__name__)

SPREAD = RetryPolicy(jitter="band", deadline=None)  # +-20% around the schedule's waits


def message_id(event_id: int) -> str:
    """``webhook-id``: one per event, the same on every attempt and every replay of it."""
    return f"evt_{event_id}"


def due(
    db: DbSession, endpoint_id: str, *, now: dt.datetime, limit: int
) -> list[tuple[Delivery, OutboxEvent]]:
    """Deliveries ready to go, each the oldest pending one of its session for this endpoint.

    The heads of the sessions' queues come from one pass over the endpoint's pending
    deliveries (DISTINCT ON along the partial index on endpoint, session, id); a correlated
    "no earlier pending one" test reads the same but lets a planner with stale statistics pick
    a nested loop that costs seconds on a backlog (measured with bench/outbound).
    """
    pending = (Delivery.endpoint_id == endpoint_id, Delivery.state == DeliveryState.PENDING)
    with_session = (*pending, Delivery.session_id.is_not(None))
    if db.get_bind().dialect.name == "postgresql":
        heads = (
            select(Delivery.id)
            .where(*with_session)
            .ext(distinct_on(Delivery.session_id))
            .order_by(Delivery.session_id, Delivery.id)
            .subquery()
        )
    else:  # SQLite has no DISTINCT ON: min() per group
        heads = (
            select(func.min(Delivery.id).label("id"))
            .where(*with_session)
            .group_by(Delivery.session_id)
            .subquery()
        )
    chosen = select(heads.c.id)
    sessionless = select(Delivery.id).where(*pending, Delivery.session_id.is_(None))
    rows = db.execute(
        select(Delivery, OutboxEvent)
        .join(OutboxEvent, OutboxEvent.id == Delivery.event_id)
        .where(
            *pending,
            Delivery.next_attempt_at <= now,
            or_(Delivery.id.in_(chosen), Delivery.id.in_(sessionless)),
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    ).all()
    return [(delivery, event) for delivery, event in rows]


def messages(
    endpoint: Endpoint, batch: Sequence[tuple[Delivery, OutboxEvent]], keys: Sequence[str], *, at: int
) -> list[Message]:
    out = []
    for delivery, event in batch:
        body = orjson.dumps(outbox.as_message(event))
        out.append(Message(delivery.id, body, signing.headers(keys, message_id(event.id), at, body)))
    return out


@dataclass
class Tally:
    sent: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0


def record(
    db: DbSession, endpoint: Endpoint, answers: Sequence[Answer], *, settings: Settings, now: dt.datetime
) -> Tally:
    """Every attempt as a row, and what comes next for its delivery."""
    tally = Tally(sent=len(answers))
    found = {
        d.id: d for d in db.scalars(select(Delivery).where(Delivery.id.in_([a.delivery_id for a in answers])))
    }
    db.execute(
        insert(DeliveryAttempt),
        [
            {
                "delivery_id": a.delivery_id,
                "attempted_at": now,
                "status": a.status,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "response_excerpt": a.excerpt,
            }
            for a in answers
        ],
    )
    for answer in answers:
        delivery = found.get(answer.delivery_id)
        if delivery is None or delivery.state != DeliveryState.PENDING:
            continue  # replaced meanwhile (the endpoint deleted, a replay done by another run)
        delivery.attempts += 1
        delivery.last_status, delivery.last_error = answer.status, answer.error
        verdict = _verdict(answer, delivery.attempts, settings)
        OUTBOUND_DELIVERIES.labels(
            "succeeded" if verdict == "succeeded" else "retry" if verdict == "retry" else "failed"
        ).inc()
        if verdict == "succeeded":
            delivery.state, delivery.finished_at, delivery.next_attempt_at = (
                DeliveryState.SUCCEEDED,
                now,
                None,
            )
            tally.succeeded += 1
        elif verdict == "failed" or verdict == "gone":
            delivery.state, delivery.finished_at, delivery.next_attempt_at = DeliveryState.FAILED, now, None
            tally.failed += 1
            if verdict == "gone" and endpoint.enabled:
                endpoints.disable(endpoint, "the endpoint answered 410 Gone", now=now)
                log.warning("endpoint_disabled_gone", endpoint_id=endpoint.id)
        else:
            wait = SPREAD.jittered(settings.delivery_retry_schedule[delivery.attempts - 1])
            if answer.retry_after is not None:
                wait = max(wait, answer.retry_after)
            delivery.next_attempt_at = now + dt.timedelta(seconds=wait)
            tally.retrying += 1
    return tally


def _verdict(answer: Answer, attempts: int, settings: Settings) -> str:
    status = answer.status
    if status is not None and 200 <= status < 300:
        return "succeeded"
    if status == 410:
        return "gone"
    transient = status is None and not (answer.error or "").startswith("blocked address")
    transient = transient or status in (408, 429) or (status is not None and status >= 500)
    if transient:
        return "retry" if attempts <= len(settings.delivery_retry_schedule) else "failed"
    # 3xx, other 4xx, a refused address: the endpoint says no; a few tries, then give up.
    return "retry" if attempts < settings.delivery_4xx_attempts else "failed"


def deliver(job: JobContext, endpoint_id: str) -> Tally:
    """Send what is due for one endpoint until nothing is or the time budget is spent."""
    settings = job.settings
    total = Tally()
    with leases.held(job.sessions, f"deliver:{endpoint_id}") as mine:
        if not mine:
            return total
        stop_at = time.monotonic() + settings.delivery_budget_seconds
        while time.monotonic() < stop_at:
            tally = _one_round(job, endpoint_id)
            if tally is None:
                break
            for name in ("sent", "succeeded", "retrying", "failed"):
                setattr(total, name, getattr(total, name) + getattr(tally, name))
    if total.sent:
        log.info("deliveries_sent", endpoint_id=endpoint_id, **vars(total))
    return total


def _one_round(job: JobContext, endpoint_id: str) -> Tally | None:
    settings = job.settings
    now = utcnow()
    with session_scope(job.sessions) as db:
        endpoint = endpoints.find(db, endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return None
        batch = due(db, endpoint_id, now=now, limit=settings.delivery_concurrency * 4)
        if not batch:
            return None
        keys = endpoints.signing_keys(endpoint, sealer=job.sealer, now=now)
        url = endpoint.url
        outgoing = messages(endpoint, batch, keys, at=int(now.timestamp()))
    answers = send_all(
        url,
        outgoing,
        concurrency=settings.delivery_concurrency,
        timeout=settings.delivery_timeout_seconds,
        allow_private=settings.endpoints_allow_private,
    )
    with session_scope(job.sessions) as db:
        endpoint = endpoints.find(db, endpoint_id)
        if endpoint is None:
            return None  # deleted while we sent: its deliveries went with it
        return record(db, endpoint, answers, settings=settings, now=utcnow())


def endpoints_due(db: DbSession, *, now: dt.datetime) -> list[str]:
    """Enabled endpoints with at least one delivery due."""
    pending = exists().where(
        and_(
            Delivery.endpoint_id == Endpoint.id,
            Delivery.state == DeliveryState.PENDING,
            Delivery.next_attempt_at <= now,
        )
    )
    return list(db.scalars(select(Endpoint.id).where(Endpoint.enabled.is_(True), pending)))
