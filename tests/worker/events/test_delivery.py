"""Deliveries to real HTTP endpoints: signed, retried on a schedule, in order per session, recorded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from tests.factories import INSTANCE, Signer, changed, ingest
from tests.sinks import Sink, dead_url, verify
from tests.worker.conversation import conversation
from worker.db import session_scope, utcnow
from worker.events import delivery, dispatch, endpoints, history
from worker.inbox.drain import drain_until_done
from worker.jobs.context import JobContext
from worker.models import Delivery, DeliveryAttempt, Endpoint, OutboxEvent
from worker.settings import Settings

FAST = [0.05, 0.05, 0.05]


@pytest.fixture
def job(
    settings: Settings, clean_engine: Engine, run_tasks_with: Callable[[JobContext], JobContext]
) -> JobContext:
    fast = changed(
        settings,
        endpoints_allow_private=True,
        delivery_retry_schedule=FAST,
        delivery_timeout_seconds=1.0,
        delivery_budget_seconds=5.0,
        secret_key=Fernet.generate_key().decode(),
    )
    return run_tasks_with(JobContext.from_settings(fast))


def register(job: JobContext, url: str, **fields: object) -> tuple[str, str]:
    with session_scope(job.sessions) as db:
        wanted = endpoints.parse({"url": url, **fields}, creating=True, allow_private=True)
        endpoint, secret = endpoints.create(db, wanted, sealer=job.sealer, now=utcnow())
        return endpoint.id, secret


def converse(job: JobContext, signer: Signer) -> None:
    with session_scope(job.sessions) as db:
        ingest(db, conversation(signer))
    drain_until_done(job.sessions, [(signer.app_id, INSTANCE)], settings=job.settings)


def deliver_until_settled(job: JobContext, endpoint_id: str, rounds: int = 40) -> None:
    """What beat and the outbound worker do, in this process: fan out, send, wait out backoffs."""
    import time

    for _ in range(rounds):
        dispatch.fan_out(job)
        delivery.deliver(job, endpoint_id)
        with session_scope(job.sessions) as db:
            if not db.scalars(select(Delivery).where(Delivery.state == "pending")).first():
                return
        time.sleep(0.05)


def outbox_order(factory: sessionmaker[DbSession]) -> list[str]:
    with session_scope(factory) as db:
        return [f"evt_{i}" for i in db.scalars(select(OutboxEvent.id).order_by(OutboxEvent.id))]


def test_a_conversation_reaches_the_endpoint_signed_and_in_order(
    job: JobContext, signer: Signer, sinks: Callable[..., Sink]
) -> None:
    sink = sinks()
    endpoint_id, secret = register(job, sink.url)
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)

    assert [r.headers["webhook-id"] for r in sink.received] == outbox_order(job.sessions)
    for request in sink.received:
        assert verify(secret, request.headers, request.body), request.headers
        assert request.headers["content-type"] == "application/json"
    types = [e["type"] for e in sink.events()]
    assert types[0] == "session.created" and types[-1] == "session.ended"
    assert types.count("turn.completed") == 6
    ended = sink.events()[-1]
    assert set(ended) == {"type", "timestamp", "data"}
    assert ended["timestamp"].endswith("Z") and ended["data"]["learned"] == "callback"


def test_an_endpoint_that_fails_then_recovers_gets_every_event_once_in_order(
    job: JobContext, signer: Signer, sinks: Callable[..., Sink]
) -> None:
    """503, timeout-free 429 and 500 are retried with the same webhook-id; order holds throughout."""
    sink = sinks(answer=lambda n: {1: 503, 2: 429, 3: 500}.get(n, 200))
    endpoint_id, _ = register(job, sink.url)
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)

    ids = [r.headers["webhook-id"] for r in sink.received]
    assert ids[:4] == [ids[0]] * 4  # the first event, tried four times under one id
    assert list(dict.fromkeys(ids)) == outbox_order(job.sessions)
    with session_scope(job.sessions) as db:
        first = db.scalars(select(Delivery).order_by(Delivery.id)).first()
        assert first is not None and (first.state, first.attempts) == ("succeeded", 4)
        attempts = db.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == first.id)
            .order_by(DeliveryAttempt.id)
        ).all()
        assert [a.status for a in attempts] == [503, 429, 500, 200]
        assert all(a.latency_ms >= 0 and a.response_excerpt == "ok" for a in attempts)


def test_a_4xx_fails_the_message_after_a_few_tries_and_the_next_ones_go(
    job: JobContext, signer: Signer, sinks: Callable[..., Sink]
) -> None:
    sink = sinks(answer=lambda n: 400 if n <= 3 else 204)
    endpoint_id, _ = register(job, sink.url)
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)
    with session_scope(job.sessions) as db:
        states = [
            (d.state, d.attempts, d.last_status) for d in db.scalars(select(Delivery).order_by(Delivery.id))
        ]
    assert states[0] == ("failed", job.settings.delivery_4xx_attempts, 400)
    assert all(state == "succeeded" for state, _, _ in states[1:])


def test_410_gone_disables_the_endpoint(job: JobContext, signer: Signer, sinks: Callable[..., Sink]) -> None:
    sink = sinks(answer=lambda n: 410)
    endpoint_id, _ = register(job, sink.url)
    converse(job, signer)
    dispatch.fan_out(job)
    delivery.deliver(job, endpoint_id)
    with session_scope(job.sessions) as db:
        endpoint = db.get(Endpoint, endpoint_id)
        assert endpoint is not None and not endpoint.enabled and "410" in (endpoint.disabled_reason or "")
    sent = len(sink.received)
    delivery.deliver(job, endpoint_id)
    assert len(sink.received) == sent  # a disabled endpoint is sent nothing more


def test_a_dead_endpoint_is_retried_on_the_schedule_then_given_up(job: JobContext, signer: Signer) -> None:
    endpoint_id, _ = register(job, dead_url(), events=["session.created"])
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)
    with session_scope(job.sessions) as db:
        [failed] = db.scalars(select(Delivery)).all()
        assert (failed.state, failed.attempts) == ("failed", len(FAST) + 1)
        assert "ConnectError" in (failed.last_error or "")


def test_a_slow_endpoint_times_out_and_the_attempt_says_so(
    job: JobContext, signer: Signer, sinks: Callable[..., Sink]
) -> None:
    sink = sinks(delay=2.0)
    endpoint_id, _ = register(job, sink.url, events=["session.created"])
    converse(job, signer)
    dispatch.fan_out(job)
    delivery.deliver(job, endpoint_id)
    with session_scope(job.sessions) as db:
        [attempt] = db.scalars(select(DeliveryAttempt)).all()[:1]
        assert attempt.error == "timeout" and attempt.status is None and 900 <= attempt.latency_ms < 1900


def test_filters_replay_and_rotation(job: JobContext, signer: Signer, sinks: Callable[..., Sink]) -> None:
    """An endpoint gets the types it asked for; a replay resends them under the same ids; after a
    rotation both secrets sign."""
    sink = sinks()
    endpoint_id, old_secret = register(job, sink.url, events=["session."], app_id=signer.app_id)
    other, _ = register(job, sink.url, app_id=signer.app_id + 1)  # another app: hears nothing
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)
    first = [(r.headers["webhook-id"], r.event["type"]) for r in sink.received]
    assert [t for _, t in first] == ["session.created", "session.active", "session.ended"]

    with session_scope(job.sessions) as db:
        endpoint = db.get(Endpoint, endpoint_id)
        assert endpoint is not None
        new_secret = endpoints.rotate(endpoint, sealer=job.sealer, now=utcnow())
        count = history.replay(
            db,
            endpoint,
            since=utcnow() - dt.timedelta(hours=1),
            until=None,
            types=["session.ended"],
            now=utcnow(),
        )
        assert count == 1
        assert db.scalars(select(Delivery).where(Delivery.endpoint_id == other)).first() is None
    delivery.deliver(job, endpoint_id)
    replayed = sink.received[-1]
    assert replayed.headers["webhook-id"] == first[-1][0]
    assert verify(new_secret, replayed.headers, replayed.body) and verify(
        old_secret, replayed.headers, replayed.body
    )


def test_secrets_are_sealed_at_rest(job: JobContext) -> None:
    endpoint_id, secret = register(job, "http://127.0.0.1:9/x")
    with session_scope(job.sessions) as db:
        stored = db.scalars(select(Endpoint.secret).where(Endpoint.id == endpoint_id)).one()
        assert secret not in stored and stored.startswith("sealed:")


def test_delivered_events_are_purged_after_their_retention_and_pending_ones_are_kept(
    job: JobContext, signer: Signer, sinks: Callable[..., Sink]
) -> None:
    sink = sinks()
    endpoint_id, _ = register(job, sink.url)
    converse(job, signer)
    deliver_until_settled(job, endpoint_id)
    with session_scope(job.sessions) as db:
        kept = db.scalars(select(Delivery).order_by(Delivery.id.desc())).first()
        assert kept is not None
        kept.state = "pending"  # as if its endpoint were still down
        kept_event = kept.event_id
    with session_scope(job.sessions) as db:
        assert history.purge_expired(db, now=utcnow() + dt.timedelta(days=29), retention_days=30) == 0
        purged = history.purge_expired(db, now=utcnow() + dt.timedelta(days=31), retention_days=30)
        assert purged == len(sink.received) - 1
        assert db.scalars(select(OutboxEvent.id)).all() == [kept_event]
        assert db.scalars(select(DeliveryAttempt.delivery_id)).all() == [kept.id]
