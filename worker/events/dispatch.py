"""The beat's outbound job: new events into deliveries, then which endpoints have work to do."""

from __future__ import annotations

from worker.db import session_scope, utcnow
from worker.events import delivery, fanout
from worker.jobs import leases
from worker.jobs.context import JobContext

# A burst bigger than this many batches is finished by the next run, a second later.
MAX_BATCHES = 20


def fan_out(job: JobContext) -> int:
    """Turn what the outbox gained into deliveries, under a lease: one fan-out at a time."""
    made = 0
    with leases.held(job.sessions, "outbound-fanout") as mine:
        if not mine:
            return 0
        for _ in range(MAX_BATCHES):
            with session_scope(job.sessions) as db:
                counts, more = fanout.fan_out(db, now=utcnow())
            made += sum(counts.values())
            if not more:
                break
    return made


def endpoints_with_work(job: JobContext) -> list[str]:
    with session_scope(job.sessions) as db:
        return delivery.endpoints_due(db, now=utcnow())
