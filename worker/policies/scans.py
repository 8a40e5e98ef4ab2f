"""What the beat finds by looking, rather than by being told: idle agents, long sessions, lost ones.

Callbacks tell roomwarden most of what happens, but not that nothing is happening (an idle
user, an agent past its maximum length) and not what ZEGO failed to tell (its callbacks can be
lost). These scans run every policy interval and turn what they find into decisions, recorded
through ``decisions.record`` under trigger keys that make a second beat a no-op.

The per-session checks (``idle_decision``, ``length_decision``) are pure, so ``roomwarden
policy explain`` can show what they would decide. The scans read only candidates, chosen in SQL
by ``worker.policies.candidates`` (thresholds per policy in the WHERE clause, so a beat over
10,000 live sessions reads the few it may act on), without locks; then they run the pure check,
lock each session they act on (``SKIP LOCKED``: a session a drain holds right now is left to
the next beat) and check again under the lock before recording.

Reconciliation is three steps, so that no transaction is open across the vendor call:
``suspects`` (DB) → ``ask`` (QueryAgentInstanceStatus, no DB) → ``settle`` (DB).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session as DbSession

from worker.models import (
    COZE_APP_ID,
    ActionKind,
    ActionState,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
    SessionState,
)
from worker.policies import candidates, decisions
from worker.policies.config import Policy, PolicyBook, Reconcile
from worker.policies.decisions import Decision
from worker.sessions import lifecycle
from worker.vendors.clients import Vendors
from worker.vendors.errors import VendorNotConfigured, classify
from worker.vendors.ratelimit import Limiter, RateLimitTimeout
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego.agent import ZegoAgentClient

log = structlog.get_logger(__name__)


def speech_visible(session: Session) -> bool:
    """Whether roomwarden would hear the user speak at all.

    ZEGO sends ASRResult and UserSpeakAction only when CallbackConfig asks for them (both default
    to off). Without them every session would look idle from its first second, and recycling it
    would hang up on a user in mid-sentence; so idleness is judged only for sessions that have
    reported speech once, or whose stored request turned those callbacks on.
    """
    if session.last_user_speech_at is not None or live_digital_human(session):
        return True
    params = (session.spec or {}).get("params") or {}
    config = params.get("CallbackConfig") or {}
    return bool(config.get("ASRResult") or config.get("UserSpeakAction"))


def live_digital_human(session: Session) -> bool:
    """A live digital human has no user: it is idle when nobody drives it (``say``), as ZEGO's
    own MaxIdleTime for it counts from the last SendAgentInstanceTTS, and no user-absence rule
    (1202 as "the user left") applies to it."""
    return session.provider == Provider.ZEGO_LIVE_DIGITAL_HUMAN


def not_live(session: Session, instance: AgentInstance) -> str | None:
    """Why a scan may not end this session whatever the clock says, or None when it may.

    A scan ends only ZEGO sessions that are active, with a live instance, that nobody is
    already ending; ``roomwarden policy explain`` shows the reason.
    """
    if session.state != SessionState.ACTIVE or instance.state != "active":
        return f"only active sessions are recycled (this one is {session.state})"
    if instance.app_id == COZE_APP_ID:
        return "Coze rooms end by Coze's own rules (coze.max_room_seconds)"
    if session.policy_reason is not None or session.end_requested_at is not None:
        return "it is already being ended"
    return None


def quiet_since(session: Session, instance: AgentInstance) -> dt.datetime | None:
    """Since when the user has said nothing to this agent.

    The later of the last user speech and this instance's creation: an agent recreated after a
    network fault starts a fresh idle clock rather than inheriting the outage as silence.
    """
    # A live digital human's "speech" is the last say (control.mark_said keeps last_activity_at).
    driven = session.last_activity_at if live_digital_human(session) else session.last_user_speech_at
    marks = [t for t in (driven, instance.created_at or session.started_at) if t]
    return max(marks) if marks else None


def absent_since(session: Session, instance: AgentInstance) -> dt.datetime | None:
    """Since when the user has been out of the room, as ZEGO's room callbacks tell it
    (worker/sessions/rooms.py), counted from this instance's creation at the earliest: an agent
    with nobody to talk to is idle, whether or not its speech callbacks are on."""
    if session.user_present is not False or session.user_absent_since is None or live_digital_human(session):
        return None
    marks = [t for t in (session.user_absent_since, instance.created_at or session.started_at) if t]
    return max(marks)


def idle_decision(
    policy: Policy, session: Session, instance: AgentInstance, now: dt.datetime
) -> Decision | None:
    """Recycle an active session whose user has been silent, or out of the room, for
    ``idle.after_seconds``."""
    after = policy.idle.after_seconds
    if after <= 0 or not_live(session, instance):
        return None
    absent = absent_since(session, instance)
    if absent is not None and (now - absent).total_seconds() >= after:
        return decisions.recycle(
            policy,
            session,
            instance,
            section="idle",
            trigger_key=f"idle:absent:{session.id}:{absent.isoformat()}",
            inputs={
                "user_absent_since": absent.isoformat(),
                "absent_seconds": round((now - absent).total_seconds(), 3),
                "logout_reason": session.user_logout_reason,
                "after_seconds": after,
            },
        )
    if not speech_visible(session):
        return None
    since = quiet_since(session, instance)
    if since is None or (now - since).total_seconds() < after:
        return None
    return decisions.recycle(
        policy,
        session,
        instance,
        section="idle",
        # Keyed by the silence it is about: the user speaking again makes a new silence.
        trigger_key=f"idle:{session.id}:{since.isoformat()}",
        inputs={
            "quiet_since": since.isoformat(),
            "quiet_seconds": round((now - since).total_seconds(), 3),
            "after_seconds": after,
        },
    )


def length_decision(
    policy: Policy, session: Session, instance: AgentInstance, now: dt.datetime
) -> Decision | None:
    """Recycle a session that has run longer than ``max_length.seconds`` (across recreations)."""
    limit = policy.max_length.seconds
    if limit <= 0 or not_live(session, instance) or session.started_at is None:
        return None
    age = (now - session.started_at).total_seconds()
    if age < limit:
        return None
    return decisions.recycle(
        policy,
        session,
        instance,
        section="max_length",
        trigger_key=f"max_length:{session.id}",
        inputs={"started_at": session.started_at.isoformat(), "age_seconds": round(age, 3), "seconds": limit},
    )


Rule = Callable[[Policy, Session, AgentInstance, dt.datetime], Decision | None]


def _active_zego(db: DbSession, candidate: ColumnElement[bool]) -> Iterator[tuple[Session, AgentInstance]]:
    rows = db.execute(
        select(Session, AgentInstance)
        .join(AgentInstance, AgentInstance.session_id == Session.id)
        .where(
            Session.state == SessionState.ACTIVE,
            Session.policy_reason.is_(None),
            Session.end_requested_at.is_(None),
            AgentInstance.state == "active",
            AgentInstance.app_id != COZE_APP_ID,
            candidate,
        )
        .order_by(Session.id)
    )
    yield from rows


def _lock(db: DbSession, session_id: str) -> Session | None:
    """The session under a row lock, fresh from the database; None if a drain holds it now."""
    return db.scalars(
        select(Session)
        .where(Session.id == session_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _apply(
    db: DbSession, book: PolicyBook, now: dt.datetime, rule: Rule, candidate: ColumnElement[bool]
) -> list[PolicyAction]:
    found = [
        (session, instance)
        for session, instance in list(_active_zego(db, candidate))
        if rule(book.for_session(session.app_id, session.template), session, instance, now) is not None
    ]
    if not found:
        return []
    # All of them locked and re-read in two statements rather than two per session: a beat after
    # an outage may find hundreds. Locked in id order, as one drain locks one: no deadlock.
    locked = {
        s.id: s
        for s in db.scalars(
            select(Session)
            .where(Session.id.in_([session.id for session, _ in found]))
            .order_by(Session.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    }
    fresh = db.scalars(
        select(AgentInstance)
        .where(AgentInstance.id.in_([instance.id for _, instance in found]))
        .execution_options(populate_existing=True)
    ).all()
    recorded = []
    for instance in sorted(fresh, key=lambda i: i.session_id):
        session = locked.get(instance.session_id)
        if session is None:
            continue  # a drain holds it now: the next beat looks again
        policy = book.for_session(session.app_id, session.template)
        decision = rule(policy, session, instance, now)  # again, on what the lock guarantees
        if decision is None:
            continue
        action = decisions.record(db, session, decision, now=now)
        if action is not None:
            log.info(
                "policy_decided", session_id=session.id, action=decision.kind.value, reason=decision.reason
            )
            recorded.append(action)
    return recorded


def recycle_idle(db: DbSession, book: PolicyBook, now: dt.datetime) -> list[PolicyAction]:
    """Record a RECYCLE for every active session idle past its policy's threshold."""
    return _apply(db, book, now, idle_decision, candidates.idle(book, now))


def enforce_max_length(db: DbSession, book: PolicyBook, now: dt.datetime) -> list[PolicyAction]:
    """Record a RECYCLE for every active session older than its policy's maximum length."""
    return _apply(db, book, now, length_decision, candidates.too_long(book, now))


# --- Reconciliation: ask ZEGO about agents that have gone quiet. ---


@dataclass(frozen=True)
class Suspect:
    """A live instance roomwarden has not heard from; plain data, for the vendor call."""

    session_id: str
    instance_pk: int
    app_id: int
    agent_instance_id: str
    why: Literal["silent", "unconfirmed"]
    since: dt.datetime
    provider: str | None = None


@dataclass(frozen=True)
class Verdict:
    state: Literal["alive", "gone", "unknown"]
    seen: dict[str, Any]
    # unknown only: a transient failure is asked again at the next beat, others after recheck.
    transient: bool = False


def _attached_at(db: DbSession, session: Session) -> dt.datetime | None:
    """When roomwarden last handed ZEGO a new instance for this session (start or recreation)."""
    recreated = db.scalar(
        select(func.max(PolicyAction.finished_at)).where(
            PolicyAction.session_id == session.id,
            PolicyAction.kind == ActionKind.RECREATE,
            PolicyAction.state == ActionState.DONE,
        )
    )
    marks = [t for t in (session.provisioned_at, recreated) if t is not None]
    return max(marks) if marks else None


def suspects(
    db: DbSession,
    book: PolicyBook,
    now: dt.datetime,
    limit: int = 50,
    askable: Callable[[int], bool] = lambda _app_id: True,
) -> list[Suspect]:
    """Live ZEGO instances silent past ``reconcile.silent_seconds``, or never confirmed by an
    AgentInstanceCreated within ``unconfirmed_seconds`` of being made; oldest first.

    Only for apps roomwarden may ask about (``askable``: a server secret is configured). A session
    is asked about at most once per ``recheck_seconds``, doubled after every ask that settled
    nothing (``next_ask``), and no more after ``max_attempts`` of those (flagged
    ``reconcile_gave_up``, for a person to look at): any signed
    AgentInstanceId makes a session, and one review saw 30 such sessions cost 18,401 status
    queries in 100 minutes when every one was asked every beat.
    """
    rows = db.execute(
        select(Session, AgentInstance)
        .join(AgentInstance, AgentInstance.session_id == Session.id)
        .where(
            Session.state.in_([SessionState.ACTIVE, SessionState.RECOVERING, SessionState.STARTING]),
            AgentInstance.state != "deleted",
            AgentInstance.app_id != COZE_APP_ID,
            candidates.reconcile_due(book, now, _wait),
        )
    )
    found = []
    for session, instance in rows:
        rules = book.for_session(session.app_id, session.template).reconcile
        if session.reconcile_attempts >= rules.max_attempts or not askable(instance.app_id):
            continue
        due = next_ask(session, rules)
        if due is not None and now < due:
            continue
        if instance.created_at is not None and instance.last_event_at is not None:
            why: Literal["silent", "unconfirmed"] = "silent"
            since: dt.datetime | None = instance.last_event_at
            threshold = rules.silent_seconds
        else:
            why, threshold = "unconfirmed", rules.unconfirmed_seconds
            since = _attached_at(db, session) or instance.last_event_at
        if since is None or now - since < dt.timedelta(seconds=threshold):
            continue
        found.append(
            Suspect(
                session.id,
                instance.id,
                instance.app_id,
                instance.agent_instance_id,
                why,
                since,
                session.provider,
            )
        )
    found.sort(key=lambda s: s.since)
    return found[:limit]


GAVE_UP = "reconcile_gave_up"


def next_ask(session: Session, rules: Reconcile) -> dt.datetime | None:
    """When this session may be asked about again: ``recheck_seconds`` after the last ask,
    doubled for each ask in a row that settled nothing, at most ``max_backoff_seconds``."""
    if session.reconciled_at is None:
        return None
    return session.reconciled_at + _wait(rules, session.reconcile_attempts)


def _wait(rules: Reconcile, attempts: int) -> dt.timedelta:
    """How long after an ask ``next_ask`` waits, after ``attempts`` asks that settled nothing."""
    backoff = RetryPolicy(
        base=rules.recheck_seconds, cap=rules.max_backoff_seconds, jitter="none", deadline=None
    )
    return dt.timedelta(seconds=backoff.delay(attempts - 1))


# Reconciliation may use this share of ZEGO's QueryAgentInstanceStatus budget (10/s per app, paced
# at 90%); the rest stays free for the status checks that precede every recreation and ending.
RECONCILE_SHARE = 0.3


def within_budget(limiter: Limiter, app_id: int, action: str = "QueryAgentInstanceStatus") -> bool:
    """Take a reconciliation slot for ``app_id`` now, or say there is none: reconciling waits for
    nothing, it stops for this beat and the next beat goes on where it stopped. ``action``: whose
    budget (the status query's, or GetAgentInstanceMsgList's for gap repair) it takes a share of."""
    rate = ZegoAgentClient.RATES.get(action, ZegoAgentClient.DEFAULT_RATE)
    key = f"reconcile:{app_id}" if action == "QueryAgentInstanceStatus" else f"reconcile:{action}:{app_id}"
    try:
        limiter.acquire(key, rate * ZegoAgentClient.HEADROOM * RECONCILE_SHARE, 0.0)
    except RateLimitTimeout:
        return False
    return True


def ask(suspect: Suspect, vendors: Vendors) -> Verdict:
    """QueryAgentInstanceStatus: a status means alive, 410001002 means gone, anything else unknown."""
    from worker.vendors.zego.errors import ZegoNotFoundError

    try:
        # One attempt: the backoff between asks (``next_ask``) is the retry.
        status = vendors.zego_agent(suspect.app_id).query_agent_instance_status(
            suspect.agent_instance_id, retry=False
        )
    except ZegoNotFoundError as exc:
        if exc.code == 410001002:
            return Verdict("gone", {"code": exc.code, "message": exc.message})
        return Verdict("unknown", {"code": exc.code, "message": str(exc)})
    except VendorNotConfigured as exc:
        return Verdict("unknown", {"error": str(exc)})
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        return Verdict(
            "unknown", {"code": failure.code, "message": failure.message}, transient=failure.transient
        )
    return Verdict("alive", {"status": status})


def settle(
    db: DbSession, suspect: Suspect, verdict: Verdict, book: PolicyBook, now: dt.datetime
) -> list[PolicyAction]:
    """Write down what ZEGO said: alive → checked; gone → the instance is deleted and the policy
    decides (``decisions.on_lost``: end, or recreate), with reason ``reconciled``."""
    session = db.scalars(
        select(Session)
        .where(Session.id == suspect.session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    instance = db.get(AgentInstance, suspect.instance_pk, populate_existing=True)
    if session is None or instance is None or instance.state == "deleted":
        return []  # the deletion callback arrived while we were asking
    seen = {**verdict.seen, "asked_at": now.isoformat(), "why": suspect.why}
    policy = book.for_session(session.app_id, session.template)
    session.reconciled_at = now
    if verdict.state != "gone":
        # Logged when something changes (the first inconclusive ask, giving up), not at every ask.
        session.reconcile_attempts += 1
        if verdict.state == "unknown" and session.reconcile_attempts == 1:
            log.warning("reconcile_unknown", session_id=session.id, **verdict.seen)
        if session.reconcile_attempts >= policy.reconcile.max_attempts:
            # Still alive but silent, or never answered: a person should look; asking more won't tell.
            session.flag = session.flag or GAVE_UP
            log.warning(
                "reconcile_gave_up",
                session_id=session.id,
                attempts=session.reconcile_attempts,
                **verdict.seen,
            )
        return []
    session.reconcile_attempts = 0
    family = list(db.scalars(select(AgentInstance).where(AgentInstance.session_id == session.id)))
    others_live = any(i.state != "deleted" for i in family if i.id != instance.id)
    decision: Decision | None = None
    if not others_live and session.policy_reason is None and session.end_requested_at is None:
        window = policy.on_deleted.window_seconds
        decision = decisions.on_lost(
            policy,
            session,
            instance,
            recent_recreations=decisions.recent_recreations(db, session.id, now=now, window=window),
            seen=seen,
        )
    if policy.dry("reconcile"):
        if decision is None:
            return []
        # A key of its own: a dry row must not take the key a real deletion callback would use.
        dry = replace(decision, trigger_key=f"{decision.trigger_key}:reconciled_dry")
        action = decisions.record(db, session, dry, now=now)
        return [action] if action is not None else []
    instance.state = "deleted"
    instance.deleted_at = now
    instance.delete_code = None
    if decision is None and not others_live and session.policy_reason is None:
        session.policy_reason = "reconciled"  # ended on purpose, but the callback never came
    action = decisions.record(db, session, decision, now=now) if decision is not None else None
    lifecycle.refresh(db, session, learned="reconciliation")
    log.info("reconciled_gone", session_id=session.id, agent_instance_id=instance.agent_instance_id)
    return [action] if action is not None else []


def coze_overdue(db: DbSession, book: PolicyBook, now: dt.datetime) -> list[str]:
    """End live Coze sessions older than ``coze.max_room_seconds``: their room cannot still be up.

    Coze has no room status API and no callbacks; the watcher ends rooms by the silence rule,
    but one whose conversation cannot be read any more would stay "active" (and look billed)
    for ever. Past the vendor's room lifetime it is taken as gone, reason ``reconciled``.
    """
    overdue = db.execute(
        select(Session.id, Session.template, Session.started_at).where(
            Session.provider == Provider.COZE,
            Session.state == SessionState.ACTIVE,
            candidates.coze_overdue(book, now, COZE_APP_ID),
        )
    )
    ended = []
    for session_id, template, started_at in list(overdue):
        limit = book.for_session(COZE_APP_ID, template).coze.max_room_seconds
        if started_at is None or now - started_at < dt.timedelta(seconds=limit):
            continue
        session = _lock(db, session_id)
        if session is None or session.state != SessionState.ACTIVE:
            continue
        for instance in db.scalars(select(AgentInstance).where(AgentInstance.session_id == session_id)):
            if instance.state != "deleted":
                instance.state, instance.deleted_at = "deleted", now
        session.policy_reason = session.policy_reason or "reconciled"
        lifecycle.refresh(db, session, learned="reconciliation")
        ended.append(session_id)
    return ended
