"""A task message the broker cannot take is logged and reported, never raised at the caller."""

from __future__ import annotations

import json
import socket

import redis
from celery import Celery
from structlog.testing import capture_logs

from worker.jobs.publish import publish


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broker_that_is_away_makes_publish_false_and_logs_which_task() -> None:
    """The row is committed already: the sweeper will find it, so the caller carries on."""
    away = Celery("away", broker=f"redis://127.0.0.1:{_closed_port()}/0")
    away.conf.update(broker_connection_timeout=1, broker_transport_options={"socket_connect_timeout": 1})

    @away.task(name="worker.tasks.drain")
    def drain(streams: list[list[int | str]]) -> None: ...

    with capture_logs() as logs:
        assert publish(drain, [[1, "i-1"]], argsrepr="<1 streams>") is False
    failed = [e for e in logs if e["event"] == "enqueue_failed"]
    assert failed and failed[0]["task"] == "drain"


def test_a_broker_that_is_there_takes_the_message(redis_client: redis.Redis) -> None:
    where = redis_client.connection_pool.connection_kwargs
    here = Celery("here", broker=f"redis://{where['host']}:{where['port']}/{where['db']}")

    @here.task(name="worker.tasks.run_action")
    def run_action(action_id: int) -> None: ...

    assert publish(run_action, 7, countdown=0.0) is True
    assert redis_client.llen("celery") == 1
    body = json.loads(redis_client.lindex("celery", 0) or b"{}")
    assert body["headers"]["task"] == "worker.tasks.run_action" and body["headers"]["argsrepr"] == "[7]"
