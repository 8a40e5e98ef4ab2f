"""Rebuild: the inbox is the source of truth, and re-deriving from it gives the same answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID, INSTANCE, Signer, ingest
from tests.worker.conversation import conversation
from tests.worker.sessions.test_transcripts import snapshot
from worker.db import make_sessionmaker, session_scope, utcnow
from worker.inbox.drain import drain_until_done
from worker.models import Round, Session
from worker.sessions.rebuild import rebuild
from worker.settings import Settings


def test_rebuild_gives_the_same_sessions_and_transcripts(clean_engine: Engine, settings: Settings) -> None:
    """After `roomwarden rebuild` every session, instance and turn reads exactly as before."""
    factory = make_sessionmaker(clean_engine)
    signer = Signer()
    with session_scope(factory) as db:
        ingest(db, conversation(signer))
        ingest(db, [Signer().callback("ASRResult", instance="7000000000000000001")])
    assert rebuild(factory, settings) == 23
    with session_scope(factory) as db:
        before = snapshot(db)
        assert len(before["turns"]) == 6
    assert rebuild(factory, settings) == 23
    with session_scope(factory) as db:
        assert snapshot(db) == before


def test_rebuild_counts_turns_and_marks_rounds_as_the_drain_did(
    clean_engine: Engine, settings: Settings
) -> None:
    """Turn counts and per-Round marks are derived state too: a rebuild lands on the same ones."""
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        ingest(db, conversation(Signer()))
    drain_until_done(factory, [(APP_ID, INSTANCE)], settings=settings)

    def derived() -> tuple[list[Any], list[Any]]:
        with session_scope(factory) as db:
            counts = db.execute(
                select(Session.user_turns, Session.agent_turns, Session.interrupted_turns)
            ).all()
            marks = db.execute(select(Round.round, Round.agent_speaking_at, Round.first_llm_ts)).all()
        return sorted(counts), sorted(marks)

    drained = derived()
    assert drained[0] == [(3, 3, 1)]
    assert len(drained[1]) == 3
    assert rebuild(factory, settings) == 22
    assert derived() == drained
    # A session started through roomwarden keeps its row: its counts start again, not add up.
    with session_scope(factory) as db:
        db.execute(update(Session).values(origin="api"))
    assert rebuild(factory, settings) == 22
    assert derived() == drained


@pytest.mark.slow
def test_rebuild_is_refused_while_a_worker_runs_and_goes_ahead_once_it_stops(
    clean_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    """A drain racing the wipe would apply callbacks twice: no rebuild until every worker is gone."""
    from tests.conftest import REDIS_URL
    from tests.processes import Stack, stack_env, wait_until
    from worker.jobs import presence
    from worker.sessions.rebuild import WorkersRunning

    factory = make_sessionmaker(clean_engine)
    stack = Stack(tmp_path, stack_env(database_url, REDIS_URL))

    def running() -> list[str]:
        with session_scope(factory) as db:
            return presence.live(db, now=utcnow())

    stack.worker.start()
    try:
        wait_until(lambda: bool(running()), 30, "the worker to announce itself")
        with pytest.raises(WorkersRunning, match="stop every worker first") as refused:
            rebuild(factory, Settings(database_url=database_url))
        assert refused.value.nodes == running()
    finally:
        stack.stop()
    assert running() == []  # a worker stopped the usual way withdraws at once
    rebuild(factory, Settings(database_url=database_url))


def test_a_killed_worker_holds_up_a_rebuild_only_until_its_presence_expires(db: DbSession) -> None:
    from worker.jobs import presence

    now = utcnow()
    presence.renew(db, "celery@host-a", now=now)
    assert presence.live(db, now=now) == ["celery@host-a"]
    later = now + dt.timedelta(seconds=presence.TTL_SECONDS + 1)
    assert presence.live(db, now=later) == []
