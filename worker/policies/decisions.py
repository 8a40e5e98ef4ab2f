"""From what happened and a session's policy to a Decision, and a Decision to an action row.

The rules are plain functions of their inputs (``on_deleted``, ``on_exception``, ``on_lost``,
``recycle``), so ``roomwarden policy explain`` can show what they would decide without
recording anything. ``record`` writes the decision under its ``trigger_key``: the same cause
seen twice (a duplicated AgentInstanceDeleted, a second beat) collides there, and only the
first sighting changes the session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms, insert_ignoring_conflicts
from worker.inbox.callbacks import Callback, int_field
from worker.models import (
    ActionKind,
    ActionState,
    AgentException,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
)
from worker.policies.config import Policy, PolicyBook
from worker.sessions.lifecycle import END_REASONS, Stream, end_reason, exception_family
from worker.vendors.retries import RetryPolicy


@dataclass(frozen=True)
class Decision:
    kind: ActionKind
    reason: str
    policy: str  # the config section that decided
    trigger_key: str
    dry_run: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    agent_instance_id: str | None = None
    delay: float = 0.0  # backoff before the action may run
    # What recording it (not dry-run) does to the session at once.
    recovering: bool = False
    ends_with: str | None = None
    flag: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.kind.value,
            "reason": self.reason,
            "policy": self.policy,
            "dry_run": self.dry_run,
            "agent_instance_id": self.agent_instance_id,
            "delay_seconds": round(self.delay, 3),
            "inputs": self.inputs,
        }


def recreatable(session: Session) -> str | None:
    """Why this session's agent cannot be recreated, or None when it can."""
    if session.origin != "api" or not session.spec:
        return "not started through roomwarden: no stored request to recreate it from"
    if session.provider == Provider.COZE:
        return "Coze rooms cannot be recreated"
    if session.end_requested_at is not None:
        return "an end was requested through the API"
    return None


def deletion_key(app_id: int, agent_instance_id: str) -> str:
    """One decision per instance lost, whether a callback or reconciliation noticed it."""
    return f"deleted:{app_id}:{agent_instance_id}"


def on_deleted(
    policy: Policy,
    session: Session,
    instance: AgentInstance,
    code: int,
    *,
    recent_recreations: int,
    others_live: bool,
    policy_name: str = "on_deleted",
    reason: str | None = None,
) -> Decision | None:
    """What to do about an instance the vendor deleted with ``code``; None: let the session end."""
    rules = policy.on_deleted
    if code == 0 or session.policy_reason is not None or session.end_requested_at is not None:
        return None  # deleted on purpose: through the API, or by a policy already ending it
    if others_live:
        return None  # another instance carries the session (e.g. the one that replaced this)
    key = deletion_key(instance.app_id, instance.agent_instance_id)
    dry = policy.dry(policy_name)
    why = reason or end_reason(code, session.provider)
    inputs: dict[str, Any] = {"code": code}
    make = partial(
        Decision,
        policy=policy_name,
        trigger_key=key,
        dry_run=dry,
        agent_instance_id=instance.agent_instance_id,
    )
    if code == 1202 and session.provider == Provider.ZEGO_LIVE_DIGITAL_HUMAN:
        # Not a user who left: nothing drove it (no say) for MaxIdleTime. Waiting for a user or
        # closing the room answers nothing; recreating would only idle again. Let it end.
        return None
    if code == 1202:
        inputs["user_absent"] = rules.user_absent
        if rules.user_absent == "close_room" and session.room_id:
            return make(ActionKind.CLOSE_ROOM, why, inputs=inputs, ends_with=reason)
        if rules.user_absent == "wait" and recreatable(session) is None:
            inputs.update(wait_seconds=rules.wait_seconds, poll_seconds=rules.wait_poll_seconds)
            return make(ActionKind.AWAIT_USER, why, inputs=inputs, recovering=True)
        return None
    if code not in rules.recreate_codes and reason != "reconciled":
        return None
    if recreatable(session) is not None:
        return None
    inputs.update(
        recreations_in_window=recent_recreations,
        max_recreations=rules.max_recreations,
        window_seconds=rules.window_seconds,
    )
    if recent_recreations >= rules.max_recreations:
        return make(ActionKind.END, "gave_up", inputs=inputs, ends_with="gave_up")
    delay = min(rules.backoff_seconds * 2**recent_recreations, rules.backoff_max_seconds)
    return make(ActionKind.RECREATE, why, inputs=inputs, delay=delay, recovering=True)


def on_lost(
    policy: Policy, session: Session, instance: AgentInstance, *, recent_recreations: int, seen: Any
) -> Decision:
    """Reconciliation found the agent gone (410001002) with no deletion callback: end or recreate."""
    inputs = {"seen": seen, "on_lost": policy.on_deleted.on_lost}
    if policy.on_deleted.on_lost == "recreate" and recreatable(session) is None:
        decision = on_deleted(
            policy,
            session,
            instance,
            1205,
            recent_recreations=recent_recreations,
            others_live=False,
            policy_name="reconcile",
            reason="reconciled",
        )
        if decision is not None:
            return replace(decision, inputs={**decision.inputs, **inputs})
    return Decision(
        ActionKind.END,
        "reconciled",
        policy="reconcile",
        trigger_key=deletion_key(instance.app_id, instance.agent_instance_id),
        dry_run=policy.dry("reconcile"),
        inputs=inputs,
        agent_instance_id=instance.agent_instance_id,
        ends_with="reconciled",
    )


def on_exception(
    policy: Policy, session: Session, instance: AgentInstance, code: int, *, recent_in_family: int
) -> Decision | None:
    """Exceptions that recreating cannot help end at once; a run of one family ends or recreates."""
    rules = policy.on_exception
    if session.policy_reason is not None or session.end_requested_at is not None:
        return None
    family = exception_family(code)
    prefix = f"exception:{instance.app_id}:{instance.agent_instance_id}"
    make = partial(
        Decision,
        policy="on_exception",
        dry_run=policy.dry("on_exception"),
        agent_instance_id=instance.agent_instance_id,
    )
    if code in rules.end_at_once:
        reason = f"{family}_auth_failed" if code in (2203, 2303) else f"exception_{code}"
        return make(
            ActionKind.END,
            reason,
            trigger_key=f"{prefix}:at_once",
            inputs={"code": code},
            ends_with=reason,
            flag=reason,
        )
    rule = rules.families.get(family)
    if rule is None or recent_in_family < rule.count:
        return None
    inputs = {"code": code, "family": family, "count": recent_in_family, "rule": rule.model_dump()}
    reason, key = f"{family}_errors", f"{prefix}:{family}"
    if rule.action == "recreate" and recreatable(session) is None:
        inputs["replace_live"] = True
        return make(ActionKind.RECREATE, reason, trigger_key=key, inputs=inputs, recovering=True)
    return make(ActionKind.END, reason, trigger_key=key, inputs=inputs, ends_with=reason)


def recycle(
    policy: Policy, session: Session, instance: AgentInstance, *, section: str, trigger_key: str,
    inputs: dict[str, Any], reason: str | None = None,
) -> Decision:  # fmt: skip
    """End a live session for ``section`` (idle, max_length, quota), warning first when idle."""
    warning = policy.idle.warning if section == "idle" else None
    details = {**inputs, "warning": warning, "warning_seconds": policy.idle.warning_seconds}
    return Decision(
        ActionKind.RECYCLE,
        reason or section,
        policy=section,
        trigger_key=trigger_key,
        dry_run=policy.dry(section),
        inputs=details,
        agent_instance_id=instance.agent_instance_id,
        ends_with=reason or section,
    )


def recent_recreations(db: DbSession, session_id: str, *, now: dt.datetime, window: float) -> int:
    return int(
        db.scalar(
            select(func.count())
            .select_from(PolicyAction)
            .where(
                PolicyAction.session_id == session_id,
                PolicyAction.kind == ActionKind.RECREATE,
                PolicyAction.created_at >= now - dt.timedelta(seconds=window),
            )
        )
        or 0
    )


# Half to all of a decision's delay, at random (equal jitter).
SPREAD = RetryPolicy(jitter="equal", deadline=None)


def record(db: DbSession, session: Session, decision: Decision, *, now: dt.datetime) -> PolicyAction | None:
    """Store the decision once; the first sighting of its cause also marks the session.

    Returns the new row, or None when the cause had been decided already. The caller commits,
    then enqueues ``worker.tasks.run_action`` for a row in state pending.
    """
    # Jittered backoff: after a mass 1205 the recreations spread out instead of arriving at once
    # (the shared rate limiter then keeps each action under ZEGO's 10 requests a second).
    delay = SPREAD.jittered(decision.delay)
    row_id = db.scalar(
        insert_ignoring_conflicts(PolicyAction, db.get_bind().dialect.name)
        .values(
            session_id=session.id,
            kind=decision.kind.value,
            reason=decision.reason,
            policy=decision.policy,
            trigger_key=decision.trigger_key,
            app_id=session.app_id,
            agent_instance_id=decision.agent_instance_id,
            inputs=decision.inputs,
            state=ActionState.DRY_RUN if decision.dry_run else ActionState.PENDING,
            dry_run=decision.dry_run,
            attempts=0,
            not_before=now + dt.timedelta(seconds=delay),
            created_at=now,
            finished_at=now if decision.dry_run else None,
        )
        .returning(PolicyAction.id)
    )
    if row_id is None:
        return None
    if not decision.dry_run:
        if decision.recovering:
            session.recovering_since = session.recovering_since or now
        if decision.ends_with is not None:
            session.policy_reason = decision.ends_with
            session.recovering_since = None
        if decision.flag is not None:
            session.flag = decision.flag
    return db.get(PolicyAction, row_id)


def react(
    db: DbSession, stream: Stream, cb: Callback, *, book: PolicyBook, now: dt.datetime
) -> PolicyAction | None:
    """The drain's hook: a deletion or an exception just applied to ``stream`` may call for action.

    Callbacks older than the policy's window are history (a late delivery, a replay): they
    update the record but decide nothing, so a replay never recreates a long-gone agent.
    """
    session, instance = stream.session, stream.instance
    policy = book.for_session(session.app_id, session.template)
    at = from_ms(cb.timestamp_ms)
    decision: Decision | None = None
    if cb.event == "AgentInstanceDeleted":
        code = instance.delete_code
        if code is None or now - at > dt.timedelta(seconds=policy.on_deleted.window_seconds):
            return None
        decision = on_deleted(
            policy,
            session,
            instance,
            code,
            recent_recreations=recent_recreations(
                db, session.id, now=now, window=policy.on_deleted.window_seconds
            ),
            others_live=any(i.state != "deleted" for i in stream.siblings if i is not instance),
        )
    elif cb.event == "Exception":
        code = int_field(cb.data.get("Code"))
        if code is None or code in END_REASONS or 1000 <= code < 2000:
            return None  # the RTC family comes with a deletion, which decides
        family = exception_family(code)
        rule = policy.on_exception.families.get(family)
        window = rule.window_seconds if rule is not None else 0.0
        if now - at > dt.timedelta(seconds=max(window, policy.on_deleted.window_seconds)):
            return None
        if instance.state == "deleted":
            return None
        decision = on_exception(
            policy,
            session,
            instance,
            code,
            recent_in_family=_recent_exceptions(db, stream, family, since=at - dt.timedelta(seconds=window)),
        )
    if decision is None:
        return None
    return record(db, session, decision, now=now)


def count_exceptions(db: DbSession, instance_id: int, family: str, *, since: dt.datetime) -> int:
    """Stored exceptions of ``family`` on one instance since ``since``: the window a rule counts."""
    stored = db.scalar(
        select(func.count())
        .select_from(AgentException)
        .where(
            AgentException.instance_id == instance_id,
            AgentException.family == family,
            AgentException.at >= since,
        )
    )
    return int(stored or 0)


def _recent_exceptions(db: DbSession, stream: Stream, family: str, *, since: dt.datetime) -> int:
    """``count_exceptions`` plus this batch's, which the drain inserts only when it settles."""
    pending = sum(
        1 for row in stream.inserts.get(AgentException, []) if row["family"] == family and row["at"] >= since
    )
    return count_exceptions(db, stream.instance.id, family, since=since) + pending
