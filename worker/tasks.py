"""Celery tasks: thin wrappers that open a session scope and call one domain function."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError

from worker import audio, coze_rooms, inbox, provisioning
from worker.celery_app import app
from worker.db import session_scope, sessions_for, utcnow
from worker.drain import drain_until_done
from worker.inbox import StreamKey
from worker.sealing import Sealer
from worker.settings import get_settings
from worker.vendors import VendorNotConfigured, Vendors, classify

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
        sessions_for(settings.database_url), keys, settings=settings, retry_later=_retry_later
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


@app.task(acks_late=True)
def purge_user_audio() -> int:
    settings = get_settings()
    with session_scope(sessions_for(settings.database_url)) as db:
        return audio.purge_expired(db, now=utcnow(), retention_days=settings.user_audio_retention_days)


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
        order = provisioning.claim_start(
            db, session_id, sealer=sealer(), now=utcnow(), stale_after=settings.start_stale_seconds
        )
    if order is None:
        return "skipped"
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
