"""Celery tasks: thin wrappers that open a session scope and call one domain function."""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError

from worker import audio, inbox
from worker.celery_app import app
from worker.db import session_scope, sessions_for, utcnow
from worker.drain import drain_until_done
from worker.inbox import StreamKey
from worker.settings import get_settings

log = structlog.get_logger(__name__)

StreamList = list[list[int | str]]


@app.task(
    acks_late=True,
    autoretry_for=(OperationalError, DBAPIError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=20,
)
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
