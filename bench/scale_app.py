"""roomwarden's own Celery app, plus a stopwatch on its tasks, for ``bench/scale``'s workers.

``bench/scale`` reports how long each beat job runs per interval with 10,000 live sessions.
Celery logs "Task ... succeeded in Xs" only at INFO, where the worker also logs every drain
(which would cost the very CPU being measured); so the worker runs this module instead of
``worker.celery_app``: the same app object, the same tasks and settings, and signal handlers
that push (job, start, seconds, CPU seconds, state, result) to a Redis list on the bench's
broker for every beat job (named in ``worker.schedule.beat_schedule``) and every drain, and
(job, time, -1, 0, "EXPIRED" or "REVOKED", None) for a beat job that expired in the queue
before a worker took it: a job starved by long drains never runs, which a stopwatch on the
runs alone would not show.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from celery.signals import task_postrun, task_prerun, task_revoked

from worker.celery_app import app
from worker.schedule import beat_schedule
from worker.settings import get_settings

__all__ = ["KEY", "app"]

KEY = "bench:scale:beat"
JOBS = {entry["task"]: name for name, entry in beat_schedule(get_settings()).items()}
JOBS["worker.tasks.drain"] = "drain"

_started: dict[str, tuple[float, float, float]] = {}
_client: list[redis.Redis] = []


@task_prerun.connect  # type: ignore[untyped-decorator]
def _start(task_id: str = "", task: Any = None, **_kwargs: Any) -> None:
    if getattr(task, "name", None) in JOBS:
        _started[task_id] = (time.time(), time.perf_counter(), time.process_time())


@task_postrun.connect  # type: ignore[untyped-decorator]
def _stop(task_id: str = "", task: Any = None, retval: Any = None, state: str = "", **_kwargs: Any) -> None:
    began = _started.pop(task_id, None)
    if began is None:
        return
    wall, counter, cpu = began
    if isinstance(retval, dict):  # drain: its totals
        retval = retval.get("applied")
    result = retval if isinstance(retval, int | float) else None
    _push([JOBS[task.name], wall, time.perf_counter() - counter, time.process_time() - cpu, state, result])


@task_revoked.connect  # type: ignore[untyped-decorator]
def _revoked(sender: Any = None, expired: bool = False, **_kwargs: Any) -> None:
    name = getattr(sender, "name", None)
    if name in JOBS:
        _push([JOBS[name], time.time(), -1.0, 0.0, "EXPIRED" if expired else "REVOKED", None])


def _push(record: list[Any]) -> None:
    if not _client:
        _client.append(redis.Redis.from_url(get_settings().broker_url))
    _client[0].rpush(KEY, orjson.dumps(record))
