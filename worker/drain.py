"""Applying a stream's stored callbacks: in Sequence order, under the session's lock, each exactly once.

A drain takes every pending callback of one agent instance, applies them in one transaction,
and marks them done in that same transaction, so a callback's effects and its ``done`` mark
commit or vanish together. The common case applies the whole batch under one savepoint; only
if something raises does it go again one savepoint per callback, so that one bad callback is
retried with backoff (and finally parked as ``failed``) without holding back the others.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session as DbSession

from worker import audio, lifecycle, transcripts
from worker.callbacks import Callback, int_field
from worker.db import utcnow
from worker.lifecycle import Stream
from worker.models import InboxCallback, InboxState
from worker.settings import Settings

log = structlog.get_logger(__name__)

Handler = Callable[[DbSession, Stream, Callback, int], None]

HANDLERS: dict[str, Handler] = {
    "AgentInstanceCreated": lifecycle.instance_created,
    "AgentInstanceDeleted": lifecycle.instance_deleted,
    "Exception": lifecycle.exception,
    "UserSpeakAction": lifecycle.timeline,
    "AgentSpeakAction": lifecycle.timeline,
    "AgentInstanceStatus": lifecycle.timeline,
    "ASRResult": transcripts.user_said,
    "LLMResult": transcripts.agent_said,
    "Interrupted": transcripts.interrupted,
    "AgentInstanceMetaInfo": transcripts.meta_info,
}

BATCH_LIMIT = 500


@dataclass
class DrainResult:
    applied: int = 0
    retrying: int = 0
    parked: int = 0
    more: bool = False
    retry_in: float | None = None
    locked: bool = False
    failed_ids: list[int] = field(default_factory=list)


def drain_stream(
    db: DbSession,
    *,
    app_id: int,
    agent_instance_id: str,
    settings: Settings,
    now: dt.datetime | None = None,
) -> DrainResult:
    """Apply what is pending for one instance. The caller commits (and so releases the lock).

    If another worker holds the session this returns at once with ``locked`` set: that worker
    checks for pending callbacks again after its commit (see ``inbox.has_due``).
    """
    now = now or utcnow()
    stream = lifecycle.lock_stream(db, app_id=app_id, agent_instance_id=agent_instance_id, skip_locked=True)
    if stream is None:
        return DrainResult(locked=True)
    rows = list(
        db.scalars(
            select(InboxCallback)
            .where(
                InboxCallback.app_id == app_id,
                InboxCallback.agent_instance_id == agent_instance_id,
                InboxCallback.state == InboxState.PENDING,
                or_(InboxCallback.next_attempt_at.is_(None), InboxCallback.next_attempt_at <= now),
            )
            .order_by(
                InboxCallback.sequence.asc().nulls_last(),
                InboxCallback.callback_ts,
                InboxCallback.id,
            )
            .limit(BATCH_LIMIT + 1)
        )
    )
    result = DrainResult(more=len(rows) > BATCH_LIMIT)
    rows = rows[:BATCH_LIMIT]
    if not rows:
        return result
    try:
        with db.begin_nested(), db.no_autoflush:
            callbacks = [(row, Callback.from_payload(orjson.loads(row.payload))) for row in rows]
            rounds = {int_field(cb.data.get("Round")) for _, cb in callbacks}
            transcripts.preload_turns(db, stream, {r for r in rounds if r is not None})
            for row, cb in callbacks:
                _apply(db, stream, row, cb, settings)
            _settle(db, stream)
        done = [row.id for row in rows]
    except Exception:
        log.warning("drain_batch_failed_isolating", rows=len(rows), exc_info=True)
        stream = _relock(db, app_id, agent_instance_id)
        done = []
        for row in rows:
            try:
                with db.begin_nested():
                    _apply(db, stream, row, Callback.from_payload(orjson.loads(row.payload)), settings)
                    _settle(db, stream)
                done.append(row.id)
            except Exception as exc:
                stream = _relock(db, app_id, agent_instance_id)
                _record_failure(db, row, exc, settings=settings, now=now, result=result)
    if done:
        db.execute(
            update(InboxCallback)
            .where(InboxCallback.id.in_(done))
            .values(state=InboxState.DONE, processed_at=now, last_error=None)
        )
    result.applied = len(done)
    return result


def _relock(db: DbSession, app_id: int, agent_instance_id: str) -> Stream:
    """After a savepoint rollback: forget cached objects, take the stream again (our own lock)."""
    db.expire_all()
    stream = lifecycle.lock_stream(db, app_id=app_id, agent_instance_id=agent_instance_id)
    assert stream is not None  # we hold the lock already; it cannot be skipped
    return stream


def _apply(db: DbSession, stream: Stream, row: InboxCallback, cb: Callback, settings: Settings) -> None:
    payload = cb.payload
    lifecycle.observe(stream, cb)
    handler = HANDLERS.get(cb.event)
    if handler is not None:
        handler(db, stream, cb, row.id)
    elif cb.event == "UserAudioData":
        if settings.store_user_audio:
            audio.user_audio(db, stream, cb, row.id)
        else:
            row.payload = orjson.dumps(audio.without_audio(payload)).decode()


def _settle(db: DbSession, stream: Stream) -> None:
    transcripts.settle_agent_text(db, stream)
    lifecycle.refresh_session_state(db, stream)
    db.flush()


def _record_failure(
    db: DbSession,
    row: InboxCallback,
    exc: Exception,
    *,
    settings: Settings,
    now: dt.datetime,
    result: DrainResult,
) -> None:
    attempts = row.attempts + 1
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if attempts >= settings.apply_max_attempts:
        values = {
            "state": InboxState.FAILED,
            "attempts": attempts,
            "last_error": error,
            "next_attempt_at": None,
        }
        result.parked += 1
        result.failed_ids.append(row.id)
        log.error(
            "callback_parked", inbox_id=row.id, callback_event=row.event, attempts=attempts, error=error
        )
    else:
        delay = settings.apply_retry_base_seconds * 2 ** (attempts - 1)
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography
        values = {
            "attempts": attempts,
            "last_error": error,
            "next_attempt_at": now + dt.timedelta(seconds=delay),
        }
        result.retrying += 1
        result.retry_in = delay if result.retry_in is None else min(result.retry_in, delay)
        log.warning(
            "callback_apply_failed",
            inbox_id=row.id,
            callback_event=row.event,
            attempts=attempts,
            retry_in=round(delay, 2),
            error=error,
        )
    db.execute(update(InboxCallback).where(InboxCallback.id == row.id).values(**values))
