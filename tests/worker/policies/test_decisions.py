"""Policy rules: what a deletion code or an exception run decides, and how a decision is recorded once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from tests.factories import INSTANCE, Signer, apply_pending, ingest
from tests.worker.policies.rows import deleted, live_session
from worker.db import utcnow
from worker.models import ActionKind, ActionState, PolicyAction, SessionState
from worker.policies import decisions
from worker.policies.config import load, parse
from worker.settings import Settings

DEFAULTS = load(None).defaults


def _count(db: DbSession) -> int:
    return int(db.scalar(select(func.count()).select_from(PolicyAction)) or 0)


def test_an_rtc_fault_is_recreated_after_a_backoff_that_doubles(db: DbSession) -> None:
    """1205: recreate in the same room, 2 s after the first fault, 8 s after the third, capped."""
    session, agent = live_session(db)
    first = decisions.on_deleted(DEFAULTS, session, agent, 1205, recent_recreations=0, others_live=False)
    assert first is not None and first.kind is ActionKind.RECREATE
    assert (first.reason, first.delay, first.recovering) == ("disconnected", 2.0, True)
    assert first.agent_instance_id == agent.agent_instance_id
    third = decisions.on_deleted(DEFAULTS, session, agent, 1205, recent_recreations=2, others_live=False)
    assert third is not None and third.delay == 8.0
    capped = parse("[defaults.on_deleted]\nmax_recreations = 9\nbackoff_max_seconds = 10").defaults
    late = decisions.on_deleted(capped, session, agent, 1205, recent_recreations=6, others_live=False)
    assert late is not None and late.delay == 10.0


def test_after_max_recreations_in_the_window_the_session_ends_as_gave_up(db: DbSession) -> None:
    """The fourth fault within the window is not recreated: END with reason gave_up."""
    session, agent = live_session(db)
    decision = decisions.on_deleted(DEFAULTS, session, agent, 1201, recent_recreations=3, others_live=False)
    assert decision is not None and decision.kind is ActionKind.END
    assert (decision.reason, decision.ends_with) == ("gave_up", "gave_up")
    assert decision.inputs["recreations_in_window"] == 3


def test_recreations_are_counted_within_the_window_only(db: DbSession) -> None:
    """Recreations older than window_seconds no longer count toward gave_up."""
    session, _ = live_session(db)
    now = utcnow()
    for age in (30, 700):
        decision = decisions.Decision(
            ActionKind.RECREATE, "disconnected", "on_deleted", f"t:{age}", dry_run=False
        )
        decisions.record(db, session, decision, now=now - dt.timedelta(seconds=age))
    assert decisions.recent_recreations(db, session.id, now=now, window=600) == 1


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("close_room", ActionKind.CLOSE_ROOM), ("wait", ActionKind.AWAIT_USER), ("end", None)],
)
def test_a_user_gone_past_max_idle_time_is_handled_per_policy(
    db: DbSession, mode: str, kind: ActionKind | None
) -> None:
    """1202: close the room, wait for the user (recovering), or simply let the session end."""
    policy = parse(f'[defaults.on_deleted]\nuser_absent = "{mode}"\nwait_seconds = 90').defaults
    session, agent = live_session(db)
    decision = decisions.on_deleted(policy, session, agent, 1202, recent_recreations=0, others_live=False)
    assert (decision.kind if decision else None) is kind
    if kind is ActionKind.AWAIT_USER:
        assert decision is not None and decision.recovering and decision.inputs["wait_seconds"] == 90


@pytest.mark.parametrize(("origin", "code"), [("api", 0), ("callback", 1205), ("api", 1208)])
def test_deliberate_unrecreatable_or_unlisted_deletions_decide_nothing(
    db: DbSession, origin: str, code: int
) -> None:
    """Code 0, a session roomwarden did not start (no spec), a code not in recreate_codes: no action."""
    session, agent = live_session(db, origin=origin)
    assert (
        decisions.on_deleted(DEFAULTS, session, agent, code, recent_recreations=0, others_live=False) is None
    )


def test_an_llm_authentication_failure_ends_at_once_and_flags_the_session(db: DbSession) -> None:
    """2203: recreating cannot help; END now, the session flagged llm_auth_failed for an operator."""
    session, agent = live_session(db)
    decision = decisions.on_exception(DEFAULTS, session, agent, 2203, recent_in_family=1)
    assert decision is not None and decision.kind is ActionKind.END
    assert (decision.reason, decision.flag) == ("llm_auth_failed", "llm_auth_failed")
    decisions.record(db, session, decision, now=utcnow())
    assert (session.flag, session.policy_reason) == ("llm_auth_failed", "llm_auth_failed")


def test_a_run_of_one_family_ends_or_recreates_once_it_reaches_the_count(db: DbSession) -> None:
    """Four LLM errors in the window: nothing; the fifth ends it, or recreates it if so configured."""
    session, agent = live_session(db)
    assert decisions.on_exception(DEFAULTS, session, agent, 2201, recent_in_family=4) is None
    fifth = decisions.on_exception(DEFAULTS, session, agent, 2201, recent_in_family=5)
    assert fifth is not None and (fifth.kind, fifth.reason) == (ActionKind.END, "llm_errors")
    recreating = parse('[defaults.on_exception.families.tts]\ncount = 2\naction = "recreate"').defaults
    tts = decisions.on_exception(recreating, session, agent, 2301, recent_in_family=2)
    assert tts is not None and tts.kind is ActionKind.RECREATE and tts.inputs["replace_live"] is True
    assert (
        decisions.on_exception(recreating, session, agent, 2101, recent_in_family=50) is None
    )  # asr: no rule


def test_a_recorded_recreation_marks_the_session_recovering(db: DbSession) -> None:
    """The row is pending, due after its jittered backoff (half to all of it); the session recovering."""
    session, agent = live_session(db)
    now = utcnow()
    decision = decisions.on_deleted(DEFAULTS, session, agent, 1205, recent_recreations=1, others_live=False)
    assert decision is not None
    row = decisions.record(db, session, decision, now=now)
    assert row is not None and row.state == ActionState.PENDING and row.kind == ActionKind.RECREATE
    assert now + dt.timedelta(seconds=2) <= row.not_before <= now + dt.timedelta(seconds=4)
    assert row.attempts == 0
    assert session.recovering_since == now and session.policy_reason is None


def test_a_dry_run_decision_is_recorded_and_changes_nothing(db: DbSession) -> None:
    """dry_run: the row says what would have happened, state dry_run; the session is untouched."""
    policy = parse("[defaults.on_deleted]\ndry_run = true").defaults
    session, agent = live_session(db)
    deleted(db, agent, 1205)
    decision = decisions.on_deleted(policy, session, agent, 1205, recent_recreations=3, others_live=False)
    assert decision is not None and decision.dry_run
    row = decisions.record(db, session, decision, now=utcnow())
    assert row is not None and row.state == ActionState.DRY_RUN and row.finished_at is not None
    assert (session.recovering_since, session.policy_reason, session.flag) == (None, None, None)


def test_the_same_cause_is_recorded_once_whoever_notices_it(db: DbSession) -> None:
    """A deletion decided by the drain and again by reconciliation (or twice) leaves one row."""
    session, agent = live_session(db)
    decision = decisions.on_deleted(DEFAULTS, session, agent, 1205, recent_recreations=0, others_live=False)
    assert decision is not None
    assert decisions.record(db, session, decision, now=utcnow()) is not None
    assert decisions.record(db, session, decision, now=utcnow()) is None
    lost = decisions.on_lost(DEFAULTS, session, agent, recent_recreations=0, seen={"code": 410001002})
    assert decisions.record(db, session, lost, now=utcnow()) is None
    assert _count(db) == 1 and session.policy_reason is None


def test_a_deletion_callback_delivered_again_recreates_once(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """Through the drain: 1205 twice (the second with a new Sequence) leaves one pending recreation."""
    session, _agent = live_session(db, instance=INSTANCE)
    deletion = {"Code": 1205, "DeletedTimestamp": int(utcnow().timestamp() * 1000)}
    ingest(db, [signer.callback("AgentInstanceDeleted", deletion)])
    apply_pending(db, settings)
    ingest(db, [signer.callback("AgentInstanceDeleted", deletion)])
    apply_pending(db, settings)
    rows = list(db.scalars(select(PolicyAction)))
    assert [(r.kind, r.state, r.reason) for r in rows] == [("recreate", "pending", "disconnected")]
    db.refresh(session)
    assert session.state == SessionState.RECOVERING and session.recovering_since is not None
