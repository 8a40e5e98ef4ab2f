"""Every periodic job, in one place, and the scheduler that sends them from any number of beats.

A deployment on several hosts may run a beat on each (for availability, or by accident). Each
beat keeps its schedule in memory, not in a local file, and before it sends a job it takes that
job's lease for most of the job's interval (``beat:<name>`` in ``job_locks``): whichever beat
comes first sends it, the others skip that round. The jobs themselves are idempotent and run
under their own leases too, so a send that slips through (the database away, a clock far off)
costs a second look, never a second effect.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.beat import ScheduleEntry, Scheduler

from worker.settings import Settings, get_settings

log = structlog.get_logger(__name__)

# The beat's jobs wait in a queue of their own, which the worker consumes beside the drains'
# (``-Q roomwarden,roomwarden.jobs``): behind a thousand drain messages a job would expire before
# its turn came (bench/scale saw every policy round expire unrun under steady load).
JOBS_QUEUE = "roomwarden.jobs"

# A beat's round of a job is this share of its interval: short enough that the next round, a
# little early on another host's clock, still finds the lease free.
ROUND_SHARE = 0.8


class LeasedScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory scheduler, sending each due job only if this beat wins its round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._factory: Any = None
        super().__init__(*args, **kwargs)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        if self._won_round(entry):
            super().apply_entry(entry, producer=producer)
        else:
            log.debug("beat_round_taken", job=entry.name)

    def _won_round(self, entry: ScheduleEntry) -> bool:
        from worker.db import make_engine, make_sessionmaker, session_scope, utcnow
        from worker.jobs import leases

        every = getattr(entry.schedule, "run_every", None)
        seconds = every.total_seconds() if every is not None else 60.0
        try:
            if self._factory is None:
                self._factory = make_sessionmaker(make_engine(get_settings().database_url))
            with session_scope(self._factory) as db:
                holder = leases.new_holder()
                return leases.acquire(
                    db, f"beat:{entry.name}", holder, ttl=seconds * ROUND_SHARE, now=utcnow()
                )
        except Exception as exc:  # the jobs are leased and idempotent: sending anyway is safe
            log.warning("beat_round_unchecked", job=entry.name, error=type(exc).__name__)
            return True


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    policy = settings.policy_interval_seconds
    return {
        # Every few seconds: callbacks stored while the broker was down, or whose enqueue was
        # lost, and callbacks whose retry time has come. Expires after one interval so that a
        # backlog of sweeps never piles up behind a stopped worker.
        "sweep-inbox": {
            "task": "worker.tasks.sweep_inbox",
            "schedule": settings.sweep_interval_seconds,
            "options": {"queue": JOBS_QUEUE, "expires": settings.sweep_interval_seconds},
        },
        # Every start-stale interval: sessions started through the API whose start message was
        # lost with the broker, or whose worker died between claiming and recording the start.
        "resume-starts": {
            "task": "worker.tasks.resume_starts",
            "schedule": settings.start_stale_seconds,
            "options": {"queue": JOBS_QUEUE, "expires": settings.start_stale_seconds},
        },
        # Coze rooms send no callbacks: every few seconds, read their new messages and notice
        # rooms that have closed by Coze's silence rule (see worker/coze_rooms.py).
        "watch-coze-rooms": {
            "task": "worker.tasks.watch_coze_rooms",
            "schedule": settings.coze_poll_interval_seconds,
            "options": {"queue": JOBS_QUEUE, "expires": settings.coze_poll_interval_seconds},
        },
        # Hourly: raw payloads and user audio are personal data, kept only for their retention
        # periods (days), so an hour late is nothing; batched, so a first run cannot stall.
        "purge-retention": {
            "task": "worker.tasks.purge_retention",
            "schedule": 3600.0,
            "options": {"queue": JOBS_QUEUE, "expires": 3600.0},
        },
        # Every analysis interval: ended sessions not yet analysed go to the user's LLM
        # (worker/postcall/). A sweep rather than a message at the end of a session, so a broker
        # outage loses none and the drain never waits on a model; a lease keeps runs apart.
        "analyze-ended": {
            "task": "worker.tasks.analyze_ended",
            "schedule": settings.analysis_interval_seconds,
            "options": {"queue": JOBS_QUEUE, "expires": settings.analysis_interval_seconds},
        },
        # Every second or so: new outbox events become deliveries, and each endpoint with
        # deliveries due (new ones, or retries whose wait is over) gets a sender.
        "dispatch-deliveries": {
            "task": "worker.tasks.dispatch_deliveries",
            "schedule": settings.outbound_interval_seconds,
            "options": {"queue": JOBS_QUEUE, "expires": settings.outbound_interval_seconds * 5},
        },
        # Every policy interval: actions whose message was lost, whose backoff has passed, or
        # whose worker died mid-way. Recovery waits on this no longer than one interval.
        "sweep-actions": {
            "task": "worker.tasks.sweep_actions",
            "schedule": policy,
            "options": {"queue": JOBS_QUEUE, "expires": policy},
        },
        # Every policy interval: an idle session is recycled within its threshold plus one
        # interval. Each run compares timestamps of active sessions only: cheap to run often.
        "recycle-idle": {
            "task": "worker.tasks.recycle_idle",
            "schedule": policy,
            "options": {"queue": JOBS_QUEUE, "expires": policy},
        },
        # Every policy interval, for the same bound on maximum session length.
        "enforce-max-length": {
            "task": "worker.tasks.enforce_max_length",
            "schedule": policy,
            "options": {"queue": JOBS_QUEUE, "expires": policy},
        },
        # Every policy interval: ZEGO can lose callbacks, so agents silent past the policy's
        # threshold are asked about. Frequent runs are cheap because each session is asked at
        # most once per reconcile.recheck_seconds; a lost agent ends within one interval of
        # its threshold.
        "reconcile": {
            "task": "worker.tasks.reconcile",
            "schedule": policy,
            "options": {"queue": JOBS_QUEUE, "expires": policy},
        },
        # Every policy interval: a freed slot goes to the oldest queued session within one
        # interval, and a session past its queue timeout is failed, never left waiting.
        "start-queued": {
            "task": "worker.tasks.start_queued",
            "schedule": policy,
            "options": {"queue": JOBS_QUEUE, "expires": policy},
        },
    }
