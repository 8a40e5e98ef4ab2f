"""Every periodic job, in one place. Exactly one beat process runs these (see the Procfile)."""

from __future__ import annotations

from typing import Any

from worker.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    policy = settings.policy_interval_seconds
    return {
        # Every few seconds: callbacks stored while the broker was down, or whose enqueue was
        # lost, and callbacks whose retry time has come. Expires after one interval so that a
        # backlog of sweeps never piles up behind a stopped worker.
        "sweep-inbox": {
            "task": "worker.tasks.sweep_inbox",
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": settings.sweep_interval_seconds},
        },
        # Every start-stale interval: sessions started through the API whose start message was
        # lost with the broker, or whose worker died between claiming and recording the start.
        "resume-starts": {
            "task": "worker.tasks.resume_starts",
            "schedule": settings.start_stale_seconds,
            "options": {"expires": settings.start_stale_seconds},
        },
        # Coze rooms send no callbacks: every few seconds, read their new messages and notice
        # rooms that have closed by Coze's silence rule (see worker/coze_rooms.py).
        "watch-coze-rooms": {
            "task": "worker.tasks.watch_coze_rooms",
            "schedule": settings.coze_poll_interval_seconds,
            "options": {"expires": settings.coze_poll_interval_seconds},
        },
        # Hourly: raw payloads and user audio are personal data, kept only for their retention
        # periods (days), so an hour late is nothing; batched, so a first run cannot stall.
        "purge-retention": {
            "task": "worker.tasks.purge_retention",
            "schedule": 3600.0,
            "options": {"expires": 3600.0},
        },
        # Every second or so: new outbox events become deliveries, and each endpoint with
        # deliveries due (new ones, or retries whose wait is over) gets a sender.
        "dispatch-deliveries": {
            "task": "worker.tasks.dispatch_deliveries",
            "schedule": settings.outbound_interval_seconds,
            "options": {"expires": settings.outbound_interval_seconds * 5},
        },
        # Every policy interval: actions whose message was lost, whose backoff has passed, or
        # whose worker died mid-way. Recovery waits on this no longer than one interval.
        "sweep-actions": {
            "task": "worker.tasks.sweep_actions",
            "schedule": policy,
            "options": {"expires": policy},
        },
        # Every policy interval: an idle session is recycled within its threshold plus one
        # interval. Each run compares timestamps of active sessions only: cheap to run often.
        "recycle-idle": {
            "task": "worker.tasks.recycle_idle",
            "schedule": policy,
            "options": {"expires": policy},
        },
        # Every policy interval, for the same bound on maximum session length.
        "enforce-max-length": {
            "task": "worker.tasks.enforce_max_length",
            "schedule": policy,
            "options": {"expires": policy},
        },
        # Every policy interval: ZEGO can lose callbacks, so agents silent past the policy's
        # threshold are asked about. Frequent runs are cheap because each session is asked at
        # most once per reconcile.recheck_seconds; a lost agent ends within one interval of
        # its threshold.
        "reconcile": {
            "task": "worker.tasks.reconcile",
            "schedule": policy,
            "options": {"expires": policy},
        },
        # Every policy interval: a freed slot goes to the oldest queued session within one
        # interval, and a session past its queue timeout is failed, never left waiting.
        "start-queued": {
            "task": "worker.tasks.start_queued",
            "schedule": policy,
            "options": {"expires": policy},
        },
    }
