"""Carrying out a recorded policy action at the vendor: claim, execute, finish.

The three steps mirror a session start (``worker.sessions.starting``) and for the same reason: no
database transaction is held open across a vendor call. ``claim`` marks the row running (a
fresh claim held by another worker is left alone; a stale one, from a worker that died, is
taken over); ``execute`` talks to the vendor and nothing else; ``finish`` records what came of
it and what that does to the session.

**Confirm before destroying.** ZEGO's callback signature covers the timestamp, not the body, so
a deletion callback alone is not proof enough to spend money (a new instance) or to cut a live
conversation. Before any destructive or costly call, ``execute`` asks the vendor (instance
status, who is in the room) and keeps what it saw in ``result["seen"]``.

Running an action twice changes nothing the second time: a finished row cannot be claimed, and
``finish`` ignores an outcome whose claim another worker has since taken over. The one gap is a
worker killed between creating an instance and recording it: the run that takes over creates
again with the same AgentUserId, and ZEGO kicks the orphan out (1203), so one agent lives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session as DbSession

from worker.db import utcnow
from worker.events import actions as action_events
from worker.models import ActionKind, ActionState, PolicyAction, Provider, Session
from worker.models.actions import CONTROL_KINDS
from worker.policies.config import PolicyBook
from worker.policies.decisions import Decision, record, recreatable
from worker.sealing import Sealer
from worker.sessions import repair
from worker.sessions.ending import live_instances
from worker.sessions.lifecycle import refresh
from worker.sessions.starting import StartOrder, attach_instance, call_vendor, with_absent_limit
from worker.vendors.clients import Vendors
from worker.vendors.errors import SpecError, VendorNotConfigured, classify
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego.errors import (
    ZegoError,
    ZegoInstanceBusyError,
    ZegoNotFoundError,
    ZegoQuotaError,
)
from worker.vendors.zego.specs import Message

log = structlog.get_logger(__name__)

OutcomeState = Literal["done", "skipped", "failed", "retry", "later"]

# Vendor errors that outlast the client's own quick retries: back off on the scale of minutes.
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
BACKOFF = RetryPolicy(base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS, jitter="none", deadline=None)
# What the vendor says of an instance it no longer knows, or is deleting (410001041).
GONE, SHUTTING_DOWN = "GONE", "SHUTTING_DOWN"


@dataclass(frozen=True)
class Claimed:
    """Everything ``execute`` needs, copied out of the database so no row crosses a vendor call."""

    action_id: int
    session_id: str
    kind: ActionKind
    reason: str
    app_id: int
    agent_instance_id: str | None
    inputs: dict[str, Any]
    attempt: int
    result: dict[str, Any] | None
    room_id: str | None
    user_id: str | None
    provider: str | None
    params: dict[str, Any] | None  # the session's stored vendor request, unsealed (recreate)
    agent: dict[str, Any] | None
    live_instances: list[str]  # AgentInstanceIds of the session not known deleted
    # AWAIT_USER gives up wait_seconds after the decision (an addition to the plan's interface).
    created_at: dt.datetime | None = None


@dataclass(frozen=True)
class Outcome:
    state: OutcomeState
    result: dict[str, Any] = field(default_factory=dict)  # merged into the row's result
    error: str | None = None
    retry_in: float | None = None  # for "retry" and "later"
    new_instance_id: str | None = None
    # Gap repair: each deleted instance's context window, read just before its deletion; its
    # words are written as turns by ``finish``, never into the row's result.
    contexts: dict[str, list[Message]] = field(default_factory=dict)


# --- claim ------------------------------------------------------------------------------------


def claim(
    db: DbSession,
    action_id: int,
    *,
    sealer: Sealer | None,
    now: dt.datetime,
    stale_after: float,
    book: PolicyBook | None = None,
) -> Claimed | None:
    """Take the action if it is due and nobody alive holds it; None otherwise.

    With ``book``, the request a recreation sends carries the session's policy as a start's does
    (``starting.with_absent_limit``): a recreated agent whose user then leaves costs the policy's
    MaxIdleTime, not ZEGO's 120 s.
    """
    row = db.scalars(select(PolicyAction).where(PolicyAction.id == action_id).with_for_update()).one_or_none()
    if row is None or not _claimable(row, now=now, stale_after=stale_after):
        return None
    if row.kind in CONTROL_KINDS:
        # A live control whose request died at ZEGO's door (worker/sessions/control.py): ZEGO
        # may have spoken it, so it is closed as failed, never sent again.
        row.state, row.finished_at = ActionState.FAILED, now
        row.error = "the request ended before ZEGO's answer was recorded; not repeated"
        return None
    session = db.scalars(select(Session).where(Session.id == row.session_id).with_for_update()).one()
    if row.kind in (ActionKind.RECREATE, ActionKind.AWAIT_USER) and session.end_requested_at is not None:
        # Ended through the API while the agent was away: bringing one back would defy the user.
        row.state, row.finished_at = ActionState.SKIPPED, now
        row.result = {**(row.result or {}), "why": "end_requested"}
        session.recovering_since = None
        refresh(db, session, learned="policy")
        return None
    if row.kind == ActionKind.RECYCLE and _answered_warning(row, session):
        # The user spoke after the idle warning: they are there, so the agent stays.
        row.state, row.finished_at = ActionState.SKIPPED, now
        row.result = {**(row.result or {}), "why": "user_spoke"}
        if session.policy_reason == row.reason:
            session.policy_reason = None
        return None
    spec = session.spec or {}
    if sealer is not None:
        spec = sealer.unseal(spec)
    params = spec.get("params")
    if book is not None and params and session.provider is not None:
        policy = book.for_session(session.app_id, session.template)
        params = with_absent_limit(params, Provider(session.provider), policy)
    row.state, row.claimed_at = ActionState.RUNNING, now
    row.attempts = (row.attempts or 0) + 1
    return Claimed(
        action_id=row.id,
        session_id=session.id,
        kind=ActionKind(row.kind),
        reason=row.reason,
        app_id=row.app_id,
        agent_instance_id=row.agent_instance_id,
        inputs=dict(row.inputs or {}),
        attempt=row.attempts,
        result=dict(row.result) if row.result else None,
        room_id=session.room_id,
        user_id=session.user_id,
        provider=session.provider,
        params=params,
        agent=spec.get("agent"),
        live_instances=[instance for _, instance in live_instances(db, session.id)],
        created_at=row.created_at,
    )


def _answered_warning(row: PolicyAction, session: Session) -> bool:
    warned_at = (row.result or {}).get("warned_at")
    spoke = session.last_user_speech_at
    return isinstance(warned_at, str) and spoke is not None and spoke > dt.datetime.fromisoformat(warned_at)


def _claimable(row: PolicyAction, *, now: dt.datetime, stale_after: float) -> bool:
    if row.state == ActionState.PENDING:
        return row.not_before <= now
    if row.state == ActionState.RUNNING:
        return row.claimed_at is None or now - row.claimed_at >= dt.timedelta(seconds=stale_after)
    return False  # done, failed, skipped, dry_run


def due(db: DbSession, *, now: dt.datetime, stale_after: float, limit: int = 500) -> list[int]:
    """Actions a worker should be running now: lost messages, passed backoffs, dead workers."""
    stale = now - dt.timedelta(seconds=stale_after)
    return list(
        db.scalars(
            select(PolicyAction.id)
            .where(
                or_(
                    (PolicyAction.state == ActionState.PENDING) & (PolicyAction.not_before <= now),
                    (PolicyAction.state == ActionState.RUNNING) & (PolicyAction.claimed_at < stale),
                )
            )
            .order_by(PolicyAction.not_before)
            .limit(limit)
        )
    )


# --- execute (vendor calls only) ---------------------------------------------------------------


def execute(claimed: Claimed, vendors: Vendors) -> Outcome:
    """Confirm with the vendor, then act; vendor errors become an outcome, never an exception."""
    run = {
        ActionKind.RECREATE: _recreate,
        ActionKind.END: _end,
        ActionKind.RECYCLE: _recycle,
        ActionKind.CLOSE_ROOM: _close_room,
        ActionKind.AWAIT_USER: _await_user,
        ActionKind.FOLLOW_STREAM: _follow_stream,
    }[claimed.kind]
    seen: dict[str, Any] = {}
    try:
        return run(claimed, vendors, seen)
    except VendorNotConfigured as exc:
        return Outcome("failed", {"seen": seen}, error=str(exc))
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            log.exception("policy_action_crashed", action_id=claimed.action_id)
            return Outcome("failed", {"seen": seen}, error=f"{type(exc).__name__}: {exc}")
        # A full quota frees up as other sessions end: for a policy that is waiting, not failing.
        if failure.transient or isinstance(exc, ZegoQuotaError):
            delay = BACKOFF.delay(claimed.attempt - 1)
            return Outcome("retry", {"seen": seen}, error=failure.message, retry_in=delay)
        return Outcome("failed", {"seen": seen}, error=failure.message)


def _status(vendors: Vendors, app_id: int, agent_instance_id: str) -> str:
    """The instance's status (IDLE, SPEAKING, ...), or GONE / SHUTTING_DOWN."""
    try:
        return vendors.zego_agent(app_id).query_agent_instance_status(agent_instance_id)
    except ZegoNotFoundError:
        return GONE
    except ZegoInstanceBusyError as exc:
        if exc.code == 410001041:
            return SHUTTING_DOWN
        raise


def _user_in_room(vendors: Vendors, claimed: Claimed) -> bool | None:
    """Whether the session's user is in its room; None when the session names neither."""
    try:
        return _describe_user(vendors, claimed)
    except ZegoNotFoundError:
        return False  # 50001: the room is gone, and the user with it


def _describe_user(vendors: Vendors, claimed: Claimed) -> bool | None:
    """``_user_in_room``, but a room ZEGO no longer has raises ZegoNotFoundError (50001)."""
    if not claimed.room_id or not claimed.user_id:
        return None
    users = vendors.zego_rtc(claimed.app_id).describe_users(claimed.room_id, [claimed.user_id])
    return any(u.user_id == claimed.user_id and u.in_room for u in users)


def _recreate(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    old = claimed.agent_instance_id
    contexts: dict[str, list[Message]] = {}
    if old is not None:
        status = seen["status"] = _status(vendors, claimed.app_id, old)
        if status not in (GONE, SHUTTING_DOWN):
            if not claimed.inputs.get("replace_live"):
                # The vendor still runs it: the deletion we were told of did not happen.
                return Outcome("skipped", {"seen": seen, "why": "instance_alive"})
            contexts = repair.read_contexts(vendors, [(claimed.app_id, old)], claimed.provider)
            vendors.zego_agent(claimed.app_id).delete_agent_instance(old)
            seen["deleted_old"] = True
    present = seen["user_in_room"] = _user_in_room(vendors, claimed)
    if present is False:
        return Outcome("skipped", {"seen": seen, "why": "user_absent"}, contexts=contexts)
    if not claimed.params or claimed.provider in (None, Provider.COZE):
        error = "no stored ZEGO request to recreate the agent from"
        return Outcome("failed", {"seen": seen}, error=error, contexts=contexts)
    order = StartOrder(
        session_id=claimed.session_id,
        provider=Provider(claimed.provider),
        app_id=claimed.app_id,
        params=claimed.params,
        agent=claimed.agent,
        attempt=claimed.attempt,
    )
    started = call_vendor(order, vendors)
    new = started.agent_instance_id
    return Outcome("done", {"seen": seen, "agent_instance_id": new}, new_instance_id=new, contexts=contexts)


def _end(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    """Delete every instance the vendor confirms alive; with none live there is nothing to do."""
    if not claimed.live_instances:
        return Outcome("done", {"seen": seen, "nothing_live": True})
    statuses: dict[str, str] = seen.setdefault("status", {})
    deleted: list[str] = []
    contexts: dict[str, list[Message]] = {}
    for instance in claimed.live_instances:
        statuses[instance] = _status(vendors, claimed.app_id, instance)
        if statuses[instance] not in (GONE, SHUTTING_DOWN):
            contexts.update(repair.read_contexts(vendors, [(claimed.app_id, instance)], claimed.provider))
            vendors.zego_agent(claimed.app_id).delete_agent_instance(instance)
            deleted.append(instance)
    return Outcome("done", {"seen": seen, "deleted": deleted, "nothing_live": not deleted}, contexts=contexts)


def _recycle(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    """Say the warning (once), come back after warning_seconds, then end like END."""
    warning = claimed.inputs.get("warning")
    target = claimed.agent_instance_id
    already = claimed.result is not None and "warned_at" in claimed.result
    if warning and target and not already and target in claimed.live_instances:
        status = seen["status_before_warning"] = _status(vendors, claimed.app_id, target)
        if status not in (GONE, SHUTTING_DOWN):
            warned: dict[str, Any] = {"warned_at": utcnow().isoformat()}
            try:
                body = {"AgentInstanceId": target, "Text": str(warning)[:300]}
                warned["warning_round"] = vendors.zego_agent(claimed.app_id).send_agent_instance_tts(body)
            except (ZegoError, SpecError) as exc:
                # 410001013 (listening) and the like: a warning is a courtesy, the recycle is not.
                warned["warning_error"] = str(exc)
                return _merge(_end(claimed, vendors, seen), warned)
            wait = float(claimed.inputs.get("warning_seconds") or 0.0)
            return Outcome("later", {"seen": seen, **warned}, retry_in=wait)
    return _end(claimed, vendors, seen)


def _merge(outcome: Outcome, extra: dict[str, Any]) -> Outcome:
    return replace(outcome, result={**outcome.result, **extra})


def _close_room(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    """Close the room the agent left (1202), unless the user has come back to it meanwhile.

    After a 1202 the room is usually gone already: ZEGO destroys a room once nobody is left in it
    (vendor facts 3), and its creating user has been out for MaxIdleTime when the agent leaves.
    DescribeUsers says so (50001), and then there is nothing to close: CloseRoom, limited to one
    a second per app, would only answer 5018. The room is closed when someone else stayed in it.
    """
    try:
        present = seen["user_in_room"] = _describe_user(vendors, claimed)
    except ZegoNotFoundError:
        seen["user_in_room"], seen["room"] = False, GONE
        return Outcome("done", {"seen": seen, "closed": False})
    if present:
        return Outcome("skipped", {"seen": seen, "why": "user_returned"})
    if not claimed.room_id:
        return Outcome("skipped", {"seen": seen, "why": "no_room"})
    try:
        vendors.zego_rtc(claimed.app_id).close_room(claimed.room_id)
    except ZegoNotFoundError:
        seen["room"] = GONE  # 5018/5024: emptied and destroyed already
        return Outcome("done", {"seen": seen, "closed": False})
    return Outcome("done", {"seen": seen, "closed": True})


def _await_user(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    """1202 in wait mode: poll the room until the user is back (then recreate) or time is up.

    A ``room_login`` heard since the 1202 (worker/sessions/rooms.py wakes the action and notes it
    in its result) settles it without asking DescribeUsers: the polling stays, for the rooms
    whose callbacks are not configured or lost, as a reconciliation."""
    login = (claimed.result or {}).get("room_login")
    if login:
        seen["room_login"] = login
        return Outcome("done", {"seen": seen, "user_returned": True})
    present = seen["user_in_room"] = _user_in_room(vendors, claimed)
    if present:
        return Outcome("done", {"seen": seen, "user_returned": True})
    wait = float(claimed.inputs.get("wait_seconds") or 0.0)
    started = claimed.created_at or utcnow()
    if utcnow() < started + dt.timedelta(seconds=wait):
        poll = float(claimed.inputs.get("poll_seconds") or 10.0)
        return Outcome("later", {"seen": seen}, retry_in=poll)
    return Outcome("done", {"seen": seen, "user_returned": False})


def _follow_stream(claimed: Claimed, vendors: Vendors, seen: dict[str, Any]) -> Outcome:
    """The user rejoined publishing another stream: the agent pulls that one (UpdateAgentInstance)."""
    stream = str(claimed.inputs["user_stream_id"])
    if claimed.agent_instance_id is None or claimed.agent_instance_id not in claimed.live_instances:
        return Outcome("skipped", {"seen": seen, "why": "instance_gone"})
    status = seen["status"] = _status(vendors, claimed.app_id, claimed.agent_instance_id)
    if status in (GONE, SHUTTING_DOWN):
        return Outcome("skipped", {"seen": seen, "why": "instance_gone"})
    update = {"AgentInstanceId": claimed.agent_instance_id, "RTC": {"UserStreamId": stream}}
    vendors.zego_agent(claimed.app_id).update_agent_instance(update)
    return Outcome("done", {"seen": seen, "user_stream_id": stream})


# --- finish -------------------------------------------------------------------------------------


def finish(
    db: DbSession, claimed: Claimed, outcome: Outcome, *, now: dt.datetime, max_attempts: int
) -> list[tuple[int, float]]:
    """Record the outcome and its effect on the session; returns (action id, delay) to enqueue."""
    row = db.scalars(
        select(PolicyAction).where(PolicyAction.id == claimed.action_id).with_for_update()
    ).one_or_none()
    if row is None or row.state != ActionState.RUNNING or row.attempts != claimed.attempt:
        # Another worker took the claim over (we were too slow): its outcome is the one that counts.
        log.warning("policy_action_claim_lost", action_id=claimed.action_id, outcome=outcome.state)
        return []
    if outcome.contexts:  # before the deletion callbacks settle the session
        repair.fill_session(db, claimed.session_id, outcome.contexts)
    row.result = {**(row.result or {}), **outcome.result}
    row.error = outcome.error
    state: str = outcome.state
    if state == "retry" and row.attempts >= max_attempts:
        state = ActionState.FAILED
    if state in ("retry", "later"):
        delay = outcome.retry_in or 0.0
        if state == "later":
            row.attempts -= 1  # a poll or a planned pause is not a failed try
        row.state, row.claimed_at = ActionState.PENDING, None
        row.not_before = now + dt.timedelta(seconds=delay)
        return [(row.id, delay)]
    row.state, row.finished_at = state, now
    session = db.scalars(select(Session).where(Session.id == row.session_id).with_for_update()).one()
    action_events.finished(db, row, session)
    return _settle(db, row, session, outcome, now=now)


def _settle(
    db: DbSession, row: PolicyAction, session: Session, outcome: Outcome, *, now: dt.datetime
) -> list[tuple[int, float]]:
    """What a finished action does to its session (its state is recomputed, never set by hand)."""
    kind, state, why = row.kind, row.state, outcome.result.get("why")
    follow_up: list[tuple[int, float]] = []
    if kind == ActionKind.RECREATE:
        if state == ActionState.DONE and outcome.new_instance_id:
            attach_instance(db, session, outcome.new_instance_id)
            session.recovering_since = None
            if session.end_requested_at is not None:  # ended through the API while we created
                follow_up = _follow_up(db, session, _end_requested(session, outcome.new_instance_id), now=now)
        elif why == "instance_alive":
            session.recovering_since = None
            session.flag = "deletion_not_confirmed"
        else:
            _give_up(session, "user_absent" if why == "user_absent" else "gave_up")
    elif kind == ActionKind.AWAIT_USER:
        if outcome.result.get("user_returned") and recreatable(session) is None:
            follow_up = _follow_up(db, session, _user_returned(row), now=now)
        else:
            _give_up(session, "user_absent" if state == ActionState.DONE else "gave_up")
    elif kind == ActionKind.FOLLOW_STREAM:
        if state == ActionState.DONE and session.spec is not None:
            # A recreation later pulls the stream the user is on now, not the one they left.
            params = dict(session.spec.get("params") or {})
            params["RTC"] = {**(params.get("RTC") or {}), "UserStreamId": outcome.result["user_stream_id"]}
            session.spec = {**session.spec, "params": params}
        return []
    elif kind in (ActionKind.END, ActionKind.RECYCLE) and not outcome.result.get("nothing_live", True):
        return []  # the deletion callbacks end the session, with the reason set at decision
    refresh(db, session, learned="policy")
    return follow_up


def _give_up(session: Session, reason: str) -> None:
    session.recovering_since = None
    session.policy_reason = session.policy_reason or reason


def _user_returned(row: PolicyAction) -> Decision:
    """The user is back after a 1202: a new agent for them, as its own action (retried on its own)."""
    return Decision(
        ActionKind.RECREATE,
        "user_returned",
        policy=row.policy,
        trigger_key=f"returned:{row.app_id}:{row.agent_instance_id}",
        dry_run=False,
        inputs={"code": 1202, "after_action": row.id},
        agent_instance_id=row.agent_instance_id,
        recovering=True,
    )


def _end_requested(session: Session, agent_instance_id: str) -> Decision:
    """An API end arrived while the recreation ran: the new agent goes too."""
    return Decision(
        ActionKind.END,
        "cancelled",
        policy="manual",
        trigger_key=f"end_requested:{session.app_id}:{agent_instance_id}",
        dry_run=False,
        agent_instance_id=agent_instance_id,
    )


def _follow_up(
    db: DbSession, session: Session, decision: Decision, *, now: dt.datetime
) -> list[tuple[int, float]]:
    made = record(db, session, decision, now=now)
    return [(made.id, 0.0)] if made is not None else []
