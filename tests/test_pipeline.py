"""End to end through real processes: receiver, Celery worker and beat, Redis, Postgres.

None lost, none doubled: whether the worker or the broker was away when callbacks arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as DbSession

from tests.conftest import API_TOKEN
from tests.factories import APP_ID, INSTANCE, Signer
from tests.processes import RedisServer, Stack, stack_env, wait_until
from tests.worker.conversation import EXPECTED_TURNS, conversation
from worker.models import AgentException, InboxCallback, Turn
from worker.sessions import transcripts
from worker.sessions.lifecycle import session_id_for

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres(database_url: str, clean_engine: Engine) -> Engine:
    if not database_url.startswith("postgresql"):
        pytest.skip("the production pipeline runs on Postgres; the embedded one is covered by the CLI test")
    return clean_engine


@pytest.fixture
def stack(tmp_path: Path, database_url: str, postgres: Engine, private_redis: RedisServer) -> Iterator[Stack]:
    env = stack_env(database_url, private_redis.url)
    stack = Stack(tmp_path, env)
    yield stack
    stack.stop()


def post_all(stack: Stack, callbacks: list[dict[str, Any]]) -> list[str]:
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        answers = [client.post("/callbacks/zego", json=cb) for cb in callbacks]
    assert [a.status_code for a in answers] == [200] * len(callbacks), [a.text for a in answers]
    return [a.json()["status"] for a in answers]


def count(engine: Engine, model: Any, *where: Any) -> int:
    with DbSession(engine) as db:
        return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def assert_conversation_applied_once(engine: Engine, stack: Stack, total: int) -> None:
    def all_done() -> bool:
        return count(engine, InboxCallback, InboxCallback.state == "done") == total

    try:
        wait_until(all_done, 60, f"{total} callbacks to be applied")
    except AssertionError:
        raise
    assert count(engine, InboxCallback) == total
    assert count(engine, AgentException) == 1
    assert count(engine, Turn) == len(EXPECTED_TURNS)
    with DbSession(engine) as db:
        turns = transcripts.transcript(db, session_id_for(APP_ID, INSTANCE))
    assert [t.text for t in turns] == EXPECTED_TURNS
    response = httpx.get(
        f"{stack.url}/v1/sessions/{INSTANCE}", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert response.json()["state"] == "ended"


def test_callbacks_posted_while_the_worker_is_stopped_are_all_applied_once_it_starts(
    stack: Stack, postgres: Engine
) -> None:
    """With no worker running, callbacks are acknowledged and kept; a worker started later applies each once."""
    signer = Signer()
    callbacks = conversation(signer)
    retries = [dict(callbacks[3]), signer.resign(callbacks[7], timestamp=callbacks[7]["Timestamp"])]
    stack.start_receiver()
    statuses = post_all(stack, callbacks + retries)
    assert statuses.count("stored") == len(callbacks)
    assert statuses.count("duplicate") == 2
    assert count(postgres, InboxCallback, InboxCallback.state == "pending") == len(callbacks)
    assert count(postgres, Turn) == 0

    stack.worker.start()
    assert_conversation_applied_once(postgres, stack, len(callbacks))

    # The same drain delivered again (a redelivered message) changes nothing.
    from worker.tasks import drain

    with DbSession(postgres) as db:
        before = [t.as_dict() for t in transcripts.transcript(db, session_id_for(APP_ID, INSTANCE))]
    result = drain.run([[APP_ID, INSTANCE]])
    assert result == {"applied": 0, "retrying": 0, "parked": 0}
    with DbSession(postgres) as db:
        after = [t.as_dict() for t in transcripts.transcript(db, session_id_for(APP_ID, INSTANCE))]
    assert after == before


def test_callbacks_posted_while_redis_is_down_are_all_applied_once_it_is_back(
    stack: Stack, postgres: Engine, private_redis: RedisServer
) -> None:
    """With the broker down the receiver still answers 200; once Redis is back every callback is applied once."""
    callbacks = conversation(Signer())
    stack.start_receiver()
    stack.worker.start()
    stack.beat.start()
    half = len(callbacks) // 2
    post_all(stack, callbacks[:half])
    wait_until(
        lambda: count(postgres, InboxCallback, InboxCallback.state == "done") == half, 30, "first half"
    )

    private_redis.stop()
    assert post_all(stack, callbacks[half:]) == ["stored"] * (len(callbacks) - half)
    assert count(postgres, InboxCallback, InboxCallback.state == "pending") == len(callbacks) - half

    private_redis.start()  # same port, empty: every message published before the outage is gone
    assert_conversation_applied_once(postgres, stack, len(callbacks))
