"""Celery tasks: thin wrappers that open a session scope and call one domain function."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session as DbSession

from worker.celery_app import app
from worker.db import session_scope, sessions_for, utcnow
from worker.inbox import retention
from worker.inbox import store as inbox
from worker.inbox.drain import drain_until_done
from worker.inbox.store import StreamKey
from worker.jobs import leases as locks
from worker.models import ActionState, PolicyAction
from worker.policies import actions, quotas, scans
from worker.policies.config import PolicyBook, book_for
from worker.sealing import Sealer
from worker.sessions import coze_rooms, provisioning
from worker.settings import get_settings
from worker.vendors.clients import Vendors
from worker.vendors.errors import VendorNotConfigured, classify

log = structlog.get_logger(__name__)

StreamList = list[list[int | str]]

# A database that is restarting or failing over: try again, backing off, rather than lose the task.
DATABASE_RETRIES: dict[str, Any] = {
    "autoretry_for": (OperationalError, DBAPIError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


@app.task(acks_late=True, max_retries=20, **DATABASE_RETRIES)
def drain(streams: StreamList) -> dict[str, int]:
    """Apply the pending callbacks of each given (AppId, AgentInstanceId) stream."""
    settings = get_settings()
    keys = [(int(app_id), str(instance_id)) for app_id, instance_id in streams]
    return drain_until_done(
        sessions_for(settings.database_url),
        keys,
        settings=settings,
        retry_later=_retry_later,
        on_actions=enqueue_actions,
    ).totals()


def _retry_later(streams: list[StreamKey], delay: float) -> None:
    enqueue_drain(streams, countdown=delay)


def enqueue_drain(streams: list[tuple[int, str]], *, countdown: float | None = None) -> bool:
    """Ask a worker to drain these streams; False when the broker cannot take it right now.

    Losing this message loses nothing: the rows are already stored and the sweeper finds them.
    """
    try:
        drain.apply_async(
            args=[[list(stream) for stream in streams]],
            countdown=countdown,
            retry=False,
            argsrepr=f"<{len(streams)} streams>",  # Celery would otherwise repr the whole list
        )
    except Exception as exc:  # kombu raises a zoo of connection errors; all mean "not now"
        log.warning("enqueue_failed", streams=len(streams), error=f"{type(exc).__name__}: {exc}")
        return False
    return True


@app.task(acks_late=True)
def sweep_inbox() -> int:
    """Re-enqueue streams whose callbacks are still pending after a while."""
    settings = get_settings()
    now = utcnow()
    with session_scope(sessions_for(settings.database_url)) as db:
        streams = inbox.pending_streams(
            db, received_before=now - dt.timedelta(seconds=settings.sweep_after_seconds), now=now
        )
    for start in range(0, len(streams), 100):
        enqueue_drain(streams[start : start + 100])
    if streams:
        log.info("inbox_swept", streams=len(streams))
    return len(streams)


_vendors: Vendors | None = None


def vendors() -> Vendors:
    """One set of vendor clients per worker process (their connections and limiter are reused)."""
    global _vendors
    if _vendors is None:
        _vendors = Vendors(get_settings())
    return _vendors


def sealer() -> Sealer | None:
    key = get_settings().secret_key
    return Sealer(key.get_secret_value()) if key is not None else None


# max_retries=None: vendor errors are bounded by start_max_attempts, counted on the session.
@app.task(bind=True, acks_late=True, max_retries=None, **DATABASE_RETRIES)
def start_session(self: Any, session_id: str) -> str:
    """Ask the vendor for the agent of a session started through the API."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    with session_scope(factory) as db:
        # In one transaction: the quota check's per-app lock lasts until the claim is visible.
        admission = quotas.admit(db, session_id, book_for(settings.policies_file), now=utcnow())
        order = None
        if admission.go:
            order = provisioning.claim_start(
                db, session_id, sealer=sealer(), now=utcnow(), stale_after=settings.start_stale_seconds
            )
    enqueue_actions(admission.actions)
    if admission.retry_in is not None:
        raise self.retry(countdown=admission.retry_in)
    if order is None:
        return "queued" if admission.queued else "skipped"
    structlog.contextvars.bind_contextvars(session_id=session_id, provider=order.provider.value)
    try:
        started = provisioning.call_vendor(order, vendors())
    except VendorNotConfigured as exc:
        with session_scope(factory) as db:
            provisioning.record_failed(db, session_id, code=None, message=str(exc), now=utcnow())
        return "failed"
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            with session_scope(factory) as db:
                provisioning.release_claim(db, session_id)
            raise
        if failure.code in quotas.VENDOR_QUOTA_CODES:  # full after all: wait in line, do not fail
            with session_scope(factory) as db:
                quotas.on_vendor_quota(db, session_id, utcnow())
            log.warning("session_start_queued", code=failure.code)
            return "queued"
        if failure.transient and order.attempt < settings.start_max_attempts:
            with session_scope(factory) as db:
                provisioning.release_claim(db, session_id)
            delay = settings.start_retry_base_seconds * 2 ** (order.attempt - 1)
            log.warning("session_start_retry", attempt=order.attempt, code=failure.code, delay=delay)
            jitter = 0.5 + random.random() / 2  # noqa: S311 (spreading retries, not a secret)
            raise self.retry(countdown=delay * jitter, exc=exc) from None
        with session_scope(factory) as db:
            provisioning.record_failed(
                db, session_id, code=failure.code, message=failure.message, now=utcnow()
            )
        log.warning("session_start_failed", code=failure.code, attempt=order.attempt)
        return "failed"
    with session_scope(factory) as db:
        cancelled = provisioning.record_started(db, session_id, started, now=utcnow())
    log.info("session_started", agent_instance_id=started.agent_instance_id)
    if cancelled:
        end_session.delay(session_id)
    return "started"


def enqueue_start(session_id: str) -> bool:
    """Ask a worker to start the session; False if the broker is away (the resume job catches it)."""
    try:
        start_session.apply_async(args=[session_id], retry=False)
    except Exception as exc:  # kombu connection errors: the session waits for resume_starts
        log.warning("enqueue_failed", task="start_session", error=f"{type(exc).__name__}: {exc}")
        return False
    return True


@app.task(acks_late=True, max_retries=10, **DATABASE_RETRIES)
def end_session(session_id: str, graceful: bool = False) -> int:
    """DeleteAgentInstance for each live instance; the deletion callbacks then end the session."""
    settings = get_settings()
    with session_scope(sessions_for(settings.database_url)) as db:
        instances = provisioning.live_instances(db, session_id)
    return provisioning.delete_instances(vendors(), instances, graceful=graceful)


def enqueue_end(session_id: str, *, graceful: bool) -> bool:
    try:
        end_session.apply_async(args=[session_id], kwargs={"graceful": graceful}, retry=False)
    except Exception as exc:
        log.warning("enqueue_failed", task="end_session", error=f"{type(exc).__name__}: {exc}")
        return False
    return True


@app.task(acks_late=True)
def resume_starts() -> int:
    """Re-enqueue API sessions whose start message was lost or whose worker died mid-start."""
    settings = get_settings()
    with session_scope(sessions_for(settings.database_url)) as db:
        ids = provisioning.starts_to_resume(db, now=utcnow(), stale_after=settings.start_stale_seconds)
    for session_id in ids:
        enqueue_start(session_id)
    return len(ids)


@app.task(acks_late=True)
def watch_coze_rooms() -> int:
    """Read new Coze room messages into transcripts; end sessions whose room has closed."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    with session_scope(factory) as db:
        watches = coze_rooms.live_rooms(db)
    ended = 0
    for watch in watches:
        try:
            raw = list(vendors().coze().iter_messages(watch.conversation_id, after_id=watch.cursor))
        except Exception as exc:
            if classify(exc) is None and not isinstance(exc, VendorNotConfigured):
                raise
            log.warning("coze_messages_unavailable", session_id=watch.session_id, error=str(exc))
            continue
        with session_scope(factory) as db:
            reason = coze_rooms.record(
                db,
                watch,
                coze_rooms.messages_from(raw),
                now=utcnow(),
                silence_seconds=settings.coze_silence_seconds,
            )
        if reason is not None:
            ended += 1
            log.info("coze_room_closed", session_id=watch.session_id, reason=reason)
    return ended


# --- Policies (worker/policies/): decided in drains and scans, executed here, once each. ---


def enqueue_actions(actions: list[tuple[int, float]]) -> None:
    """Ask a worker to run each (action id, delay); a lost message waits for sweep_actions."""
    for action_id, delay in actions:
        try:
            run_action.apply_async(args=[action_id], countdown=delay or None, retry=False)
        except Exception as exc:  # kombu connection errors: the sweeper finds the row
            log.warning("enqueue_failed", task="run_action", error=f"{type(exc).__name__}: {exc}")
            return


@app.task(acks_late=True, max_retries=None, **DATABASE_RETRIES)
def run_action(action_id: int) -> str:
    """Claim a policy action, carry it out at the vendor, record what came of it."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    with session_scope(factory) as db:
        claimed = actions.claim(
            db,
            action_id,
            sealer=sealer(),
            now=utcnow(),
            stale_after=settings.action_stale_seconds,
        )
    if claimed is None:
        return "skipped"
    structlog.contextvars.bind_contextvars(
        session_id=claimed.session_id, action_id=action_id, action=claimed.kind.value
    )
    outcome = actions.execute(claimed, vendors())
    with session_scope(factory) as db:
        follow_up = actions.finish(
            db, claimed, outcome, now=utcnow(), max_attempts=settings.action_max_attempts
        )
    enqueue_actions(follow_up)
    log.info("policy_action_run", outcome=outcome.state, reason=claimed.reason)
    return str(outcome.state)


@app.task(acks_late=True)
def sweep_actions() -> int:
    """Actions whose message was lost, whose backoff has passed, or whose worker died mid-way."""
    settings = get_settings()
    with session_scope(sessions_for(settings.database_url)) as db:
        due = actions.due(db, now=utcnow(), stale_after=settings.action_stale_seconds)
    enqueue_actions([(action_id, 0.0) for action_id in due])
    return len(due)


# --- Scheduled policy jobs and retention: each under a lease, so two runs never overlap. ---

# A lease outlives any sane run and is short enough that a crashed run delays the next by little.
SCAN_LEASE_SECONDS = 120.0
RECONCILE_LEASE_SECONDS = 300.0  # a run asks ZEGO about up to RECONCILE_BATCH sessions
RECONCILE_BATCH = 50
RETENTION_LEASE_SECONDS = 3600.0


def _pending(decided: list[PolicyAction]) -> list[tuple[int, float]]:
    """The recorded actions to run (dry-run ones are only shown), with their backoff."""
    now = utcnow()
    return [
        (a.id, max(0.0, (a.not_before - now).total_seconds()))
        for a in decided
        if a.state == ActionState.PENDING
    ]


def _scan(job: str, scan: Callable[[DbSession, PolicyBook, dt.datetime], list[PolicyAction]]) -> int:
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    with locks.held(factory, job, SCAN_LEASE_SECONDS) as mine:
        if not mine:
            return 0
        with session_scope(factory) as db:
            decided: list[PolicyAction] = scan(db, book_for(settings.policies_file), utcnow())
            pending = _pending(decided)
        enqueue_actions(pending)
    return len(decided)


@app.task(acks_late=True, **DATABASE_RETRIES)
def recycle_idle() -> int:
    """Active sessions whose user has been silent past the policy's threshold get recycled."""
    return _scan("recycle-idle", scans.recycle_idle)


@app.task(acks_late=True, **DATABASE_RETRIES)
def enforce_max_length() -> int:
    """Sessions older than their policy's maximum length get recycled."""
    return _scan("enforce-max-length", scans.enforce_max_length)


def _has_server_secret(app_id: int) -> bool:
    """Only apps roomwarden can sign API calls for are asked about: the rest would be refused."""
    configured = get_settings().zego_app(app_id)
    return configured is not None and configured.server_secret is not None


@app.task(acks_late=True, **DATABASE_RETRIES)
def reconcile() -> int:
    """Ask ZEGO about agents gone quiet (their deletion callback may be lost); end stale Coze rooms."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    book: PolicyBook = book_for(settings.policies_file)
    with locks.held(factory, "reconcile", RECONCILE_LEASE_SECONDS) as mine:
        if not mine:
            return 0
        with session_scope(factory) as db:
            found = scans.suspects(db, book, utcnow(), limit=RECONCILE_BATCH, askable=_has_server_secret)
            overdue = scans.coze_overdue(db, book, utcnow())
        for suspect in found:
            if not scans.within_budget(vendors().limiter(), suspect.app_id):
                break
            verdict = scans.ask(suspect, vendors())  # no transaction open across the call
            with session_scope(factory) as db:
                pending = _pending(scans.settle(db, suspect, verdict, book, utcnow()))
            enqueue_actions(pending)
    if found or overdue:
        log.info("reconciled", asked=len(found), coze_overdue=len(overdue))
    return len(found) + len(overdue)


@app.task(acks_late=True, **DATABASE_RETRIES)
def start_queued() -> int:
    """Sessions queued for a vendor slot: start those that fit, fail those that waited too long."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    with locks.held(factory, "start-queued", SCAN_LEASE_SECONDS) as mine:
        if not mine:
            return 0
        with session_scope(factory) as db:
            ids = quotas.dequeue(db, book_for(settings.policies_file), utcnow())
    for session_id in ids:
        enqueue_start(session_id)  # a lost message: resume_starts finds the session
    return len(ids)


@app.task(acks_late=True, **DATABASE_RETRIES)
def purge_retention() -> dict[str, int]:
    """Empty raw payloads and delete user audio past their retention, a batch per transaction."""
    settings = get_settings()
    factory = sessions_for(settings.database_url)
    totals = {"payloads": 0, "user_audio": 0}
    batch = 5000
    with locks.held(factory, "purge-retention", RETENTION_LEASE_SECONDS) as mine:
        if not mine:
            return totals
        for _ in range(200):  # a bounded run; what is left waits for the next hour
            with session_scope(factory) as db:
                counts = retention.purge(db, utcnow(), settings, batch=batch)
            for key, value in counts.items():
                totals[key] += value
            if counts["payloads"] < batch:
                break
    if any(totals.values()):
        log.info("retention_purged", **totals)
    return totals


@app.task(acks_late=True)
def purge_user_audio() -> dict[str, int]:
    """The old name of ``purge_retention``, kept for messages queued before an upgrade."""
    result: dict[str, int] = purge_retention()
    return result
