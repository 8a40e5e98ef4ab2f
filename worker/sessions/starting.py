"""Starting a session's agent at the vendor: the start saga, run by a worker.

The vendor call never holds a database transaction open across HTTP (on the embedded SQLite that
would stop every other writer), so a start is three short steps:

1. ``claim_start``: mark the session as being started (a second task finding a fresh claim
   leaves it alone) and hand back the unsealed request;
2. ``call_vendor``: the vendor call, no database;
3. ``record_started`` / ``record_failed`` / ``release_claim``: what came of it.

:func:`start` runs the three, with the quota check before and the retry decision after.

Callbacks can outrun step 3: ZEGO may deliver AgentInstanceCreated before the task has written
the new AgentInstanceId down, and the drain then files the instance under a session of its own.
``record_started`` adopts such a session into the one the API made, so callbacks for instances
roomwarden started always end up on their session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession

from worker.db import insert_ignoring_conflicts, session_scope, utcnow
from worker.events import sessions as session_events
from worker.jobs import leases
from worker.models import (
    COZE_APP_ID,
    AgentException,
    AgentInstance,
    Provider,
    Session,
    SessionState,
    TimelineEvent,
    Turn,
    UserAudio,
)
from worker.policies import quotas
from worker.policies.config import Policy, PolicyBook
from worker.sealing import Sealer
from worker.sessions.lifecycle import earliest, latest, refresh
from worker.vendors.errors import Failure, VendorNotConfigured, classify
from worker.vendors.retries import RetryPolicy

if TYPE_CHECKING:
    from worker.jobs.context import JobContext
    from worker.vendors.clients import Vendors

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StartOrder:
    session_id: str
    provider: Provider
    app_id: int
    params: dict[str, Any]
    agent: dict[str, Any] | None
    attempt: int


@dataclass(frozen=True)
class Started:
    # Only what the vendor handed back and no column holds; the API adds room and user.
    join_info: dict[str, Any]
    agent_instance_id: str | None = None  # ZEGO; a Coze room is filed under its room id
    room_id: str | None = None  # Coze: the vendor names the room
    uid: str | None = None
    conversation_id: str | None = None


def claim_start(
    db: DbSession,
    session_id: str,
    *,
    sealer: Sealer | None,
    now: dt.datetime,
    stale_after: float,
    book: PolicyBook | None = None,
) -> StartOrder | None:
    """The request to send, if this session still needs starting and nobody else is at it."""
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one_or_none()
    if session is None or session.state != SessionState.STARTING or session.provisioned_at is not None:
        return None
    if session.start_claimed_at is not None and now - session.start_claimed_at < dt.timedelta(
        seconds=stale_after
    ):
        return None
    spec = session.spec or {}
    if sealer is not None:
        spec = sealer.unseal(spec)
    session.start_claimed_at = now
    session.start_attempts = (session.start_attempts or 0) + 1
    provider = Provider(str(session.provider))
    params = spec.get("params", {})
    if book is not None:
        params = with_absent_limit(params, provider, book.for_session(session.app_id, session.template))
    return StartOrder(
        session_id=session.id,
        provider=provider,
        app_id=session.app_id,
        params=params,
        agent=spec.get("agent"),
        attempt=session.start_attempts,
    )


def with_absent_limit(params: dict[str, Any], provider: Provider, policy: Policy) -> dict[str, Any]:
    """The request with the policy's ``idle.user_absent_seconds`` as ZEGO's MaxIdleTime.

    What an agent costs after its user left without hanging up is decided by ZEGO's own clock,
    which sees the user leave; roomwarden only hears silence. A value the request sets itself wins
    (the app knows its room); Coze rooms have no such setting. A live digital human has no user:
    its MaxIdleTime counts from the last TTS (default 900 s, range [30, 86400]), so the user's
    absence limit is not its business and ZEGO's default is kept.
    """
    seconds = policy.idle.user_absent_seconds
    if seconds is None or provider in (Provider.COZE, Provider.ZEGO_LIVE_DIGITAL_HUMAN):
        return params
    advanced = params.get("AdvancedConfig")
    if isinstance(advanced, dict) and advanced.get("MaxIdleTime") is not None:
        return params
    return {**params, "AdvancedConfig": {**(advanced or {}), "MaxIdleTime": seconds}}


def release_claim(db: DbSession, session_id: str) -> None:
    """A transient failure: let the retry claim the start again."""
    db.execute(update(Session).where(Session.id == session_id).values(start_claimed_at=None))


def record_failed(
    db: DbSession, session_id: str, *, code: int | None, message: str, now: dt.datetime
) -> None:
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one_or_none()
    if session is None or session.state != SessionState.STARTING or session.provisioned_at is not None:
        return
    before = session.state
    session.state = SessionState.FAILED
    session.end_reason = "vendor_error"
    session.end_code = code
    session.failure_message = message[:1024]
    session.ended_at = now
    session.start_claimed_at = None
    session_events.changed(db, session, before, instances=[], learned="api")


def record_started(db: DbSession, session_id: str, started: Started, *, now: dt.datetime) -> bool:
    """Write down what the vendor made. True when the session was ended meanwhile: delete it now."""
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one()
    session.join_info = started.join_info
    session.provisioned_at = now
    session.start_claimed_at = None
    cancelled = session.state == SessionState.ENDED or session.end_requested_at is not None
    if session.provider == Provider.COZE:
        _record_coze_room(db, session, started, now=now)
    elif started.agent_instance_id is not None:
        attach_instance(db, session, started.agent_instance_id)
    return cancelled


def _record_coze_room(db: DbSession, session: Session, started: Started, *, now: dt.datetime) -> None:
    # A Coze bot is in its room (and billing) from the moment the room exists.
    session.conversation_id = started.conversation_id
    session.room_id = started.room_id
    session.user_id = started.uid or session.user_id
    session.started_at = session.last_activity_at = now
    db.execute(
        insert_ignoring_conflicts(AgentInstance, db.get_bind().dialect.name).values(
            app_id=COZE_APP_ID,
            agent_instance_id=f"coze:{session.room_id}",
            session_id=session.id,
            state="active",
            room_id=session.room_id,
            agent_id=session.agent_id,
            created_at=now,
            first_seen_at=now,
            last_event_at=now,
        )
    )
    refresh(db, session, learned="callback")  # active: its one instance is


def attach_instance(db: DbSession, session: Session, agent_instance_id: str) -> None:
    """File a new ZEGO instance under ``session``, adopting whatever its callbacks already built."""
    db.execute(
        insert_ignoring_conflicts(AgentInstance, db.get_bind().dialect.name).values(
            app_id=session.app_id,
            agent_instance_id=agent_instance_id,
            session_id=session.id,
            state="starting",
            agent_user_id=session.agent_user_id,
            room_id=session.room_id,
            agent_id=session.agent_id,
        )
    )
    owner = db.scalar(
        select(AgentInstance.session_id).where(
            AgentInstance.app_id == session.app_id, AgentInstance.agent_instance_id == agent_instance_id
        )
    )
    if owner is not None and owner != session.id:
        adopt(db, session, owner)


def adopt(db: DbSession, session: Session, orphan_id: str) -> None:
    """Move everything callbacks filed under session ``orphan_id`` into ``session`` and drop it."""
    orphan = db.scalars(select(Session).where(Session.id == orphan_id).with_for_update()).one_or_none()
    if orphan is None or orphan.origin != "callback":
        return  # another API session owns it: not ours to take
    for model in (AgentInstance, Turn, TimelineEvent, AgentException, UserAudio):
        db.execute(update(model).where(model.session_id == orphan_id).values(session_id=session.id))
    if orphan.started_at is not None:
        session.started_at = earliest(session.started_at, orphan.started_at)
    for name in ("last_activity_at", "last_user_speech_at"):
        value = getattr(orphan, name)
        if value is not None:
            setattr(session, name, latest(getattr(session, name), value))
    session.agent_name = session.agent_name or orphan.agent_name
    # Its turns came along: so do their counts.
    session.user_turns += orphan.user_turns
    session.agent_turns += orphan.agent_turns
    session.interrupted_turns += orphan.interrupted_turns
    db.execute(delete(Session).where(Session.id == orphan_id))
    db.expire(session, ["instances"])
    refresh(db, session, learned="callback")


def starts_to_resume(db: DbSession, *, now: dt.datetime, stale_after: float) -> list[str]:
    """API sessions whose start message was lost or whose worker died mid-start."""
    cutoff = now - dt.timedelta(seconds=stale_after)
    return list(
        db.scalars(
            select(Session.id)
            .where(
                Session.origin == "api",
                Session.state == SessionState.STARTING,
                Session.provisioned_at.is_(None),
                Session.created_at < cutoff,
            )
            .where((Session.start_claimed_at.is_(None)) | (Session.start_claimed_at < cutoff))
            .limit(100)
        )
    )


def call_vendor(order: StartOrder, vendors: Vendors) -> Started:
    """The vendor call that makes the agent; raises the vendor's typed errors."""
    if order.provider is Provider.COZE:
        coze = vendors.coze()
        params = dict(order.params)
        # Passing our own conversation is the practical way to read the room's messages later.
        conversation_id = params.get("conversation_id") or coze.create_conversation(str(params["bot_id"]))
        params["conversation_id"] = conversation_id
        room = coze.create_room(params)
        return Started(
            join_info={"app_id": room.app_id, "token": room.token},
            room_id=room.room_id,
            uid=room.uid,
            conversation_id=conversation_id,
        )
    from worker.vendors.zego.errors import ZegoConflictError

    client = vendors.zego_agent(order.app_id)
    if order.agent is not None:
        # Registered already (by an earlier session or attempt): just what we wanted.
        with contextlib.suppress(ZegoConflictError):
            client.register_agent(order.agent)
    if order.provider in (Provider.ZEGO_DIGITAL_HUMAN, Provider.ZEGO_LIVE_DIGITAL_HUMAN):
        human = (
            client.create_digital_human_agent_instance(order.params)
            if order.provider is Provider.ZEGO_DIGITAL_HUMAN
            else client.create_live_digital_human_agent_instance(order.params)
        )
        join = {
            "agent_instance_id": human.agent_instance_id,
            "digital_human_config": human.digital_human_config,
        }
        return Started(join_info=join, agent_instance_id=human.agent_instance_id)
    created = client.create_agent_instance(order.params)
    return Started(
        join_info={"agent_instance_id": created.agent_instance_id},
        agent_instance_id=created.agent_instance_id,
    )


# --- the saga, as a worker runs it -----------------------------------------------------------


@dataclass(frozen=True)
class StartOutcome:
    """What a start came to, and what the task must do after it (each after the commit)."""

    result: str  # started, queued, skipped, failed, retry
    actions: list[tuple[int, float]] = field(default_factory=list)  # policy actions to run
    retry_in: float | None = None  # ask again after this many seconds
    end_now: bool = False  # ended while it was starting: delete the agent just made
    error: BaseException | None = None  # the vendor error a retry is for


def start(job: JobContext, session_id: str) -> StartOutcome:
    """Quota check and claim, vendor call, record: each its own transaction, none across HTTP."""
    with session_scope(job.sessions) as db:
        # In one transaction: the quota check's per-app lock lasts until the claim is visible.
        admission = quotas.admit(db, session_id, job.book, now=utcnow())
        order = None
        if admission.go:
            order = claim_start(
                db,
                session_id,
                sealer=job.sealer,
                now=utcnow(),
                stale_after=job.settings.start_stale_seconds,
                book=job.book,
            )
    if admission.retry_in is not None:
        return StartOutcome("retry", admission.actions, retry_in=admission.retry_in)
    if order is None:
        return StartOutcome("queued" if admission.queued else "skipped", admission.actions)
    # Bound for this call only: a worker process runs many tasks, and a field left behind would
    # label every later log line with a session it has nothing to do with.
    with structlog.contextvars.bound_contextvars(session_id=session_id, provider=order.provider.value):
        outcome = _call(job, order)
    return StartOutcome(
        outcome.result,
        admission.actions,
        retry_in=outcome.retry_in,
        end_now=outcome.end_now,
        error=outcome.error,
    )


def _call(job: JobContext, order: StartOrder) -> StartOutcome:
    session_id = order.session_id
    try:
        started = call_vendor(order, job.vendors)
    except VendorNotConfigured as exc:
        with session_scope(job.sessions) as db:
            record_failed(db, session_id, code=None, message=str(exc), now=utcnow())
        return StartOutcome("failed")
    except Exception as exc:
        failure = classify(exc)
        if failure is None:  # ours, not the vendor's: let the next attempt claim it again
            with session_scope(job.sessions) as db:
                release_claim(db, session_id)
            raise
        return _refused(job, order, exc, failure)
    with session_scope(job.sessions) as db:
        cancelled = record_started(db, session_id, started, now=utcnow())
    log.info("session_started", agent_instance_id=started.agent_instance_id)
    return StartOutcome("started", end_now=cancelled)


def _refused(job: JobContext, order: StartOrder, exc: Exception, failure: Failure) -> StartOutcome:
    """The vendor said no: wait in line (its quota), try again later (transient) or fail."""
    session_id = order.session_id
    if failure.code in quotas.VENDOR_QUOTA_CODES:  # full after all: wait in line, do not fail
        with session_scope(job.sessions) as db:
            quotas.on_vendor_quota(db, session_id, utcnow())
        log.warning("session_start_queued", code=failure.code)
        return StartOutcome("queued")
    if failure.transient and order.attempt < job.settings.start_max_attempts:
        with session_scope(job.sessions) as db:
            release_claim(db, session_id)
        backoff = RetryPolicy(
            base=job.settings.start_retry_base_seconds, cap=math.inf, jitter="equal", deadline=None
        )
        delay = backoff.delay(order.attempt - 1)
        log.warning("session_start_retry", attempt=order.attempt, code=failure.code, delay=delay)
        return StartOutcome("retry", retry_in=delay, error=exc)
    with session_scope(job.sessions) as db:
        record_failed(db, session_id, code=failure.code, message=failure.message, now=utcnow())
    log.warning("session_start_failed", code=failure.code, attempt=order.attempt)
    return StartOutcome("failed")


def resume(job: JobContext, enqueue: Callable[[str], object]) -> int:
    """Send again the starts ``resumable`` finds, one resumer at a time across beats and workers."""
    with leases.held(job.sessions, "resume-starts") as mine:
        if not mine:
            return 0
        ids = resumable(job)
        for session_id in ids:
            enqueue(session_id)
    return len(ids)


def resumable(job: JobContext) -> list[str]:
    """The sessions ``resume_starts`` sends again: start message lost, or worker died mid-start."""
    with session_scope(job.sessions) as db:
        return starts_to_resume(db, now=utcnow(), stale_after=job.settings.start_stale_seconds)
