"""A Celery app whose one task does nothing but count itself: the yardstick for ``bench/pipeline``.

It runs on the same broker with the same worker flags and the same delivery settings as the real
worker (copied from ``worker.celery_app`` rather than restated, so the two cannot drift apart):
``acks_late``, reject on worker loss, prefetch multiplier 1. What is left is Celery's own cost
per task, which is what a callback pipeline that enqueued one task per callback would pay.

The count lives in Redis: one INCR per task, and the times of the first and last completion,
so the rate does not include the worker's start-up.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from worker.celery_app import app as real_app

QUEUE = "bench_noop"
COUNTER = "bench:noop:done"
FIRST = "bench:noop:first"
LAST = "bench:noop:last"

# Everything about delivery and serialisation; not the queue, the schedule or the task modules.
SHARED_CONF = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "task_ignore_result",
    "task_serializer",
    "accept_content",
    "broker_transport_options",
    "broker_connection_timeout",
    "broker_connection_retry_on_startup",
    "worker_send_task_events",
    "worker_hijack_root_logger",
)

BROKER_URL = os.environ.get("ROOMWARDEN_BROKER_URL", "redis://127.0.0.1:6379/13")

app = Celery("bench_noop", broker=BROKER_URL)
app.conf.update({key: real_app.conf[key] for key in SHARED_CONF}, task_default_queue=QUEUE)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    """One client per process, made after the pool has forked."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER_URL)
    return _client


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(total: int) -> None:
    client = _redis()
    done = client.incr(COUNTER)
    if done == 1:
        client.set(FIRST, repr(time.time()))
    if done == total:
        client.set(LAST, repr(time.time()))
