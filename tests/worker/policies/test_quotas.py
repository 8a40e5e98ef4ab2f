"""Quotas on the real databases: the 11th agent waits in line or makes room, and is never lost."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session as DbSession

from emulator import Emulator
from tests.emulator_fixture import instance_body
from tests.factories import APP_ID, Signer, ingest
from tests.worker.policies.conftest import settings_against
from tests.worker.policies.rows import live_session
from worker.db import make_sessionmaker, session_scope, utcnow
from worker.inbox.drain import drain_until_done
from worker.jobs.context import JobContext
from worker.models import (
    COZE_APP_ID,
    ActionState,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
    SessionState,
)
from worker.policies import quotas
from worker.policies.config import parse
from worker.sessions import requesting, starting
from worker.settings import Settings

BOOK = parse("")


def requested(db: DbSession, n: int = 99, *, provider: Provider = Provider.ZEGO) -> Session:
    """A session just requested through the API, as POST /v1/sessions leaves it."""
    params = instance_body(n)
    request = requesting.SessionRequest(provider, APP_ID, params)
    return requesting.request_session(db, request, session_id=str(uuid.uuid4()), sealer=None, now=utcnow())


def running(db: DbSession, count: int, **values: object) -> list[Session]:
    return [live_session(db, quiet_for=10 + i, **values)[0] for i in range(count)]  # type: ignore[arg-type]


def test_the_eleventh_agent_is_queued_and_the_tenth_goes(db: DbSession) -> None:
    """With ten agents running the next session is queued, not sent to ZEGO to be refused."""
    running(db, 9)
    tenth = requested(db, 10)
    assert quotas.admit(db, tenth.id, BOOK, utcnow()).go
    starting.claim_start(db, tenth.id, sealer=None, now=utcnow(), stale_after=60)  # in flight
    eleventh = requested(db, 11)
    admission = quotas.admit(db, eleventh.id, BOOK, utcnow())
    assert (admission.go, admission.queued, admission.reason) == (False, True, "quota")
    assert eleventh.state == SessionState.QUEUED and eleventh.queued_at is not None


def test_digital_humans_are_counted_apart_from_voice_agents(db: DbSession) -> None:
    """Ten voice agents do not stop a digital human from starting."""
    running(db, 10)
    human = requested(db, provider=Provider.ZEGO_DIGITAL_HUMAN)
    assert quotas.admit(db, human.id, BOOK, utcnow()).go


def test_recycle_idle_makes_room_by_ending_the_longest_idle_session(db: DbSession) -> None:
    """when_full = recycle_idle: the quietest session gets a RECYCLE (reason quota); the new one waits."""
    book = parse(f'[apps.{APP_ID}.quota]\nwhen_full = "recycle_idle"\n')
    sessions = running(db, 10)
    quietest = sessions[-1]
    waiting = requested(db)
    admission = quotas.admit(db, waiting.id, book, utcnow())
    assert admission.queued and len(admission.actions) == 1
    action = db.get(PolicyAction, admission.actions[0][0])
    assert action is not None
    assert (action.session_id, action.kind, action.reason, action.state) == (
        quietest.id, "recycle", "quota", ActionState.PENDING,
    )  # fmt: skip
    assert quietest.policy_reason == "quota"
    assert action.inputs["for_session"] == waiting.id


def test_a_queued_session_starts_when_a_slot_frees_in_order(db: DbSession) -> None:
    """The first in line gets the first free slot; the next one keeps waiting."""
    sessions = running(db, 10)
    first, second = requested(db, 1), requested(db, 2)
    now = utcnow()
    quotas.admit(db, first.id, BOOK, now)
    quotas.admit(db, second.id, BOOK, now + dt.timedelta(seconds=1))
    assert quotas.dequeue(db, BOOK, now) == []
    sessions[0].instances[0].state = "deleted"
    db.flush()
    assert quotas.dequeue(db, BOOK, now) == [first.id]
    assert first.state == SessionState.STARTING and first.queued_at is not None
    assert second.state == SessionState.QUEUED
    # The freed slot is spoken for until the start lands: the next beat lets no one else in.
    assert quotas.dequeue(db, BOOK, now) == []
    assert quotas.admit(db, first.id, BOOK, now).go


def test_a_new_session_does_not_jump_the_queue(db: DbSession) -> None:
    """Someone already waiting goes first, even if a slot frees just as a new session arrives."""
    sessions = running(db, 10)
    waiting = requested(db, 1)
    quotas.admit(db, waiting.id, BOOK, utcnow())
    sessions[0].instances[0].state = "deleted"
    newcomer = requested(db, 2)
    assert quotas.admit(db, newcomer.id, BOOK, utcnow()).queued


def test_a_session_queued_too_long_fails_with_queue_timeout(db: DbSession) -> None:
    """Past quota.queue_timeout_seconds the session fails visibly, reason queue_timeout."""
    running(db, 10)
    waiting = requested(db)
    quotas.admit(db, waiting.id, BOOK, utcnow())
    assert quotas.dequeue(db, BOOK, utcnow() + dt.timedelta(seconds=601)) == []
    assert (waiting.state, waiting.end_reason) == (SessionState.FAILED, "queue_timeout")


def coze_session(db: DbSession, *, provisioned_ago: float | None, user: str = "u1") -> Session:
    now = utcnow()
    session = Session(
        id=str(uuid.uuid4()), app_id=COZE_APP_ID, origin="api", provider=Provider.COZE,
        state=SessionState.STARTING if provisioned_ago is None else SessionState.ACTIVE,
        user_id=user, agent_id="bot", created_at=now, start_attempts=0,
        provisioned_at=None if provisioned_ago is None else now - dt.timedelta(seconds=provisioned_ago),
    )  # fmt: skip
    db.add(session)
    db.flush()
    return session


def test_coze_room_creations_are_capped_per_minute(db: DbSession) -> None:
    """Over coze.rooms_per_minute the start is put off until the minute has room, not refused."""
    book = parse("[defaults.coze]\nrooms_per_minute = 2\n")
    coze_session(db, provisioned_ago=50)
    coze_session(db, provisioned_ago=10)
    new = coze_session(db, provisioned_ago=None, user="u2")
    admission = quotas.admit(db, new.id, book, utcnow())
    assert not admission.go and not admission.queued
    assert admission.retry_in is not None and 5 <= admission.retry_in <= 11
    assert new.state == SessionState.STARTING


def test_a_second_coze_room_for_the_same_user_and_bot_is_spotted(db: DbSession) -> None:
    """The cost guard finds the live room of the same user and bot, and no other."""
    live = coze_session(db, provisioned_ago=30)
    policy = BOOK.for_session(COZE_APP_ID, None)
    assert quotas.duplicate_coze_room(db, "u1", "bot", policy, utcnow()) is live
    assert quotas.duplicate_coze_room(db, "u2", "bot", policy, utcnow()) is None
    assert quotas.duplicate_coze_room(db, "u1", "other", policy, utcnow()) is None


# --- Through the start_session task, against the emulator's own quota. ---


@pytest.fixture
def emulated_settings(database_url: str, emulator_factory: Callable[..., Emulator]) -> Settings:
    """Settings pointed at an emulator whose account runs one voice agent at most."""
    return settings_against(database_url, emulator_factory(voice_quota=1))


def test_a_start_zego_refuses_for_quota_is_queued_then_started(
    clean_engine: Engine, emulated_settings: Settings, run_tasks_with: Callable[[JobContext], JobContext]
) -> None:
    """ZEGO's own limit is lower than configured: its 410000011 queues the session, which starts later."""
    from worker import tasks

    job = run_tasks_with(JobContext.from_settings(emulated_settings))
    factory = job.sessions
    other = job.vendors.zego_agent(APP_ID).create_agent_instance(instance_body(1))
    with session_scope(factory) as db:
        session_id = requested(db, 2).id

    assert tasks.start_session.run(session_id) == "queued"
    assert tasks.start_session.run(session_id) == "queued"  # a duplicate message changes nothing
    with session_scope(factory) as db:
        session = db.get_one(Session, session_id)
        assert session.state == SessionState.QUEUED and session.end_reason is None

    job.vendors.zego_agent(APP_ID).delete_agent_instance(other.agent_instance_id)
    with session_scope(factory) as db:
        assert quotas.dequeue(db, parse(""), utcnow()) == [session_id]
    assert tasks.start_session.run(session_id) == "started"
    with session_scope(factory) as db:
        assert db.get_one(Session, session_id).provisioned_at is not None


def test_a_start_s_log_fields_do_not_outlive_it(
    clean_engine: Engine, emulated_settings: Settings, run_tasks_with: Callable[[JobContext], JobContext]
) -> None:
    """After a start, the next line the worker process logs is not labelled with that session."""
    import structlog

    from worker import tasks

    job = run_tasks_with(JobContext.from_settings(emulated_settings))
    with session_scope(job.sessions) as db:
        session_id = requested(db, 3).id

    structlog.contextvars.clear_contextvars()
    assert tasks.start_session.run(session_id) == "started"
    left = structlog.contextvars.get_contextvars()
    assert not {"session_id", "provider"} & set(left), left


# --- A freed slot goes to the line at once. ---


def test_a_deletion_lets_the_first_in_line_start_without_waiting_for_the_beat(
    clean_engine: Engine, signer: Signer, settings: Settings
) -> None:
    """Ten agents run and a session waits in line. The drain that applies ZEGO's deletion of one of
    them asks for the line to move (once ZEGO has room, so may the user); the slot goes to the one
    waiting. A deletion with nobody in line asks nothing."""
    factory = make_sessionmaker(clean_engine)
    with session_scope(factory) as db:
        agents = [live_session(db, quiet_for=10, instance=f"19121229184526417{i:02d}")[1] for i in range(11)]
        agents[10].state = "deleted"  # one ended earlier: ten run
        waiting = requested(db, 11).id
        assert quotas.admit(db, waiting, BOOK, utcnow()).queued
    woken: list[str] = []

    def deleted_by_zego(agent: AgentInstance) -> None:
        with session_scope(factory) as db:
            ingest(db, [signer.callback("AgentInstanceDeleted", instance=agent.agent_instance_id)])
        stream = (APP_ID, agent.agent_instance_id)
        drain_until_done(factory, [stream], settings=settings, on_slot_freed=lambda: woken.append("wake"))

    deleted_by_zego(agents[0])
    assert woken == ["wake"]
    with session_scope(factory) as db:
        assert quotas.dequeue(db, BOOK, utcnow()) == [waiting]

    deleted_by_zego(agents[1])
    assert woken == ["wake"]  # the line is empty: nothing to move
