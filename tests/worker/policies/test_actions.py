"""Policy actions carried out against the emulator over HTTP, on the real databases.

Each test starts a real agent in the emulator, files it as a session the way the API would,
records a decision, then runs claim / execute / finish (or the ``run_action`` task body).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as DbSession

from emulator.control import EmulatorControl
from tests.emulator_fixture import instance_body
from tests.factories import APP_ID
from tests.processes import wait_until
from worker.db import session_scope, utcnow
from worker.jobs.context import JobContext
from worker.models import ActionKind, ActionState, AgentInstance, PolicyAction, Provider, Session, Turn
from worker.policies import actions
from worker.policies.config import PolicyBook, parse
from worker.policies.decisions import Decision, deletion_key, record
from worker.sessions import requesting, starting
from worker.sessions.lifecycle import refresh
from worker.settings import Settings
from worker.vendors.clients import Vendors

STALE = 60.0


def live_session(
    db: DbSession, vendors: Vendors, control: EmulatorControl, *, n: int = 1, user_present: bool = True
) -> tuple[Session, str]:
    """An API session whose agent runs in room_<n> with user_<n> (in the room or not)."""
    params = instance_body(n)
    if user_present:
        control.join(f"room_{n}", f"user_{n}")
    created = vendors.zego_agent(APP_ID).create_agent_instance(params)
    now = utcnow()
    session = requesting.request_session(
        db,
        requesting.SessionRequest(Provider.ZEGO, APP_ID, params),
        session_id=str(uuid.uuid4()),
        sealer=None,
        now=now,
    )
    iid = created.agent_instance_id
    starting.record_started(
        db, session.id, starting.Started({"agent_instance_id": iid}, agent_instance_id=iid), now=now
    )
    instance(db, iid).state, instance(db, iid).created_at = "active", now
    session.started_at = now
    refresh(db, session, learned="policy")
    return session, iid


def instance(db: DbSession, agent_instance_id: str) -> AgentInstance:
    return db.scalars(select(AgentInstance).where(AgentInstance.agent_instance_id == agent_instance_id)).one()


def mark_deleted(db: DbSession, agent_instance_id: str, code: int) -> None:
    """What the drain does on AgentInstanceDeleted."""
    row = instance(db, agent_instance_id)
    row.state, row.delete_code, row.deleted_at = "deleted", code, utcnow()


def decide(db: DbSession, session: Session, kind: ActionKind, iid: str, **changes: Any) -> PolicyAction:
    values: dict[str, Any] = {
        "reason": "disconnected",
        "policy": "on_deleted",
        "trigger_key": deletion_key(APP_ID, iid),
        "dry_run": False,
        "agent_instance_id": iid,
        "recovering": kind in (ActionKind.RECREATE, ActionKind.AWAIT_USER),
    }
    values.update(changes)
    row = record(db, session, Decision(kind, **values), now=utcnow())
    assert row is not None
    refresh(db, session, learned="policy")
    return row


def run(
    db: DbSession,
    vendors: Vendors,
    action: PolicyAction,
    *,
    now: dt.datetime | None = None,
    max_attempts: int = 5,
    book: PolicyBook | None = None,
) -> tuple[actions.Outcome, list[tuple[int, float]]]:
    """One run of the action, as run_action does it; fails the test if it cannot be claimed."""
    now = now or utcnow()
    claimed = actions.claim(db, action.id, sealer=None, now=now, stale_after=STALE, book=book)
    assert claimed is not None
    outcome = actions.execute(claimed, vendors)
    follow_up = actions.finish(db, claimed, outcome, now=now, max_attempts=max_attempts)
    db.flush()
    return outcome, follow_up


def emulated(control: EmulatorControl, room_id: str) -> list[dict[str, Any]]:
    return [i for i in control.state()["instances"] if i["RoomId"] == room_id]


def session_instances(db: DbSession, session: Session) -> list[str]:
    query = select(AgentInstance.agent_instance_id).where(AgentInstance.session_id == session.id)
    return list(db.scalars(query.order_by(AgentInstance.id)))


def test_a_dropped_agent_is_recreated_in_the_same_room_for_the_same_session(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """After a 1205 the session gets a new agent in its room, once, however often the task runs."""
    session, old = live_session(db, vendors, control)
    control.rtc_fault(old, 1205)
    mark_deleted(db, old, 1205)
    action = decide(db, session, ActionKind.RECREATE, old)
    assert session.state == "recovering"

    outcome, follow_up = run(db, vendors, action)

    assert (outcome.state, follow_up, action.state) == ("done", [], ActionState.DONE)
    assert action.result is not None and action.result["seen"] == {"status": "GONE", "user_in_room": True}
    new = action.result["agent_instance_id"]
    assert session_instances(db, session) == [old, new]
    assert session.recovering_since is None and session.room_id == "room_1"
    running = [i for i in emulated(control, "room_1") if i["State"] == "running"]
    assert [(i["AgentInstanceId"], i["UserId"]) for i in running] == [(new, "user_1")]
    # Running the task again finds nothing to claim: still one create.
    assert actions.claim(db, action.id, sealer=None, now=utcnow(), stale_after=STALE) is None
    assert len(emulated(control, "room_1")) == 2


def test_a_recreated_agent_keeps_the_policy_s_limit_on_an_absent_user(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """idle.user_absent_seconds = 60 went to ZEGO as MaxIdleTime with the first agent; the one that
    replaces it after a fault gets it too, so if the user then leaves it costs 60 s, not ZEGO's 120."""
    book = parse("[defaults.idle]\nuser_absent_seconds = 60\n")
    session, old = live_session(db, vendors, control)
    control.rtc_fault(old, 1205)
    mark_deleted(db, old, 1205)
    action = decide(db, session, ActionKind.RECREATE, old)

    outcome, _ = run(db, vendors, action, book=book)

    assert outcome.state == "done"
    new = [i for i in emulated(control, "room_1") if i["AgentInstanceId"] == outcome.new_instance_id]
    assert [i["MaxIdleTime"] for i in new] == [60]


def test_no_recreate_when_the_vendor_says_the_old_agent_is_alive(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """A deletion callback the vendor does not confirm creates nothing and flags the session."""
    session, old = live_session(db, vendors, control)
    mark_deleted(db, old, 1205)  # a callback said so; the emulator's agent still runs
    action = decide(db, session, ActionKind.RECREATE, old)

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, action.result and action.result["why"]) == ("skipped", "instance_alive")
    assert action.result is not None and action.result["seen"]["status"] == "IDLE"
    assert (session.flag, session.recovering_since) == ("deletion_not_confirmed", None)
    assert [i["State"] for i in emulated(control, "room_1")] == ["running"]


def test_an_agent_is_not_recreated_for_a_user_who_has_left(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The user left the room: no new agent, and the session ends as user_absent."""
    session, old = live_session(db, vendors, control)
    control.leave("room_1", "user_1")
    control.rtc_fault(old, 1205)
    mark_deleted(db, old, 1205)
    action = decide(db, session, ActionKind.RECREATE, old)

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, action.result and action.result["why"]) == ("skipped", "user_absent")
    assert (session.state, session.end_reason, session.recovering_since) == ("ended", "user_absent", None)
    assert len(emulated(control, "room_1")) == 1


def test_a_full_quota_postpones_the_recreate_and_too_many_tries_give_up(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """410000011 is retried later; once the tries run out the session ends as gave_up."""
    session, old = live_session(db, vendors, control)
    control.rtc_fault(old, 1205)
    mark_deleted(db, old, 1205)
    action = decide(db, session, ActionKind.RECREATE, old)
    control.api_fault("CreateAgentInstance", 410000011, count=2)

    now = utcnow()
    outcome, follow_up = run(db, vendors, action, now=now, max_attempts=2)
    assert (outcome.state, action.state, action.attempts) == ("retry", ActionState.PENDING, 1)
    assert follow_up == [(action.id, outcome.retry_in)] and action.not_before > now
    assert session.state == "recovering"
    # Not due before its backoff; the sweeper finds it afterwards.
    assert actions.claim(db, action.id, sealer=None, now=now, stale_after=STALE) is None
    later = action.not_before
    assert action.id in actions.due(db, now=later, stale_after=STALE)

    outcome, _ = run(db, vendors, action, now=later, max_attempts=2)
    assert (outcome.state, action.state) == ("retry", ActionState.FAILED)
    assert action.error is not None and "410000011" in action.error
    assert (session.state, session.end_reason) == ("ended", "gave_up")


def test_end_deletes_a_live_agent_after_asking_the_vendor(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """END checks the agent's status, deletes it, and records what it saw."""
    session, iid = live_session(db, vendors, control)
    action = decide(
        db, session, ActionKind.END, iid, reason="llm_auth_failed", ends_with="llm_auth_failed",
        policy="on_exception", trigger_key=f"exception:{APP_ID}:{iid}:at_once",
    )  # fmt: skip

    outcome, follow_up = run(db, vendors, action)

    assert (outcome.state, follow_up) == ("done", [])
    assert action.result is not None
    assert (action.result["seen"], action.result["deleted"]) == ({"status": {iid: "IDLE"}}, [iid])
    assert [(i["State"], i["DeletedCode"]) for i in emulated(control, "room_1")] == [("deleted", 0)]
    assert session.policy_reason == "llm_auth_failed"


def test_end_with_nothing_live_ends_the_session_at_once(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """Giving up after too many recreations calls no vendor and shows the session ended."""
    session, iid = live_session(db, vendors, control)
    control.rtc_fault(iid, 1205)
    mark_deleted(db, iid, 1205)
    action = decide(db, session, ActionKind.END, iid, reason="gave_up", ends_with="gave_up")

    outcome, _ = run(db, vendors, action)

    assert outcome.result == {"seen": {}, "nothing_live": True}
    assert (session.state, session.end_reason) == ("ended", "gave_up")


def test_recycle_warns_through_tts_then_deletes(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """An idle agent says the warning, and is deleted warning_seconds later."""
    session, iid = live_session(db, vendors, control)
    warning = {"warning": "Still there? I will hang up soon.", "warning_seconds": 30.0}
    action = decide(
        db, session, ActionKind.RECYCLE, iid, reason="idle", policy="idle", ends_with="idle",
        trigger_key=f"idle:{session.id}:t0", inputs=warning,
    )  # fmt: skip

    now = utcnow()
    outcome, follow_up = run(db, vendors, action, now=now)
    assert (outcome.state, follow_up) == ("later", [(action.id, 30.0)])
    assert (action.state, action.attempts) == (ActionState.PENDING, 0)
    assert action.result is not None and "warned_at" in action.result
    spoken = emulated(control, "room_1")[0]
    assert (spoken["State"], spoken["Round"]) == ("running", action.result["warning_round"])
    assert actions.claim(db, action.id, sealer=None, now=now, stale_after=STALE) is None

    outcome, _ = run(db, vendors, action, now=now + dt.timedelta(seconds=31))
    assert (outcome.state, action.state, action.result["deleted"]) == ("done", ActionState.DONE, [iid])
    assert [i["State"] for i in emulated(control, "room_1")] == ["deleted"]


def test_a_user_who_answers_the_idle_warning_keeps_the_agent(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The agent asks "still there?", the user speaks up: the recycle is dropped, the agent stays."""
    session, iid = live_session(db, vendors, control)
    action = decide(
        db, session, ActionKind.RECYCLE, iid, reason="idle", policy="idle", ends_with="idle",
        trigger_key=f"idle:{session.id}:t0", inputs={"warning": "Still there?", "warning_seconds": 30.0},
    )  # fmt: skip
    now = utcnow()
    run(db, vendors, action, now=now)
    session.last_user_speech_at = now + dt.timedelta(seconds=5)

    assert (
        actions.claim(db, action.id, sealer=None, now=now + dt.timedelta(seconds=31), stale_after=STALE)
        is None
    )
    assert (action.state, action.result["why"]) == (ActionState.SKIPPED, "user_spoke")
    assert session.policy_reason is None
    assert [i["State"] for i in emulated(control, "room_1")] == ["running"]


def test_a_warning_the_agent_cannot_speak_does_not_stop_the_recycle(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """410001013 (agent listening) on the warning: noted, and the agent is deleted at once."""
    session, iid = live_session(db, vendors, control)
    control.api_fault("SendAgentInstanceTTS", 410001013)
    action = decide(
        db, session, ActionKind.RECYCLE, iid, reason="idle", policy="idle", ends_with="idle",
        trigger_key=f"idle:{session.id}:t0", inputs={"warning": "Bye soon", "warning_seconds": 30.0},
    )  # fmt: skip

    outcome, _ = run(db, vendors, action)

    assert outcome.state == "done" and "410001013" in outcome.result["warning_error"]
    assert [i["State"] for i in emulated(control, "room_1")] == ["deleted"]


def test_close_room_empties_the_room_the_user_left(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """After a 1202, whoever is still in the room (and billing) is closed out of it."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.join("room_1", "guest")
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    action = decide(db, session, ActionKind.CLOSE_ROOM, iid, reason="user_absent")
    assert "room_1" in control.state()["rooms"]

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, outcome.result["closed"], outcome.result["seen"]) == (
        "done",
        True,
        {"user_in_room": False},
    )
    assert "room_1" not in control.state()["rooms"]


def test_close_room_leaves_a_room_zego_has_destroyed_alone(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The user left and the agent followed (1202): nobody is left, so ZEGO destroyed the room and
    there is nothing to close. The action is done without a CloseRoom, which would answer 5018."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    action = decide(db, session, ActionKind.CLOSE_ROOM, iid, reason="user_absent")
    assert "room_1" not in control.state()["rooms"]

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, outcome.result["closed"]) == ("done", False)
    assert outcome.result["seen"]["room"] == actions.GONE
    refused = {(r["Action"], r["Code"]) for r in control.ledger()["Refusals"]}
    assert ("DescribeUsers", 50001) in refused and ("CloseRoom", 5018) not in refused


def test_close_room_is_skipped_when_the_user_is_back(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The user rejoined before the action ran: the room stays open."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    control.join("room_1", "user_1")
    action = decide(db, session, ActionKind.CLOSE_ROOM, iid, reason="user_absent")

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, outcome.result["why"]) == ("skipped", "user_returned")
    assert "user_1" in control.state()["rooms"]["room_1"]["users"]


def test_waiting_for_the_user_polls_then_recreates_when_they_return(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """1202 in wait mode: while the user is away nothing is made; once back, a new agent joins."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    inputs = {"code": 1202, "wait_seconds": 300.0, "poll_seconds": 5.0}
    action = decide(db, session, ActionKind.AWAIT_USER, iid, reason="user_absent", inputs=inputs)

    now = utcnow()
    outcome, follow_up = run(db, vendors, action, now=now)
    assert (outcome.state, follow_up, action.attempts) == ("later", [(action.id, 5.0)], 0)
    assert session.state == "recovering"

    control.join("room_1", "user_1")
    outcome, follow_up = run(db, vendors, action, now=now + dt.timedelta(seconds=6))
    assert (outcome.state, outcome.result["user_returned"]) == ("done", True)
    [(recreate_id, delay)] = follow_up
    recreate = db.get(PolicyAction, recreate_id)
    assert recreate is not None and recreate.trigger_key == f"returned:{APP_ID}:{iid}"

    outcome, _ = run(db, vendors, recreate, now=now + dt.timedelta(seconds=6 + delay))
    assert outcome.state == "done"
    assert len(session_instances(db, session)) == 2
    assert [i["State"] for i in emulated(control, "room_1")] == ["deleted", "running"]


def test_waiting_for_a_user_who_never_returns_ends_the_session(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """Past wait_seconds with the user still away, the session ends as user_absent."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    inputs = {"code": 1202, "wait_seconds": 0.0, "poll_seconds": 5.0}
    action = decide(db, session, ActionKind.AWAIT_USER, iid, reason="user_absent", inputs=inputs)

    outcome, follow_up = run(db, vendors, action)

    assert (outcome.state, outcome.result["user_returned"], follow_up) == ("done", False, [])
    assert (session.state, session.end_reason) == ("ended", "user_absent")


def test_a_wait_woken_by_a_room_login_recreates_without_asking_describe_users(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The room callbacks said the user is back (worker/sessions/rooms.py noted the login on the
    action): it is settled at once, and the vendor's DescribeUsers is not polled."""
    session, iid = live_session(db, vendors, control, user_present=False)
    control.rtc_fault(iid, 1202)
    mark_deleted(db, iid, 1202)
    inputs = {"code": 1202, "wait_seconds": 300.0, "poll_seconds": 60.0}
    action = decide(db, session, ActionKind.AWAIT_USER, iid, reason="user_absent", inputs=inputs)
    action.result = {"room_login": {"user_update_seq": 3, "at": utcnow().isoformat()}}
    polls = control.api_calls("DescribeUsers")

    outcome, follow_up = run(db, vendors, action)

    assert (outcome.state, outcome.result["user_returned"]) == ("done", True)
    assert outcome.result["seen"]["room_login"]["user_update_seq"] == 3
    assert control.api_calls("DescribeUsers") == polls
    recreate = db.get_one(PolicyAction, follow_up[0][0])
    assert (recreate.kind, recreate.reason) == (ActionKind.RECREATE, "user_returned")


def follow(db: DbSession, session: Session, iid: str, inputs: dict[str, Any]) -> PolicyAction:
    """The follow_stream decision worker/sessions/rooms.py records for a stream_create."""
    key = f"stream:{session.id}:{inputs['user_stream_id']}:1"
    return decide(
        db, session, ActionKind.FOLLOW_STREAM, iid, reason="user_new_stream", policy="presence",
        trigger_key=key, inputs=inputs,
    )  # fmt: skip


def test_following_a_new_user_stream_updates_the_agent_and_the_stored_request(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """UpdateAgentInstance with the new UserStreamId; a later recreation pulls it too."""
    session, iid = live_session(db, vendors, control)
    inputs = {"user_stream_id": "user_1_phone", "previous_user_stream_id": "us_1"}
    action = follow(db, session, iid, inputs)
    updates = control.api_calls("UpdateAgentInstance")

    outcome, follow_up = run(db, vendors, action)

    assert (outcome.state, follow_up) == ("done", [])
    assert control.api_calls("UpdateAgentInstance") == updates + 1
    [emulated_agent] = [i for i in control.state()["instances"] if i["AgentInstanceId"] == iid]
    assert emulated_agent["UserStreamId"] == "user_1_phone"
    assert session.spec is not None and session.spec["params"]["RTC"]["UserStreamId"] == "user_1_phone"
    assert session.state == "active"


def test_following_a_stream_of_an_agent_already_gone_is_skipped(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The agent went between the stream_create and the action: nothing to update."""
    session, iid = live_session(db, vendors, control)
    inputs = {"user_stream_id": "user_1_phone"}
    action = follow(db, session, iid, inputs)
    vendors.zego_agent(APP_ID).delete_agent_instance(iid)
    updates = control.api_calls("UpdateAgentInstance")

    outcome, _ = run(db, vendors, action)

    assert (outcome.state, outcome.result["why"]) == ("skipped", "instance_gone")
    assert control.api_calls("UpdateAgentInstance") == updates


def test_a_claim_held_by_a_live_worker_is_not_taken_but_a_stale_one_is(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """A duplicated message waits; a worker that died mid-action is taken over, and its late answer ignored."""
    session, iid = live_session(db, vendors, control)
    action = decide(db, session, ActionKind.END, iid, reason="manual", ends_with="manual")
    now = utcnow()
    first = actions.claim(db, action.id, sealer=None, now=now, stale_after=STALE)
    assert first is not None and first.live_instances == [iid]
    soon = now + dt.timedelta(seconds=1)
    assert actions.claim(db, action.id, sealer=None, now=soon, stale_after=STALE) is None
    assert actions.due(db, now=soon, stale_after=STALE) == []

    late = now + dt.timedelta(seconds=STALE + 1)
    assert actions.due(db, now=late, stale_after=STALE) == [action.id]
    second = actions.claim(db, action.id, sealer=None, now=late, stale_after=STALE)
    assert second is not None and second.attempt == 2
    lost = actions.Outcome("failed", {"seen": {}}, error="boom")
    assert actions.finish(db, first, lost, now=late, max_attempts=5) == []
    assert action.state == ActionState.RUNNING


def test_a_recreate_the_user_cancelled_through_the_api_is_dropped(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """DELETE /v1/sessions while the agent was away: no new agent, the session ends."""
    session, old = live_session(db, vendors, control)
    control.rtc_fault(old, 1205)
    mark_deleted(db, old, 1205)
    action = decide(db, session, ActionKind.RECREATE, old)
    session.end_requested_at = utcnow()

    assert actions.claim(db, action.id, sealer=None, now=utcnow(), stale_after=STALE) is None
    assert (action.state, action.result) == (ActionState.SKIPPED, {"why": "end_requested"})
    assert (session.state, session.end_reason) == ("ended", "disconnected")
    assert len(emulated(control, "room_1")) == 1


def test_the_run_action_task_recreates_once_when_run_twice(
    clean_engine: Engine,
    zego_settings: Settings,
    control: EmulatorControl,
    run_tasks_with: Callable[[JobContext], JobContext],
) -> None:
    """The task body, run twice for one action (a duplicated message), makes one new agent; and a
    worker process runs many tasks, so the action's log fields do not outlive it."""
    import structlog

    from worker import tasks

    job = run_tasks_with(JobContext.from_settings(zego_settings))
    factory, vendors = job.sessions, job.vendors
    with session_scope(factory) as db:
        session, old = live_session(db, vendors, control)
        control.rtc_fault(old, 1205)
        mark_deleted(db, old, 1205)
        action_id, session_id = decide(db, session, ActionKind.RECREATE, old).id, session.id

    structlog.contextvars.clear_contextvars()
    assert tasks.run_action.run(action_id) == "done"
    left = structlog.contextvars.get_contextvars()
    assert not {"session_id", "action_id", "action"} & set(left), left
    assert tasks.run_action.run(action_id) == "skipped"

    assert len(emulated(control, "room_1")) == 2
    with session_scope(factory) as db:
        action = db.get(PolicyAction, action_id)
        assert action is not None and action.state == ActionState.DONE and action.attempts == 1
        assert len(session_instances(db, db.get_one(Session, session_id))) == 2


def test_end_fills_the_reply_the_callbacks_lost_before_deleting(
    db: DbSession, vendors: Vendors, control: EmulatorControl
) -> None:
    """The user's question was stored but its reply's LLMResults never came: END reads the agent's
    context before deleting it, and the reply is in the transcript, marked repaired."""
    session, iid = live_session(db, vendors, control)
    round_ = control.say(iid, "Is the pool open?", ["Yes, until ten."])
    wait_until(lambda: len(vendors.zego_agent(APP_ID).get_agent_instance_msg_list(iid)) == 2, 10, "the reply")
    db.add(Turn(session_id=session.id, instance_id=instance(db, iid).id, round=round_, speaker="user",
                text="Is the pool open?", user_id="user_1"))  # fmt: skip
    action = decide(db, session, ActionKind.END, iid, reason="idle", policy="idle", ends_with="idle",
                    trigger_key=f"idle:{session.id}:t0")  # fmt: skip

    outcome, _ = run(db, vendors, action)

    assert outcome.state == "done" and action.result is not None and action.result["deleted"] == [iid]
    assert "Yes, until ten." not in str(action.result), "the words go to turns, not the action's record"
    said = db.scalars(select(Turn).where(Turn.session_id == session.id, Turn.speaker == "agent")).all()
    assert [(t.round, t.text, t.source) for t in said] == [(round_, "Yes, until ten.", "repaired")]
    assert [i["State"] for i in emulated(control, "room_1")] == ["deleted"]
