"""Every periodic job, in one place. Exactly one beat process runs these (see the Procfile)."""

from __future__ import annotations

from typing import Any

from worker.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
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
        # Hourly: user audio is personal data and is kept only for its retention period.
        "purge-user-audio": {
            "task": "worker.tasks.purge_user_audio",
            "schedule": 3600.0,
            "options": {"expires": 3600.0},
        },
    }
