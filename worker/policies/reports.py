"""Policy actions read back for people: lists, why a session ended, what a policy would do now.

The API and the CLI show the same dictionaries, so an operator reading ``roomwarden why`` and an
app back end reading ``GET /v1/sessions/{id}/why`` see one story. ``explain`` calls the same pure
rules the drain and the scans call, with the counts they would count, and records nothing;
``run_by_hand`` is the one writer here, and goes through ``decisions.record`` like every policy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.models import (
    ActionKind,
    ActionState,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
    SessionState,
)
from worker.policies import decisions, scans
from worker.policies.config import Policy, PolicyBook
from worker.policies.decisions import Decision
from worker.sessions import lifecycle

MANUAL_ACTIONS = ("end", "recreate", "recycle", "close_room")
# A general code per exception family (vendor facts, Exception codes): what explain asks about.
FAMILY_CODES = {"agent_rtc": 1001, "asr": 2101, "llm": 2201, "tts": 2301}
OVER = (SessionState.ENDED, SessionState.FAILED)


class ManualError(ValueError):
    """A policy run by hand that cannot apply to this session; the message says why."""


def list_actions(
    db: DbSession,
    *,
    session_id: str | None = None,
    state: str | None = None,
    kind: str | None = None,
    reason: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[PolicyAction]:
    """Newest first; pass the last id seen as ``before_id`` for the next page (ids only grow)."""
    query = select(PolicyAction).order_by(PolicyAction.id.desc()).limit(limit)
    if session_id is not None:
        query = query.where(PolicyAction.session_id == session_id)
    if state is not None:
        query = query.where(PolicyAction.state == state)
    if kind is not None:
        query = query.where(PolicyAction.kind == kind)
    if reason is not None:
        query = query.where(PolicyAction.reason == reason)
    if since is not None:
        query = query.where(PolicyAction.created_at >= since)
    if before_id is not None:
        query = query.where(PolicyAction.id < before_id)
    return list(db.scalars(query))


def action_dict(a: PolicyAction) -> dict[str, Any]:
    return {
        "id": a.id,
        "session_id": a.session_id,
        "action": a.kind,
        "reason": a.reason,
        "policy": a.policy,
        "state": a.state,
        "dry_run": a.dry_run,
        "app_id": a.app_id,
        "agent_instance_id": a.agent_instance_id,
        "attempts": a.attempts,
        "inputs": a.inputs,
        "result": a.result,
        "error": a.error,
        "created_at": iso(a.created_at),
        "not_before": iso(a.not_before),
        "claimed_at": iso(a.claimed_at),
        "finished_at": iso(a.finished_at),
    }


def short_actions(db: DbSession, session_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """The few fields a session page needs; ``GET /v1/sessions/{id}/actions`` has the rest."""
    return [
        {
            "id": a.id,
            "action": a.kind,
            "reason": a.reason,
            "state": a.state,
            "dry_run": a.dry_run,
            "created_at": iso(a.created_at),
        }
        for a in list_actions(db, session_id=session_id, limit=limit)
    ]


def _instances(db: DbSession, session_id: str) -> list[AgentInstance]:
    return list(
        db.scalars(
            select(AgentInstance)
            .where(AgentInstance.session_id == session_id)
            .order_by(AgentInstance.first_seen_at, AgentInstance.id)
        )
    )


def _current(instances: list[AgentInstance]) -> AgentInstance | None:
    """The instance a rule is about: the newest live one, else the newest."""
    chosen = [i for i in instances if i.state != "deleted"] or instances
    return chosen[-1] if chosen else None


def why(db: DbSession, session: Session) -> dict[str, Any]:
    """The session's state and the action or deletion code that put it there, in one sentence."""
    actions = list(reversed(list_actions(db, session_id=session.id, limit=500)))
    instances = _instances(db, session.id)
    deciding = next(
        (a for a in reversed(actions) if session.policy_reason and a.reason == session.policy_reason), None
    )
    pending = next(
        (a for a in reversed(actions) if a.state in (ActionState.PENDING, ActionState.RUNNING)), None
    )
    return {
        "session_id": session.id,
        "state": session.state,
        "because": _because(session, deciding, pending, actions),
        "end_reason": session.end_reason,
        "end_code": session.end_code,
        "policy_reason": session.policy_reason,
        "flag": session.flag,
        "failure_message": session.failure_message,
        "recovering_since": iso(session.recovering_since),
        "queued_at": iso(session.queued_at),
        "ended_at": iso(session.ended_at),
        "deciding_action": action_dict(deciding) if deciding else None,
        "actions": [action_dict(a) for a in actions],
        "instances": [
            {
                "agent_instance_id": i.agent_instance_id,
                "state": i.state,
                "created_at": iso(i.created_at),
                "deleted_at": iso(i.deleted_at),
                "delete_code": i.delete_code,
                "delete_reason": (
                    lifecycle.end_reason(i.delete_code, session.provider)
                    if i.delete_code is not None
                    else None
                ),
            }
            for i in instances
        ],
    }


def _because(
    session: Session, deciding: PolicyAction | None, pending: PolicyAction | None, actions: list[PolicyAction]
) -> str:
    state = session.state
    if state == SessionState.FAILED:
        return f"the vendor refused to start it: {session.failure_message or session.end_reason}"
    if state == SessionState.QUEUED:
        return f"waiting for a free slot under the quota since {iso(session.queued_at)}"
    if state == SessionState.RECOVERING:
        step = f" (action #{pending.id} {pending.kind}, {pending.state})" if pending else ""
        return f"its agent is gone and a policy is bringing one back{step}"
    if state == SessionState.ENDED:
        if session.end_reason == "cancelled":
            return "ended through the API before the vendor had started it"
        if deciding is not None:
            return (
                f"the {deciding.policy} policy ended it: {deciding.reason} "
                f"(action #{deciding.id} {deciding.kind}, {deciding.state})"
            )
        if session.policy_reason:
            return f"a policy ended it: {session.policy_reason}"
        if session.end_code == 0 and session.end_requested_at is not None:
            return "ended through the API (DeleteAgentInstance)"
        if session.end_code is not None:
            # e.g. 1202, then the room closed by on_deleted: the code ended it, the action followed.
            last = next((a for a in reversed(actions) if not a.dry_run), None)
            then = f"; then action #{last.id} {last.kind} ({last.reason}): {last.state}" if last else ""
            return f"the vendor deleted its agent with code {session.end_code} ({session.end_reason}){then}"
        return f"ended: {session.end_reason}"
    if session.policy_reason:
        step = f" (action #{pending.id} {pending.kind}, {pending.state})" if pending else ""
        return f"a policy is ending it: {session.policy_reason}{step}"
    return "it has not ended"


def explain(db: DbSession, session: Session, book: PolicyBook, now: dt.datetime) -> dict[str, Any]:
    """The resolved policy and, rule by rule, what it would decide if asked now."""
    policy = book.for_session(session.app_id, session.template)
    instances = _instances(db, session.id)
    instance = _current(instances)
    rules: dict[str, Any]
    if session.state in OVER:
        rules = {name: f"nothing: the session is {session.state}" for name in _RULES}
    elif instance is None:
        rules = {name: "nothing: no agent instance yet" for name in _RULES}
    else:
        others_live = any(i.state != "deleted" for i in instances if i is not instance)
        recent = decisions.recent_recreations(
            db, session.id, now=now, window=policy.on_deleted.window_seconds
        )
        rules = {
            "on_deleted": _on_deleted(policy, session, instance, recent=recent, others_live=others_live),
            "on_exception": _on_exception(db, policy, session, instance, now),
            "idle": _idle(policy, session, instance, now),
            "max_length": _max_length(policy, session, instance, now),
        }
    return {
        "session_id": session.id,
        "state": session.state,
        "source": book.source,
        "app_id": session.app_id,
        "template": session.template,
        "agent_instance_id": instance.agent_instance_id if instance else None,
        "dry_run": {name: policy.dry(name) for name in _RULES},
        "policy": policy.model_dump(mode="json"),
        "rules": rules,
    }


_RULES = ("on_deleted", "on_exception", "idle", "max_length")


def _shown(decision: Decision | None, nothing: str) -> dict[str, Any] | str:
    return decision.as_dict() if decision is not None else f"nothing: {nothing}"


def _on_deleted(
    policy: Policy, session: Session, instance: AgentInstance, *, recent: int, others_live: bool
) -> dict[str, Any]:
    """If the vendor deleted the agent now: once for the user leaving (1202), once for a fault."""
    fault = 1205 if 1205 in policy.on_deleted.recreate_codes else 1201
    shown: dict[str, Any] = {}
    for code in (1202, fault):
        decision = decisions.on_deleted(
            policy, session, instance, code, recent_recreations=recent, others_live=others_live
        )
        shown[str(code)] = _shown(decision, _why_not_deleted(policy, session, code, others_live))
    return shown


def _why_not_deleted(policy: Policy, session: Session, code: int, others_live: bool) -> str:
    if session.policy_reason is not None:
        return f"a policy is already ending it ({session.policy_reason})"
    if session.end_requested_at is not None:
        return "an end was requested through the API"
    if others_live:
        return "another instance carries the session"
    if code == 1202 and policy.on_deleted.user_absent == "end":
        return "on_deleted.user_absent is end: the session ends with the deletion"
    if code == 1202 and policy.on_deleted.user_absent == "close_room":
        return "close_room needs a room id, and this session has none: it ends with the deletion"
    if code != 1202 and code not in policy.on_deleted.recreate_codes:
        return f"{code} is not in on_deleted.recreate_codes: the session ends with the deletion"
    return f"{decisions.recreatable(session) or 'no rule applies'}: the session ends with the deletion"


def _on_exception(
    db: DbSession, policy: Policy, session: Session, instance: AgentInstance, now: dt.datetime
) -> dict[str, Any]:
    """If one more exception of each family came now, counting those already in its window."""
    rules = policy.on_exception
    shown: dict[str, Any] = {}
    for code in rules.end_at_once:
        decision = decisions.on_exception(policy, session, instance, code, recent_in_family=1)
        shown[str(code)] = _shown(decision, "a policy is already ending it")
    for family, rule in rules.families.items():
        stand_in = FAMILY_CODES.get(family)
        if stand_in is None:
            continue  # "other" has no code to stand for it
        since = now - dt.timedelta(seconds=rule.window_seconds)
        count = decisions.count_exceptions(db, instance.id, family, since=since) + 1
        decision = decisions.on_exception(policy, session, instance, stand_in, recent_in_family=count)
        nothing = f"{count} of {rule.count} {family} exceptions within {rule.window_seconds:g} s"
        shown[f"{family} ({stand_in})"] = _shown(decision, nothing)
    return shown


def _idle(
    policy: Policy, session: Session, instance: AgentInstance, now: dt.datetime
) -> dict[str, Any] | str:
    decision = scans.idle_decision(policy, session, instance, now)
    if decision is not None:
        return decision.as_dict()
    if policy.idle.after_seconds == 0:
        return "nothing: idle.after_seconds is 0 (off)"
    not_live = scans.not_live(session, instance)
    if not_live:
        return f"nothing: {not_live}"
    if not scans.speech_visible(session):
        return (
            "nothing: roomwarden does not hear this user's speech "
            "(turn on CallbackConfig.ASRResult or UserSpeakAction)"
        )
    since = scans.quiet_since(session, instance)
    if since is None:
        return "nothing: no user speech and no start time to count from"
    due = since + dt.timedelta(seconds=policy.idle.after_seconds)
    return f"nothing: quiet since {iso(since)}, recycled from {iso(due)}"


def _max_length(
    policy: Policy, session: Session, instance: AgentInstance, now: dt.datetime
) -> dict[str, Any] | str:
    decision = scans.length_decision(policy, session, instance, now)
    if decision is not None:
        return decision.as_dict()
    if policy.max_length.seconds == 0:
        return "nothing: max_length.seconds is 0 (off)"
    not_live = scans.not_live(session, instance)
    if not_live:
        return f"nothing: {not_live}"
    if session.started_at is None:
        return "nothing: not started yet"
    due = session.started_at + dt.timedelta(seconds=policy.max_length.seconds)
    return f"nothing: started {iso(session.started_at)}, too long from {iso(due)}"


def run_by_hand(
    db: DbSession, session: Session, book: PolicyBook, now: dt.datetime, what: str
) -> PolicyAction:
    """Record an operator's decision (reason ``manual``); a dry-run policy records it as dry_run.

    Under the global ``dry_run`` switch only: an operator asking by hand means it, whatever the
    section switches say. Raises ManualError when the action cannot apply to the session.
    """
    if what not in MANUAL_ACTIONS:
        raise ManualError(f"unknown action {what!r}: use {', '.join(MANUAL_ACTIONS)}")
    kind = ActionKind(what)
    policy = book.for_session(session.app_id, session.template)
    instances = _instances(db, session.id)
    live = [i for i in instances if i.state != "deleted"]
    busy = db.scalar(
        select(PolicyAction.id).where(
            PolicyAction.session_id == session.id,
            PolicyAction.kind == kind.value,
            PolicyAction.state.in_([ActionState.PENDING, ActionState.RUNNING]),
        )
    )
    if busy is not None:
        raise ManualError(f"action #{busy} ({kind.value}) is already under way for this session")
    inputs: dict[str, Any] = {"by": "hand", "state_before": session.state}
    target: AgentInstance | None = live[-1] if live else None
    recovering = False
    ends_with: str | None = "manual"
    if kind is ActionKind.RECREATE:
        why_not = decisions.recreatable(session)
        if why_not is not None:
            raise ManualError(f"cannot recreate: {why_not}")
        if not instances:
            raise ManualError("cannot recreate: the session has no agent instance to replace")
        target = target or instances[-1]
        inputs["replace_live"] = target.state != "deleted"
        recovering, ends_with = True, None
    elif kind is ActionKind.CLOSE_ROOM:
        if session.provider == Provider.COZE or not session.room_id:
            raise ManualError("cannot close the room: only ZEGO sessions with a known room")
    elif session.state in OVER or not live:
        raise ManualError(f"nothing to {kind.value}: the session has no live agent ({session.state})")
    if kind is ActionKind.RECYCLE:
        inputs.update(warning=policy.idle.warning, warning_seconds=policy.idle.warning_seconds)
    decision = Decision(
        kind,
        "manual",
        policy="manual",
        trigger_key=f"manual:{session.id}:{uuid.uuid4()}",
        dry_run=policy.dry_run,
        inputs=inputs,
        agent_instance_id=target.agent_instance_id if target else None,
        recovering=recovering,
        ends_with=ends_with,
    )
    if kind is ActionKind.RECREATE and not decision.dry_run:
        session.policy_reason = None  # a session brought back is no longer ending
    row = decisions.record(db, session, decision, now=now)
    assert row is not None  # a fresh uuid cannot collide
    if recovering and not decision.dry_run:
        lifecycle.refresh(db, session, learned="policy")
    return row
