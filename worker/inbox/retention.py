"""Retention: raw payloads and user audio are kept for a while, the transcripts derived from them stay.

A stored callback is the source of truth while it can still matter (a rebuild, a support
question about last week), but it also holds what users said, verbatim, with ids. Past
``ROOMWARDEN_RAW_PAYLOAD_RETENTION_DAYS`` (0 keeps them for ever) an applied callback's payload
is emptied and ``purged_at`` set. The row itself stays: timeline events, exceptions and
sentences reference it, and its dedup key still turns away a late duplicate. A rebuild leaves
sessions with purged callbacks as they are (see worker/sessions/rebuild.py): they cannot be re-derived.

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
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import id_in, session_scope, utcnow
from worker.events import history
from worker.jobs import leases
from worker.models import IdempotentRequest, InboxCallback, InboxState
from worker.models.requests import KEPT_FOR
from worker.sessions import audio
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)

EMPTIED = "{}"
LEASE_SECONDS = 3600.0  # outlives any sane run; a crashed run delays the next by an hour at most
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
    user_audio = audio.purge_expired(db, now=now, retention_days=settings.user_audio_retention_days)
    events = history.purge_expired(db, now=now, retention_days=settings.event_retention_days, batch=batch)
    keys = _expired_idempotency_keys(db, now, batch)
    return {"payloads": payloads, "user_audio": user_audio, "events": events, "idempotency_keys": keys}


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
    totals = {"payloads": 0, "user_audio": 0, "events": 0, "idempotency_keys": 0}
    with leases.held(job.sessions, "purge-retention", LEASE_SECONDS) as mine:
        if not mine:
            return totals
        for _ in range(MAX_BATCHES):
            with session_scope(job.sessions) as db:
                counts = purge(db, utcnow(), job.settings, batch=BATCH)
            for key, value in counts.items():
                totals[key] += value
            if all(counts[kind] < BATCH for kind in ("payloads", "events", "idempotency_keys")):
                break
    if any(totals.values()):
        log.info("retention_purged", **totals)
    return totals
