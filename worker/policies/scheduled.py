"""The beat's policy jobs: idle and length scans, reconciliation, queued starts.

Each runs under a lease (``worker.jobs.leases``), so two beats, or two workers picking up the
same beat, never run one job twice at once. Actions they record are published through the
``publish`` callable the task passes in, after the transaction that recorded them has committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.orm import Session as DbSession

from worker.db import session_scope, utcnow
from worker.jobs import leases
from worker.models import PolicyAction
from worker.policies import quotas, scans
from worker.policies.config import PolicyBook
from worker.policies.running import runnable
from worker.sessions import repair

if TYPE_CHECKING:
    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)

Publish = Callable[[list[tuple[int, float]]], None]
Scan = Callable[[DbSession, PolicyBook, dt.datetime], list[PolicyAction]]

# A lease outlives any sane run and is short enough that a crashed run delays the next by little.
RECONCILE_BATCH = 50


def scan(job: JobContext, name: str, decide: Scan, publish: Publish) -> int:
    """One scan (``scans.recycle_idle``, ``scans.enforce_max_length``): how many it decided."""
    with leases.held(job.sessions, name) as mine:
        if not mine:
            return 0
        with session_scope(job.sessions) as db:
            decided = decide(db, job.book, utcnow())
            pending = runnable(decided, utcnow())
        publish(pending)
    return len(decided)


def reconcile(job: JobContext, publish: Publish) -> int:
    """Ask ZEGO about agents gone quiet (their deletion callback may be lost); end stale Coze rooms.

    Only apps roomwarden can sign API calls for are asked about (the rest would be refused), and
    each ask takes a slot of reconciliation's share of the status budget, outside any transaction.
    """

    def askable(app_id: int) -> bool:
        configured = job.settings.zego_app(app_id)
        return configured is not None and configured.server_secret is not None

    with leases.held(job.sessions, "reconcile") as mine:
        if not mine:
            return 0
        with session_scope(job.sessions) as db:
            found = scans.suspects(db, job.book, utcnow(), limit=RECONCILE_BATCH, askable=askable)
            overdue = scans.coze_overdue(db, job.book, utcnow())
        for suspect in found:
            if not scans.within_budget(job.vendors.limiter(), suspect.app_id):
                break
            verdict = scans.ask(suspect, job.vendors)
            # Alive but quiet: fill what the callbacks missed (worker/sessions/repair.py), budget allowing.
            contexts = {}
            limiter = job.vendors.limiter()
            if verdict.state == "alive" and scans.within_budget(limiter, suspect.app_id, repair.ACTION):
                pair = [(suspect.app_id, suspect.agent_instance_id)]
                contexts = repair.read_contexts(job.vendors, pair, suspect.provider)
            with session_scope(job.sessions) as db:
                if contexts:
                    repair.fill_session(db, suspect.session_id, contexts, settings=job.settings)
                pending = runnable(scans.settle(db, suspect, verdict, job.book, utcnow()), utcnow())
            publish(pending)
    if found or overdue:
        log.info("reconciled", asked=len(found), coze_overdue=len(overdue))
    return len(found) + len(overdue)


def start_queued(job: JobContext) -> list[str]:
    """Sessions queued for a vendor slot that now fit (those that waited too long are failed)."""
    with leases.held(job.sessions, "start-queued") as mine:
        if not mine:
            return []
        return start_freed(job)


def start_freed(job: JobContext) -> list[str]:
    """``start_queued`` without the lease, when a drain has just freed a slot.

    The beat's run may be half-way (its count of used slots read before the deletion committed):
    waiting for its lease would leave the slot to the next beat. ``dequeue``'s per-app lock
    already keeps two runs from handing out one slot twice.
    """
    with session_scope(job.sessions) as db:
        return quotas.dequeue(db, job.book, utcnow())
