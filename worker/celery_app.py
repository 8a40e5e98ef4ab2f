"""The Celery application. Celery is confined to this module, tasks.py and schedule.py.

Tasks are idempotent by construction (see drain.py), which is what makes ``acks_late`` with
``reject_on_worker_lost`` safe: a worker killed mid-task leaves its message to be redelivered,
and the redelivery finds the work either committed or not, never half done.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import structlog
from celery import Celery
from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from worker.db import private_sqlite_file
from worker.logging import configure_logging
from worker.schedule import JOBS_QUEUE, beat_schedule
from worker.settings import ProductionMisconfigured, get_settings, require_production

QUEUE = "roomwarden"
# Deliveries to the app's endpoints have their own queue and workers (Procfile "outbound"):
# endpoints that are slow or down then cost those workers' time, never a drain's.
OUTBOUND_QUEUE = "roomwarden.outbound"
ROUTES = {
    "worker.tasks.deliver_endpoint": {"queue": OUTBOUND_QUEUE},
    # Sent by drains, a job like the beat's: not behind the drain messages it would wait for.
    "worker.tasks.start_freed_slots": {"queue": JOBS_QUEUE},
}


def broker_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith(("sqla+", "sqlalchemy+")):
        # kombu passes these to create_engine for its SQLite file, shared by receiver and worker.
        return {"connect_args": {"timeout": 30}}
    if broker_url.startswith(("redis", "rediss")):
        # Fail fast when Redis is away: the receiver answers anyway and the sweeper re-enqueues.
        # No ack emulation: the inbox in the database is the queue of record and a drain message
        # is only a wake-up call, so a message lost with a dead worker costs one sweep interval.
        # kombu's unacked bookkeeping would add two writes per message, and its restore path
        # crashes the worker when the connection drops mid-task (seen with kombu 5.7 here).
        return {"socket_connect_timeout": 2, "socket_timeout": 5, "ack_emulation": False}
    return {}


def create_celery() -> Celery:
    settings = get_settings()
    private_sqlite_file(settings.broker_url)
    app = Celery("roomwarden", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_routes=ROUTES,
        broker_transport_options=broker_options(settings.broker_url),
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="worker.schedule:LeasedScheduler",  # in memory: no state on the host's disk
        timezone="UTC",
    )
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        from kombu.transport import sqlalchemy as kombu_sqla

        # The virtual transport polls its table; a second is too slow for a demo to feel live.
        kombu_sqla.Transport.polling_interval = 0.2
    return app


app = create_celery()


@setup_logging.connect
def _configure_logging(**_kwargs: Any) -> None:
    configure_logging(get_settings())


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    # Every line a task logs names it; whatever an earlier task left behind is gone first.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_kwargs: Any) -> None:
    structlog.contextvars.clear_contextvars()


@worker_init.connect
@beat_init.connect
def _check_configuration(**_kwargs: Any) -> None:
    # A mistake in the policy file stops the worker and beat at start-up, naming the key,
    # instead of surfacing at the first deletion callback.
    from worker.policies.config import PolicyError, book_for

    settings = get_settings()
    try:
        require_production(settings, serves_api=False)
        book_for(settings.policies_file)
    except (PolicyError, ProductionMisconfigured) as exc:
        raise SystemExit(f"roomwarden: {exc}") from None  # Celery logs and swallows an Exception
    if settings.production and settings.rate_limit_url() is None:
        structlog.get_logger(__name__).warning(
            "rate_limits_per_process",
            detail="no Redis configured (ROOMWARDEN_REDIS_URL): vendor rate limits are per process",
        )


@worker_process_init.connect
def _start_process(**_kwargs: Any) -> None:
    # The job context once per pool process, after the fork: no connection crosses it.
    from worker import tracing
    from worker.jobs import context

    tracing.configure("worker")  # before the context's engine is made: its SQL is traced too
    context.install(context.JobContext.from_settings(get_settings()))
    # Long-lived objects out of the collector's sight: no full-collection pauses mid-drain.
    gc.collect()
    gc.freeze()


_presence: Any = None


@worker_ready.connect
def _announce(sender: Any = None, **_kwargs: Any) -> None:
    # Lets `roomwarden rebuild` see that workers are running (worker/jobs/presence.py).
    global _presence
    from worker.jobs.presence import Heartbeat

    settings = get_settings()
    # The node name and the pid: two hosts (or containers) can share a host name.
    node = f"{getattr(sender, 'hostname', None) or 'worker'}/{os.getpid()}"
    _presence = Heartbeat(settings.database_url, node)
    _presence.start()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        from worker.metrics import events_registry

        start_http_server(settings.metrics_port, addr=settings.host, registry=events_registry())


@worker_shutdown.connect
def _withdraw(**_kwargs: Any) -> None:
    if _presence is not None:
        _presence.stop()
