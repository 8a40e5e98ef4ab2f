"""Transcript retention: a session's words go some days after it ended, its counts and timings stay.

Set per app and per template in the policy file (``[defaults.retention] transcript_days``,
``[apps.N.retention]``, ``[templates.T.retention]``; 0 keeps the words for ever, the default).
The hourly ``purge_retention`` job (worker/inbox/retention.py) calls :func:`expire` once per
transaction, ``BATCH`` sessions at a time. What goes is what an erasure removes
(``erasure.remove_words``: turns' and sentences' text, stored callbacks, user audio, events'
words); the turn rows, Rounds and the sessions' counters stay, so stats read the same after.

Sessions are chosen in SQL with each (app, template) combination's own days
(``candidates.by_policy``), so sessions kept for ever are never read again; a session is done
once (``transcript_removed_at``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, false, select
from sqlalchemy.orm import Session as DbSession

from worker.models import Session
from worker.policies.candidates import by_policy
from worker.policies.config import PolicyBook
from worker.privacy.erasure import remove_words

BATCH = 200  # sessions per transaction


def applies(book: PolicyBook) -> bool:
    """Whether any app or template of the file removes words at all (the default keeps them)."""
    return any(
        book.for_session(app, template).retention.transcript_days > 0
        for app in [None, *book.app_ids]
        for template in [None, *book.template_names]
    )


def due(db: DbSession, book: PolicyBook, now: dt.datetime, *, batch: int = BATCH) -> list[str]:
    """Ended sessions past their policy's ``transcript_days`` whose words are still there."""

    def where(days: int) -> ColumnElement[bool]:
        return false() if days <= 0 else Session.ended_at < now - dt.timedelta(days=days)

    if not applies(book):
        return []
    predicate = by_policy(book, lambda policy: policy.retention.transcript_days, where)
    return list(
        db.scalars(
            select(Session.id)
            .where(Session.ended_at.is_not(None), Session.transcript_removed_at.is_(None), predicate)
            .order_by(Session.ended_at, Session.id)
            .limit(batch)
        )
    )


def expire(db: DbSession, book: PolicyBook, now: dt.datetime, *, batch: int = BATCH) -> dict[str, int]:
    """One batch, in the caller's transaction: counts per kind and ``sessions``."""
    ids = due(db, book, now, batch=batch)
    if not ids:
        return {"sessions": 0}
    return {"sessions": len(ids), **remove_words(db, ids, reason="retention", now=now)}
