"""A Postgres outage, end to end through real processes on a private Postgres and Redis.

None lost, none doubled: callbacks refused with 503 while the database is down are stored when
ZEGO retries them, and a drain cut off by the outage is applied once when the database is back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.factories import Signer
from tests.processes import PostgresServer, RedisServer, Stack, stack_env, wait_until
from tests.test_pipeline import assert_conversation_applied_once, count, post_all
from tests.worker.conversation import conversation
from worker.db import make_engine
from worker.models import InboxCallback

pytestmark = pytest.mark.slow

# ZEGO retries a refused callback for about a minute; the receiver must take it well within that.
RETRY_WITHIN_SECONDS = 30


@pytest.fixture
def private_engine(private_postgres: PostgresServer) -> Iterator[Engine]:
    engine = make_engine(private_postgres.url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def stack(tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer) -> Iterator[Stack]:
    env = stack_env(private_postgres.url, private_redis.url)
    stack = Stack(tmp_path, env)
    try:
        yield stack
    finally:
        stack.stop()


@contextmanager
def logs_on_failure(stack: Stack, postgres: PostgresServer) -> Iterator[None]:
    try:
        yield
    except BaseException:
        sys.stdout.write(f"{stack.logs()}\n--- {postgres.name}\n{postgres.output()[-4000:]}\n")
        raise


def assert_alive(stack: Stack) -> None:
    for process in (stack.receiver, stack.worker, stack.beat):
        assert process.proc is not None and process.proc.poll() is None, f"{process.name} exited"


def post_as_zego_retries(stack: Stack, callbacks: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Post each callback, again after every 503, until it is taken or the retry window is over."""
    deadline = time.monotonic() + RETRY_WITHIN_SECONDS
    statuses, refused = [], 0
    with httpx.Client(base_url=stack.url, timeout=15) as client:
        for callback in callbacks:
            answer = client.post("/callbacks/zego", json=callback)
            while answer.status_code == 503 and time.monotonic() < deadline:
                refused += 1
                time.sleep(0.5)
                answer = client.post("/callbacks/zego", json=callback)
            ok = answer.status_code == 200
            statuses.append(answer.json()["status"] if ok else f"{answer.status_code} {answer.text}")
    return statuses, refused


def test_callbacks_refused_while_postgres_is_down_are_stored_on_retry_and_applied_once(
    stack: Stack, private_postgres: PostgresServer, private_engine: Engine
) -> None:
    """While Postgres is down callbacks get 503 and /readyz says so; ZEGO's retries afterwards are all applied once."""
    callbacks = conversation(Signer())
    half = len(callbacks) // 2
    first, second = callbacks[:half], callbacks[half:]
    stack.start_receiver()
    stack.worker.start()
    stack.beat.start()
    with logs_on_failure(stack, private_postgres):
        assert post_all(stack, first) == ["stored"] * half
        wait_until(
            lambda: count(private_engine, InboxCallback, InboxCallback.state == "done") == half,
            30,
            "the first half to be applied",
        )

        private_postgres.stop()
        with httpx.Client(base_url=stack.url, timeout=15) as client:
            answers = [client.post("/callbacks/zego", json=callback) for callback in second]
            assert [a.status_code for a in answers] == [503] * len(second), [a.text for a in answers]
            assert {a.json()["error"] for a in answers} == {"storage_unavailable"}
            ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"] != "ok", ready.text
        assert ready.json()["checks"]["broker"] == "ok", ready.text
        time.sleep(2)  # a few sweeps meet the dead database in the worker
        assert_alive(stack)

        private_postgres.start()  # same port, same data directory
        statuses, refused = post_as_zego_retries(stack, second)
        assert statuses == ["stored"] * len(second), f"{statuses} ({refused} answers were 503)"
        assert httpx.get(f"{stack.url}/readyz", timeout=15).status_code == 200
        assert_conversation_applied_once(private_engine, stack, len(callbacks))
        assert_alive(stack)


def test_a_drain_cut_off_by_a_postgres_outage_is_applied_once_when_it_is_back(
    stack: Stack, private_postgres: PostgresServer, private_engine: Engine
) -> None:
    """Postgres going down in the middle of a worker's drain loses nothing: the worker applies it all once when it is back."""
    callbacks = conversation(Signer())
    stack.start_receiver()
    stack.beat.start()
    with logs_on_failure(stack, private_postgres):
        assert post_all(stack, callbacks) == ["stored"] * len(callbacks)

        # Hold the worker's drain just before it commits: its turns are written in its transaction
        # but the inbox rows cannot be marked done while another transaction locks the inbox.
        with private_engine.connect() as holder:
            holder.execute(text("LOCK TABLE inbox IN SHARE ROW EXCLUSIVE MODE"))
            holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()

            def drain_is_waiting() -> bool:
                with private_engine.connect() as probe:
                    waiting = probe.execute(
                        text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                        {"pid": holder_pid},
                    ).scalar_one()
                return bool(waiting)

            stack.worker.start()
            wait_until(drain_is_waiting, 30, "the worker's drain to wait on the inbox lock")
            assert count(private_engine, InboxCallback, InboxCallback.state == "done") == 0

            private_postgres.stop()  # ends the drain's transaction, and the holder's
            holder.invalidate()
        time.sleep(3)  # the drain's retries and a few sweeps meet the dead database
        assert_alive(stack)

        private_postgres.start()
        assert_conversation_applied_once(private_engine, stack, len(callbacks))
        assert_alive(stack)


def test_the_first_callbacks_after_a_quiet_database_restart_are_stored_at_once(
    stack: Stack, private_postgres: PostgresServer, private_engine: Engine
) -> None:
    """A restart while nothing arrives costs no refusal: writers replace their dead connections."""
    callbacks = conversation(Signer())
    with logs_on_failure(stack, private_postgres):
        stack.start_receiver()
        # Enough concurrent callbacks that every writer holds a connection.
        assert post_all(stack, callbacks[:8]) == ["stored"] * 8
        private_postgres.stop()
        private_postgres.start()
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            answers = [client.post("/callbacks/zego", json=cb) for cb in callbacks[8:12]]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert count(private_engine, InboxCallback) == 12
