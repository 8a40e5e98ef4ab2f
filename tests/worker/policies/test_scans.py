"""Scans on the real databases: idle recycling, maximum length, reconciliation against the emulator."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as DbSession

from emulator import Emulator
from emulator.control import EmulatorControl
from tests.emulator_fixture import instance_body
from tests.factories import APP_ID
from tests.processes import wait_until
from tests.worker.policies.rows import live_session
from worker.db import session_scope, sessions_for, utcnow
from worker.jobs.context import JobContext
from worker.models import (
    COZE_APP_ID,
    ActionKind,
    ActionState,
    AgentInstance,
    JobLock,
    PolicyAction,
    Provider,
    Session,
    SessionState,
    Turn,
)
from worker.policies import scans
from worker.policies.config import PolicyBook, parse
from worker.vendors.clients import Vendors
from worker.vendors.ratelimit import LocalLimiter

BOOK = parse("[defaults.idle]\nafter_seconds = 600\n[defaults.max_length]\nseconds = 3600\n")


def actions_of(db: DbSession, session: Session) -> list[PolicyAction]:
    return list(db.scalars(select(PolicyAction).where(PolicyAction.session_id == session.id)))


def test_an_idle_session_is_recycled_once_and_not_before_its_threshold(db: DbSession) -> None:
    """Ten minutes of silence: one RECYCLE (idle) is recorded; a second beat adds nothing."""
    now = utcnow()
    quiet, _ = live_session(db, quiet_for=599)
    idle, agent = live_session(db, quiet_for=601, started_ago=900)
    recorded = scans.recycle_idle(db, BOOK, now)
    assert [a.session_id for a in recorded] == [idle.id]
    action = recorded[0]
    assert (action.kind, action.reason, action.policy, action.state) == ("recycle", "idle", "idle", "pending")
    assert action.agent_instance_id == agent.agent_instance_id
    assert idle.policy_reason == "idle" and quiet.policy_reason is None
    assert scans.recycle_idle(db, BOOK, now + dt.timedelta(seconds=5)) == []
    assert len(actions_of(db, idle)) == 1


def test_a_session_whose_speech_roomwarden_cannot_hear_is_not_called_idle(db: DbSession) -> None:
    """Without ASRResult/UserSpeakAction callbacks silence proves nothing: the agent is left alone."""
    session, _ = live_session(db, origin="callback", quiet_for=None, started_ago=5000)
    assert scans.recycle_idle(db, BOOK, utcnow()) == []
    assert session.policy_reason is None


def test_a_user_out_of_the_room_makes_the_session_idle_even_unheard(db: DbSession) -> None:
    """No speech callbacks, but the room callbacks say the user left 601 s ago: recycled as idle,
    with the absence and ZEGO's logout reason in its inputs. A user still in the room is left be."""
    now = utcnow()
    gone, _ = live_session(db, origin="callback", quiet_for=None, started_ago=5000)
    gone.user_present, gone.user_logout_reason = False, "1"
    gone.user_absent_since = now - dt.timedelta(seconds=601)
    there, _ = live_session(db, origin="callback", quiet_for=None, started_ago=5000)
    there.user_present = True
    db.flush()
    [action] = scans.recycle_idle(db, BOOK, now)
    assert (action.session_id, action.kind, action.reason) == (gone.id, "recycle", "idle")
    assert action.inputs["logout_reason"] == "1" and action.inputs["absent_seconds"] >= 601
    assert scans.recycle_idle(db, BOOK, now + dt.timedelta(seconds=5)) == []


def test_a_recreated_agent_starts_a_fresh_idle_clock(db: DbSession) -> None:
    """The outage before a recreation is not counted as the user's silence."""
    session, agent = live_session(db, quiet_for=900, started_ago=1000)
    agent.created_at = utcnow() - dt.timedelta(seconds=100)
    policy = BOOK.for_session(APP_ID, None)
    assert scans.idle_decision(policy, session, agent, utcnow()) is None
    later = utcnow() + dt.timedelta(seconds=501)
    decision = scans.idle_decision(policy, session, agent, later)
    assert decision is not None and decision.inputs["quiet_since"] == agent.created_at.isoformat()


def test_a_session_past_its_maximum_length_is_recycled(db: DbSession) -> None:
    """An hour-long session gets a RECYCLE with reason max_length, even while the user talks."""
    young, _ = live_session(db, started_ago=3500, quiet_for=1)
    old, _ = live_session(db, started_ago=3700, quiet_for=1)
    recorded = scans.enforce_max_length(db, BOOK, utcnow())
    assert [(a.session_id, a.reason, a.trigger_key) for a in recorded] == [
        (old.id, "max_length", f"max_length:{old.id}")
    ]
    assert old.policy_reason == "max_length" and young.policy_reason is None


def test_templates_set_their_own_idle_threshold(db: DbSession) -> None:
    """A template's shorter idle threshold applies to its sessions only."""
    book = parse("[templates.kiosk.idle]\nafter_seconds = 60\n")
    kiosk, _ = live_session(db, template="kiosk", quiet_for=90)
    live_session(db, quiet_for=90)  # no template: the default 600 s
    assert [a.session_id for a in scans.recycle_idle(db, book, utcnow())] == [kiosk.id]


def test_a_dry_run_idle_policy_records_and_changes_nothing(db: DbSession) -> None:
    """Dry-run: the decision is shown as dry_run and the session carries on untouched."""
    book = parse("[defaults.idle]\nafter_seconds = 60\ndry_run = true\n")
    session, _ = live_session(db, quiet_for=120)
    [action] = scans.recycle_idle(db, book, utcnow())
    assert action.state == ActionState.DRY_RUN and action.dry_run
    assert session.policy_reason is None and session.state == SessionState.ACTIVE
    assert scans.recycle_idle(db, book, utcnow()) == []  # shown once, not every beat


def test_coze_rooms_past_their_lifetime_are_ended_as_reconciled(db: DbSession) -> None:
    """A Coze room older than coze.max_room_seconds is taken as gone: ended, reason reconciled."""
    now = utcnow()
    rooms = []
    for age in (3000, 3700):
        session = Session(
            id=str(uuid.uuid4()), app_id=COZE_APP_ID, origin="api", state=SessionState.ACTIVE,
            provider=Provider.COZE, user_id="u", agent_id="bot", room_id=f"r{age}",
            created_at=now - dt.timedelta(seconds=age), started_at=now - dt.timedelta(seconds=age),
            provisioned_at=now - dt.timedelta(seconds=age), start_attempts=1,
        )  # fmt: skip
        room = AgentInstance(
            app_id=COZE_APP_ID, agent_instance_id=f"coze:r{age}", session_id=session.id, state="active",
            created_at=session.started_at, last_event_at=session.started_at,
        )  # fmt: skip
        db.add_all([session, room])
        rooms.append(session)
    db.flush()
    assert scans.coze_overdue(db, BOOK, now) == [rooms[1].id]
    assert (rooms[1].state, rooms[1].end_reason) == ("ended", "reconciled")
    assert rooms[0].state == "active"


# --- Reconciliation, asking the emulator over HTTP. ---


def running(
    db: DbSession, vendors: Vendors, *, silent_for: float, n: int = 1
) -> tuple[Session, AgentInstance]:
    """A session whose agent really runs in the emulator, last heard from ``silent_for`` seconds ago."""
    created = vendors.zego_agent(APP_ID).create_agent_instance(instance_body(n))
    session, agent = live_session(db, instance=created.agent_instance_id, started_ago=silent_for + 60)
    agent.last_event_at = utcnow() - dt.timedelta(seconds=silent_for)
    db.flush()
    return session, agent


def reconcile(db: DbSession, vendors: Vendors, book: PolicyBook, now: dt.datetime) -> list[PolicyAction]:
    """One beat of the reconcile task: suspects, ask, settle."""
    decided = []
    for suspect in scans.suspects(db, book, now):
        decided += scans.settle(db, suspect, scans.ask(suspect, vendors), book, now)
    db.flush()
    return decided


def test_a_quiet_agent_that_is_alive_is_checked_and_left_alone(db: DbSession, vendors: Vendors) -> None:
    """ZEGO says the silent agent is running: nothing changes, and it is not asked again at once."""
    session, agent = running(db, vendors, silent_for=200)
    fresh, _ = running(db, vendors, silent_for=10, n=2)
    now = utcnow()
    assert [s.session_id for s in scans.suspects(db, BOOK, now)] == [session.id]
    assert reconcile(db, vendors, BOOK, now) == []
    assert session.reconciled_at == now and agent.state == "active" and fresh.reconciled_at is None
    assert scans.suspects(db, BOOK, now + dt.timedelta(seconds=60)) == []
    later = {s.session_id for s in scans.suspects(db, BOOK, now + dt.timedelta(seconds=121))}
    assert later == {session.id, fresh.id}


def test_an_agent_whose_deletion_callback_was_lost_ends_the_session_as_reconciled(
    db: DbSession, vendors: Vendors, emulator: Emulator
) -> None:
    """The agent is gone at ZEGO but no callback came: the session ends with reason reconciled."""
    session, agent = running(db, vendors, silent_for=200)
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)  # callback never sent
    [action] = reconcile(db, vendors, BOOK, utcnow())
    assert (action.kind, action.reason, action.policy) == (ActionKind.END, "reconciled", "reconcile")
    assert action.inputs["seen"]["code"] == 410001002
    assert agent.state == "deleted" and agent.delete_code is None
    assert (session.state, session.end_reason) == (SessionState.ENDED, "reconciled")
    assert reconcile(db, vendors, BOOK, utcnow() + dt.timedelta(seconds=300)) == []


def test_a_lost_agent_is_recreated_when_the_policy_says_so(db: DbSession, vendors: Vendors) -> None:
    """on_lost = "recreate": the session is recovering, with a RECREATE waiting to run."""
    book = parse('[defaults.on_deleted]\non_lost = "recreate"\n')
    session, agent = running(db, vendors, silent_for=200)
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)
    [action] = reconcile(db, vendors, book, utcnow())
    assert (action.kind, action.reason) == (ActionKind.RECREATE, "reconciled")
    assert session.state == SessionState.RECOVERING and session.recovering_since is not None


def test_an_agent_never_confirmed_by_a_created_callback_is_asked_about(
    db: DbSession, vendors: Vendors
) -> None:
    """No AgentInstanceCreated a minute after the start: ZEGO is asked, and a gone agent ends it."""
    session, agent = running(db, vendors, silent_for=0)
    agent.state, agent.created_at, agent.last_event_at = "starting", None, None
    session.state = SessionState.STARTING
    session.provisioned_at = utcnow() - dt.timedelta(seconds=30)
    db.flush()
    assert scans.suspects(db, BOOK, utcnow()) == []
    session.provisioned_at = utcnow() - dt.timedelta(seconds=90)
    [suspect] = scans.suspects(db, BOOK, utcnow())
    assert suspect.why == "unconfirmed"
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)
    [action] = reconcile(db, vendors, BOOK, utcnow())
    assert action.reason == "reconciled" and session.end_reason == "reconciled"


def test_a_vendor_failure_is_not_taken_for_a_lost_agent(
    db: DbSession, vendors: Vendors, emulator: Emulator
) -> None:
    """ZEGO answering with an error proves nothing: the agent stays, and is asked again later."""
    session, agent = running(db, vendors, silent_for=200)
    emulator.control.api_fault("QueryAgentInstanceStatus", 410000005, count=1)  # auth failure
    assert reconcile(db, vendors, BOOK, utcnow()) == []
    assert agent.state == "active" and session.state == SessionState.ACTIVE
    assert session.reconciled_at is not None  # permanent: wait for the recheck interval


def test_dry_run_reconciliation_records_and_keeps_the_agent(db: DbSession, vendors: Vendors) -> None:
    """A dry-run reconcile policy shows it would end the session, and changes nothing."""
    book = parse("[defaults.reconcile]\ndry_run = true\n")
    session, agent = running(db, vendors, silent_for=200)
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)
    [action] = reconcile(db, vendors, book, utcnow())
    assert action.state == ActionState.DRY_RUN and action.reason == "reconciled"
    assert agent.state == "active" and session.state == SessionState.ACTIVE and session.policy_reason is None


def test_a_policy_end_whose_callback_was_lost_keeps_its_reason(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """A session being ended (by a policy) keeps that reason when reconciliation finds it gone."""
    session, agent = running(db, vendors, silent_for=200)
    session.policy_reason = "idle"
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)
    assert reconcile(db, vendors, BOOK, utcnow()) == []
    assert (session.state, session.end_reason) == (SessionState.ENDED, "idle")


@pytest.fixture
def control(emulator: Emulator) -> EmulatorControl:
    return emulator.control


def test_the_reconcile_and_idle_tasks_run_twice_to_the_same_end(
    clean_engine: Engine,
    vendors: Vendors,
    redis_client: redis.Redis,
    run_tasks_with: Callable[[JobContext], JobContext],
) -> None:
    """The beat's tasks, run twice: one lost agent ended, one idle session recycled, once each."""
    from worker import tasks

    job = JobContext(vendors.settings, sessions_for(vendors.settings.database_url), vendors, sealer=None)
    factory = run_tasks_with(job).sessions
    with session_scope(factory) as db:
        lost, agent = running(db, vendors, silent_for=200)
        idle, _ = live_session(db, quiet_for=700, started_ago=800)
        lost_id, idle_id = lost.id, idle.id
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)

    assert tasks.reconcile.run() == 1
    assert tasks.reconcile.run() == 0
    assert tasks.recycle_idle.run() == 1
    assert tasks.recycle_idle.run() == 0
    with session_scope(factory) as db:
        ended = db.get_one(Session, lost_id)
        assert (ended.state, ended.end_reason) == (SessionState.ENDED, "reconciled")
        reasons = sorted(db.scalars(select(PolicyAction.reason)))
        assert reasons == ["idle", "reconciled"]
        assert db.get_one(Session, idle_id).policy_reason == "idle"
        assert db.scalars(select(JobLock)).all() == []  # every lease given back


def test_a_session_nobody_started_is_asked_about_less_and_less_then_flagged(
    db: DbSession, vendors: Vendors, emulator: Emulator
) -> None:
    """Sessions seen only through callbacks, whose agents ZEGO cannot answer for (here every status
    query fails as if rate limited): each is asked at growing intervals and, after max_attempts,
    flagged for a person instead of being asked for ever. Six hours of beats, 8 queries each."""
    book = parse(
        "[defaults.reconcile]\nrecheck_seconds = 120\nmax_backoff_seconds = 3600\nmax_attempts = 8\n"
    )
    strangers = [
        live_session(db, origin="callback", instance=f"19{n:017d}", started_ago=600, quiet_for=None)[0]
        for n in range(3)
    ]
    for session in strangers:
        session.instances[0].last_event_at = utcnow() - dt.timedelta(seconds=300)
    db.flush()
    emulator.control.api_fault("QueryAgentInstanceStatus", 410000010, count=10_000)
    before = emulator.control.api_calls("QueryAgentInstanceStatus")
    start, asked_at = utcnow(), {s.id: [] for s in strangers}
    for beat in range(0, 6 * 3600, 30):
        now = start + dt.timedelta(seconds=beat)
        reconcile(db, vendors, book, now)
        for session in strangers:
            if session.reconciled_at == now:
                asked_at[session.id].append(beat)
    assert emulator.control.api_calls("QueryAgentInstanceStatus") - before == 3 * 8
    for session in strangers:
        times = asked_at[session.id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 8
        assert all(later >= earlier for earlier, later in itertools.pairwise(gaps)), gaps
        assert gaps[0] >= 120 and gaps[-1] >= 3600 - 30
        assert session.flag == scans.GAVE_UP and session.state == SessionState.ACTIVE


def test_an_app_without_a_server_secret_is_never_asked_about(
    db: DbSession, vendors: Vendors, emulator: Emulator
) -> None:
    """Without the app's server secret roomwarden cannot sign a query: it asks nothing, every beat."""
    session, _ = running(db, vendors, silent_for=200)
    before = emulator.control.api_calls("QueryAgentInstanceStatus")
    assert scans.suspects(db, BOOK, utcnow(), askable=lambda _app_id: False) == []
    assert [s.session_id for s in scans.suspects(db, BOOK, utcnow(), askable=lambda app: app == APP_ID)] == [
        session.id
    ]
    assert emulator.control.api_calls("QueryAgentInstanceStatus") == before


def test_an_answer_that_settles_the_session_resets_the_backoff(db: DbSession, vendors: Vendors) -> None:
    """Alive three times (waits double), then gone: the session ends and its count starts over."""
    session, agent = running(db, vendors, silent_for=200)
    now = utcnow()
    for _ in range(3):
        due = scans.next_ask(session, BOOK.for_session(session.app_id, None).reconcile) or now
        now = max(now, due)
        reconcile(db, vendors, BOOK, now)
    assert session.reconcile_attempts == 3
    assert scans.next_ask(session, BOOK.for_session(session.app_id, None).reconcile) == now + dt.timedelta(
        seconds=480
    )
    vendors.zego_agent(APP_ID).delete_agent_instance(agent.agent_instance_id)
    reconcile(db, vendors, BOOK, now + dt.timedelta(seconds=480))
    assert session.reconcile_attempts == 0 and session.end_reason == "reconciled"


def test_reconciling_uses_only_its_share_of_the_status_query_budget() -> None:
    """Reconciliation takes at most 30% of the 9/s paced QueryAgentInstanceStatus rate, never waits
    for a slot, and leaves the client's own budget (recreations check status first) untouched."""
    clock = [1000.0]
    limiter = LocalLimiter(clock=lambda: clock[0], sleep=lambda _s: None)
    taken = 0
    for _ in range(100):  # ten simulated seconds, asking every 0.1 s
        taken += scans.within_budget(limiter, APP_ID)
        clock[0] += 0.1
    assert 25 <= taken <= 29  # 2.7/s over 10 s
    limiter.acquire(f"zego:{APP_ID}:QueryAgentInstanceStatus", 9.0, 0.0)  # free, no RateLimitTimeout


def test_reconciling_a_quiet_agent_that_is_alive_fills_the_reply_its_callbacks_lost(
    clean_engine: Engine,
    vendors: Vendors,
    emulator: Emulator,
    redis_client: redis.Redis,
    run_tasks_with: Callable[[JobContext], JobContext],
) -> None:
    """The agent answered, but the reply's callbacks were lost and it has been quiet since: the
    reconcile beat finds it alive, reads its context, and the reply is in the transcript."""
    from worker import tasks

    job = JobContext(vendors.settings, sessions_for(vendors.settings.database_url), vendors, sealer=None)
    factory = run_tasks_with(job).sessions
    with session_scope(factory) as db:
        session, agent = running(db, vendors, silent_for=200)
        session_id, instance_id = session.id, agent.agent_instance_id
    round_ = emulator.control.say(instance_id, "Is the pool open?", ["Yes, until ten."])
    wait_until(
        lambda: len(vendors.zego_agent(APP_ID).get_agent_instance_msg_list(instance_id)) == 2, 10, "reply"
    )
    with session_scope(factory) as db:
        pk = db.scalars(select(AgentInstance.id).where(AgentInstance.agent_instance_id == instance_id)).one()
        db.add(
            Turn(
                session_id=session_id, instance_id=pk, round=round_, speaker="user", text="Is the pool open?"
            )
        )

    assert tasks.reconcile.run() == 1

    with session_scope(factory) as db:
        turns = db.scalars(select(Turn).where(Turn.session_id == session_id).order_by(Turn.speaker)).all()
        assert [(t.speaker, t.text, t.source) for t in turns] == [
            ("agent", "Yes, until ten.", "repaired"),
            ("user", "Is the pool open?", None),
        ]
        assert db.get_one(Session, session_id).state == SessionState.ACTIVE
