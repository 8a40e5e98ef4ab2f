"""Running one policy action, as a worker does: claim it, carry it out at the vendor, record it.

The three steps (``actions.claim``, ``actions.execute``, ``actions.finish``) each stand alone so
that no transaction is open across a vendor call; this module strings them together for the
``run_action`` task, and finds the actions whose message was lost for ``sweep_actions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from worker.db import session_scope, utcnow
from worker.jobs import leases
from worker.metrics import POLICY_ACTIONS
from worker.models import ActionState, PolicyAction
from worker.policies import actions

if TYPE_CHECKING:
    import datetime as dt

    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Ran:
    state: str  # done, failed, retry... or skipped when the action was not ours to run
    follow_up: list[tuple[int, float]] = field(default_factory=list)  # (action id, delay) to send


def run(job: JobContext, action_id: int) -> Ran:
    """Run the action if it is due and unclaimed; a duplicate message finds it done and skips."""
    with session_scope(job.sessions) as db:
        claimed = actions.claim(
            db,
            action_id,
            sealer=job.sealer,
            now=utcnow(),
            stale_after=job.settings.action_stale_seconds,
            book=job.book,
        )
    if claimed is None:
        return Ran("skipped")
    fields = {"session_id": claimed.session_id, "action_id": action_id, "action": claimed.kind.value}
    with structlog.contextvars.bound_contextvars(**fields):  # this action's lines only
        outcome = actions.execute(claimed, job.vendors)
        with session_scope(job.sessions) as db:
            follow_up = actions.finish(
                db, claimed, outcome, now=utcnow(), max_attempts=job.settings.action_max_attempts
            )
        log.info("policy_action_run", outcome=outcome.state, reason=claimed.reason)
        POLICY_ACTIONS.labels(claimed.kind.value, str(outcome.state)).inc()
    return Ran(str(outcome.state), follow_up)


def sweep(job: JobContext, enqueue: Callable[[list[tuple[int, float]]], object]) -> int:
    """Send the actions ``due`` finds, one sweeper at a time across beats and workers."""
    with leases.held(job.sessions, "sweep-actions") as mine:
        if not mine:
            return 0
        found = due(job)
        enqueue([(action_id, 0.0) for action_id in found])
    return len(found)


def due(job: JobContext) -> list[int]:
    """Actions whose message was lost, whose backoff has passed, or whose worker died mid-way."""
    with session_scope(job.sessions) as db:
        return actions.due(db, now=utcnow(), stale_after=job.settings.action_stale_seconds)


def runnable(decided: list[PolicyAction], now: dt.datetime) -> list[tuple[int, float]]:
    """The recorded actions to run (dry-run ones are only shown), each with its backoff."""
    return [
        (a.id, max(0.0, (a.not_before - now).total_seconds()))
        for a in decided
        if a.state == ActionState.PENDING
    ]
