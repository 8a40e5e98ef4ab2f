"""Which sessions to analyse, and the three-step run for one of them under a job context.

The beat's ``analyze_ended`` sweep is how a session gets analysed after it ends: it picks ended
sessions of the last ``LOOKBACK`` with no analysis yet, a batch at a time, under a lease so two
sweeps never ask the model twice for the same session, and within a time budget
(``ROOMWARDEN_ANALYSIS_BUDGET_SECONDS``): the jobs queue's worker processes also drain
callbacks. Nothing is lost when the broker is down when a session ends: the next sweep finds it.
An unreachable model stops the sweep (the next one tries again, the client having backed off in
between); it never touches the ingest pipeline.
``roomwarden analyze`` runs the same step over a filter, under a chosen configuration version.
"""

from __future__ import annotations

import datetime as dt
import time

import structlog
from sqlalchemy import exists, select

from worker.db import session_scope, utcnow
from worker.jobs import leases
from worker.jobs.context import JobContext
from worker.models import Session, SessionAnalysis, SessionState
from worker.postcall import config as configuration
from worker.postcall import running
from worker.vendors.chat_completions import LlmTransientError

log = structlog.get_logger(__name__)

LOOKBACK = dt.timedelta(days=1)
BATCH = 20
# Sessions whose app or template turns analysis off stay "pending" (they get no row) until they
# leave the lookback window: a sweep reads this many candidates so they cannot crowd out the rest.
CANDIDATES = 10 * BATCH
LEASE = "postcall.sweep"


def pending(job: JobContext, *, now: dt.datetime, limit: int = BATCH) -> list[str]:
    """Ended sessions of the lookback window that have no analysis of any version yet, newest first
    (after an outage the fresh ones come first; the older ones follow within the window)."""
    with session_scope(job.sessions) as db:
        analysed = exists().where(SessionAnalysis.session_id == Session.id)
        return list(
            db.scalars(
                select(Session.id)
                .where(Session.state == SessionState.ENDED, Session.ended_at >= now - LOOKBACK, ~analysed)
                .order_by(Session.ended_at.desc())
                .limit(limit)
            )
        )


def analyze_one(job: JobContext, session_id: str, *, version: str | None = None) -> running.Result | None:
    """Analyse one session (None when analysis is off for it); transient model failures raise."""
    with session_scope(job.sessions) as db:
        session = db.get(Session, session_id)
        if session is None:
            return None
        config = configuration.for_session(job.settings, job.book, session.app_id, session.template)
        if config is None:
            return None
        if version:
            config = configuration.AnalysisConfig(**{**config.__dict__, "version": version})
        prepared = running.prepare(db, session, config, settings=job.settings)
    result = running.run(prepared, job.vendors.llm(config.url, config.model))
    with session_scope(job.sessions) as db:
        running.store(db, result)
    return result


def sweep(job: JobContext) -> int:
    """Analyse the ended sessions still waiting; the number analysed (done or failed)."""
    if not job.settings.analysis_url and not _any_override(job):
        return 0
    done = 0
    with leases.held(job.sessions, LEASE) as held:
        if not held:
            return 0
        started = time.monotonic()
        for session_id in pending(job, now=utcnow(), limit=CANDIDATES):
            # The jobs queue shares its worker processes with the drain: make way after the budget.
            spent = time.monotonic() - started
            if done >= BATCH or (done and spent > job.settings.analysis_budget_seconds):
                break
            try:
                if analyze_one(job, session_id) is not None:
                    done += 1
            except LlmTransientError as error:
                log.warning("analysis_model_unreachable", session_id=session_id, error=str(error))
                break
    return done


def _any_override(job: JobContext) -> bool:
    """Whether the policy file turns analysis on somewhere although the settings do not."""
    book = job.book
    candidates = [book.for_session(a, None) for a in book.app_ids]
    candidates += [book.for_session(None, t) for t in book.template_names]
    return any(p.analysis.url and p.analysis.enabled for p in candidates)


def rerun(job: JobContext, session_ids: list[str], *, version: str | None = None) -> dict[str, int]:
    """``roomwarden analyze``: analyse each session again, stored under ``version`` if given.

    A version already stored for a session is overwritten (a repeat of the same experiment);
    other versions stay beside it. Stops at the first unreachable model, counting the rest.
    """
    counts = {"done": 0, "failed": 0, "off": 0, "not_reached": 0}
    for index, session_id in enumerate(session_ids):
        try:
            result = analyze_one(job, session_id, version=version)
        except LlmTransientError as error:
            log.warning("analysis_model_unreachable", session_id=session_id, error=str(error))
            counts["not_reached"] = len(session_ids) - index
            break
        counts["off" if result is None else result.status] += 1
    return counts
