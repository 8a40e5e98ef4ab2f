"""Retention: raw payloads and user audio are kept for a while, the transcripts derived from them stay.

A stored callback is the source of truth while it can still matter (a rebuild, a support
question about last week), but it also holds what users said, verbatim, with ids. Past
``ROOMWARDEN_RAW_PAYLOAD_RETENTION_DAYS`` (0 keeps them for ever) an applied callback's payload
is emptied and ``purged_at`` set. The row itself stays for ``ROOMWARDEN_INBOX_RETENTION_DAYS``
(its dedup key turns away a late duplicate, though a retry older than the signature window is
refused as stale anyway), then it is deleted and its instance marked ``history_purged``. A
rebuild leaves sessions with purged callbacks as they are (see worker/sessions/rebuild.py): they
cannot be re-derived.

Transcript retention (per app and template in the policy file) removes the words of sessions
past their ``transcript_days`` in the same job (worker/privacy/retention.py).

User audio has its own, shorter retention (``ROOMWARDEN_USER_AUDIO_RETENTION_DAYS``) and is
purged here too, through ``audio.purge_expired``; so are delivered events past
``ROOMWARDEN_EVENT_RETENTION_DAYS`` (``history.purge_expired``).

Pending and failed callbacks are never purged: the first are yet to be applied, the second are
waiting for an operator to look at them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.orm import Session as DbSession

from worker.db import id_in, session_scope, utcnow
from worker.events import history
from worker.jobs import leases
from worker.models import AgentInstance, IdempotentRequest, InboxCallback, InboxState
from worker.models.requests import KEPT_FOR
from worker.policies.config import book_for
from worker.privacy import files
from worker.privacy import retention as transcript_retention
from worker.sessions import audio
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)

EMPTIED = "{}"
BATCH = 5000
MAX_BATCHES = 200  # a bounded run; what is left waits for the next hour


def purge(db: DbSession, now: dt.datetime, settings: Settings, *, batch: int = 5000) -> dict[str, int]:
    """One batch of expired raw payloads, and expired user audio; counts of what was purged.

    Batched so that a first run over a year of callbacks is many short transactions rather
    than one that rewrites the whole table; the caller repeats while ``payloads == batch``.
    """
    payloads = 0
    days = settings.raw_payload_retention_days
    if days > 0:
        cutoff = now - dt.timedelta(days=days)
        ids = list(
            db.scalars(
                select(InboxCallback.id)
                .where(
                    InboxCallback.state == InboxState.DONE,
                    InboxCallback.received_at < cutoff,
                    InboxCallback.purged_at.is_(None),
                )
                .order_by(InboxCallback.id)
                .limit(batch)
            )
        )
        if ids:
            db.execute(
                update(InboxCallback)
                .where(id_in(InboxCallback.id, ids, db.get_bind().dialect.name))
                .values(payload=EMPTIED, purged_at=now)
                .execution_options(synchronize_session=False)
            )
        payloads = len(ids)
    rows = (
        _expired_rows(db, now, settings.inbox_retention_days, batch)
        if settings.inbox_retention_days > 0
        else 0
    )
    user_audio = audio.purge_expired(db, now=now, retention_days=settings.user_audio_retention_days)
    events = history.purge_expired(db, now=now, retention_days=settings.event_retention_days, batch=batch)
    keys = _expired_idempotency_keys(db, now, batch)
    # Sessions past their policy's transcript_days lose their words (worker/privacy/retention.py).
    words = transcript_retention.expire(db, book_for(settings.policies_file), now)
    return {
        "transcripts": words["sessions"],
        "payloads": payloads,
        "inbox_rows": rows,
        "user_audio": user_audio,
        "events": events,
        "idempotency_keys": keys,
    }


def _expired_rows(db: DbSession, now: dt.datetime, days: int, batch: int) -> int:
    """Applied rows past the inbox retention, their payload already emptied: deleted, and their
    instances marked ``history_purged`` so that a rebuild leaves those sessions alone."""
    if days <= 0:
        return 0
    cutoff = now - dt.timedelta(days=days)
    found = db.execute(
        select(InboxCallback.id, InboxCallback.app_id, InboxCallback.agent_instance_id)
        .where(
            InboxCallback.state == InboxState.DONE,
            InboxCallback.purged_at.is_not(None),
            InboxCallback.received_at < cutoff,
        )
        .order_by(InboxCallback.id)
        .limit(batch)
    ).all()
    if not found:
        return 0
    streams = {(app_id, instance) for _, app_id, instance in found}
    db.execute(
        update(AgentInstance)
        .where(tuple_(AgentInstance.app_id, AgentInstance.agent_instance_id).in_(streams))
        .values(history_purged=True)
        .execution_options(synchronize_session=False)
    )
    dialect = db.get_bind().dialect.name
    db.execute(delete(InboxCallback).where(id_in(InboxCallback.id, [row[0] for row in found], dialect)))
    return len(found)


def _expired_idempotency_keys(db: DbSession, now: dt.datetime, batch: int) -> int:
    old = select(IdempotentRequest.id).where(IdempotentRequest.created_at < now - KEPT_FOR).limit(batch)
    ids = list(db.scalars(old))
    if ids:
        db.execute(
            delete(IdempotentRequest).where(id_in(IdempotentRequest.id, ids, db.get_bind().dialect.name))
        )
    return len(ids)


def purge_all(job: JobContext) -> dict[str, int]:
    """The hourly job: batches of :func:`purge`, one transaction each, under a lease."""
    totals = dict.fromkeys(
        ("payloads", "inbox_rows", "user_audio", "events", "idempotency_keys", "transcripts"), 0
    )
    with leases.held(job.sessions, "purge-retention") as mine:
        if not mine:
            return totals
        for _ in range(MAX_BATCHES):
            with session_scope(job.sessions) as db:
                counts = purge(db, utcnow(), job.settings, batch=BATCH)
            for key, value in counts.items():
                totals[key] += value
            if all(
                counts[kind] < BATCH for kind in ("payloads", "inbox_rows", "events", "idempotency_keys")
            ) and (counts["transcripts"] < transcript_retention.BATCH):
                break
        if totals["transcripts"]:
            # SQLite: the removed words out of the FTS segments and the WAL (worker/privacy/files.py).
            files.scrub(job.sessions.kw["bind"])
    if any(totals.values()):
        log.info("retention_purged", **totals)
    return totals
