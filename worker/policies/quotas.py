"""Vendor quotas: a session that would exceed one waits in line (or makes room), never fails silently.

ZEGO runs 10 voice instances (and, counted apart, 10 digital humans) per account by default and
refuses the 11th with 410000011 / 410001031. Coze bills every room from its creation with a
three-minute minimum, so roomwarden caps room creations per minute and refuses a second live
room for the same user and bot.

``admit`` runs in ``start_session``, in the same transaction as ``starting.claim_start``:

- ZEGO: the app's live instances of the session's kind, plus starts already claimed and not yet
  answered, against ``quota.voice_instances`` / ``digital_human_instances``. Full, or others
  already waiting: the session is QUEUED (``when_full = "recycle_idle"`` also records a RECYCLE
  of the app's longest-idle session, which frees the slot). ``dequeue``, every policy interval
  and as soon as a drain has applied a deletion of the app's (``start_freed_slots``), starts the
  oldest queued sessions that fit and fails those past ``queue_timeout_seconds`` with reason
  ``queue_timeout``.
- Coze: more than ``coze.rooms_per_minute`` creations in the last minute → try again later.

Two starts of one app admitted at once could both see the last free slot, so ``admit`` and
``dequeue`` take a per-app transaction lock (``pg_advisory_xact_lock``) on Postgres; SQLite
serialises writers anyway (every transaction begins IMMEDIATE). The lock is held until the
claim is committed, and a claimed start counts as in flight, so the next admission sees it.

Limits are read from the app's policy (a quota is an account matter); ``when_full`` and the
queue timeout from the session's own (a template may prefer making room to waiting). A
dry-run quota policy still queues (queueing calls no vendor and loses nothing); only the
recycling of another session is recorded rather than done.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field

import structlog
from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.orm import Session as DbSession

from worker.events import sessions as session_events
from worker.models import COZE_APP_ID, AgentInstance, Provider, Session, SessionState
from worker.policies import decisions
from worker.policies.config import Policy, PolicyBook
from worker.policies.scans import quiet_since

log = structlog.get_logger(__name__)

# ZEGO's "too many concurrent instances": voice agents, digital humans.
VENDOR_QUOTA_CODES = frozenset({410000011, 410001031})


@dataclass(frozen=True)
class Admission:
    go: bool  # claim the start now
    queued: bool = False
    retry_in: float | None = None  # Coze rate cap: ask again after this many seconds
    reason: str = ""
    # A RECYCLE recorded to make room (pending): enqueue with tasks.enqueue_actions after commit.
    actions: list[tuple[int, float]] = field(default_factory=list)


# Live digital humans count against the digital-human limit (vendor-facts 5.6: "including live
# digital humans").
DIGITAL_HUMANS = (Provider.ZEGO_DIGITAL_HUMAN.value, Provider.ZEGO_LIVE_DIGITAL_HUMAN.value)


def is_digital_human(provider: str | None) -> bool:
    return provider in DIGITAL_HUMANS


def _kind(provider: str | None) -> ColumnElement[bool]:
    """Sessions counted against the same ZEGO limit as ``provider`` (callback sessions are voice)."""
    if is_digital_human(provider):
        return Session.provider.in_(DIGITAL_HUMANS)
    return or_(Session.provider.is_(None), Session.provider == Provider.ZEGO)


def limit_for(policy: Policy, provider: str | None) -> int:
    quota = policy.quota
    return quota.digital_human_instances if is_digital_human(provider) else quota.voice_instances


def _serialise(db: DbSession, app_id: int) -> None:
    """Hold the app's quota lock until commit (Postgres); SQLite's BEGIN IMMEDIATE already does."""
    if db.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"roomwarden-quota:{app_id}".encode())
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def in_use(db: DbSession, app_id: int, provider: str | None, *, excluding: str | None = None) -> int:
    """Live instances of the app and kind, plus starts claimed (or dequeued) and not yet answered."""
    live = db.scalar(
        select(func.count())
        .select_from(AgentInstance)
        .join(Session, Session.id == AgentInstance.session_id)
        .where(AgentInstance.app_id == app_id, AgentInstance.state != "deleted", _kind(provider))
    )
    starting = db.scalar(
        select(func.count())
        .select_from(Session)
        .where(
            Session.app_id == app_id,
            Session.state == SessionState.STARTING,
            # Claimed, or let out of the queue and about to be: either way, the slot is taken.
            or_(Session.start_claimed_at.is_not(None), Session.queued_at.is_not(None)),
            Session.provisioned_at.is_(None),
            Session.id != (excluding or ""),
            _kind(provider),
        )
    )
    return int(live or 0) + int(starting or 0)


def _waiting_ahead(db: DbSession, session: Session) -> int:
    """Queued sessions of the same app and kind that came before this one: they go first."""
    ahead = (
        select(func.count())
        .select_from(Session)
        .where(
            Session.app_id == session.app_id,
            Session.state == SessionState.QUEUED,
            Session.id != session.id,
            _kind(session.provider),
        )
    )
    if session.queued_at is not None:
        ahead = ahead.where(Session.queued_at < session.queued_at)
    return int(db.scalar(ahead) or 0)


def admit(db: DbSession, session_id: str, book: PolicyBook, now: dt.datetime) -> Admission:
    """May this session's start go to the vendor now? Queues it (or asks for a retry) if not."""
    probe = db.get(Session, session_id)
    if probe is None:
        return Admission(go=True)  # nothing to start: claim_start will say so
    _serialise(db, probe.app_id)
    session = db.scalars(
        select(Session)
        .where(Session.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if session.state == SessionState.QUEUED:
        return Admission(go=False, queued=True, reason="queued")  # a duplicate message: keep waiting
    if session.state != SessionState.STARTING or session.provisioned_at is not None:
        return Admission(go=True)
    policy = book.for_session(session.app_id, session.template)
    if session.provider == Provider.COZE:
        return _admit_coze(db, session, policy, now)
    limit = limit_for(book.for_session(session.app_id, None), session.provider)
    used, ahead = (
        in_use(db, session.app_id, session.provider, excluding=session.id),
        _waiting_ahead(db, session),
    )
    if used < limit and ahead == 0:
        return Admission(go=True)
    actions = []
    if policy.quota.when_full == "recycle_idle":
        made_room = _make_room(db, session, policy, now)
        if made_room is not None:
            actions.append(made_room)
    _queue(session, now)
    log.info("session_queued", session_id=session.id, in_use=used, limit=limit, ahead=ahead)
    return Admission(go=False, queued=True, reason="quota", actions=actions)


def _queue(session: Session, now: dt.datetime) -> None:
    session.state = SessionState.QUEUED
    session.queued_at = session.queued_at or now  # a session put back keeps its place in line
    session.start_claimed_at = None


def _make_room(db: DbSession, session: Session, policy: Policy, now: dt.datetime) -> tuple[int, float] | None:
    """Record a RECYCLE of the app's longest-idle active session of the same kind."""
    candidates = db.execute(
        select(Session, AgentInstance)
        .join(AgentInstance, AgentInstance.session_id == Session.id)
        .where(
            Session.app_id == session.app_id,
            Session.state == SessionState.ACTIVE,
            Session.policy_reason.is_(None),
            Session.end_requested_at.is_(None),
            AgentInstance.state == "active",
            _kind(session.provider),
        )
    )
    ranked = sorted(
        (
            (since, victim, instance)
            for victim, instance in candidates
            if (since := quiet_since(victim, instance))
        ),
        key=lambda row: row[0],
    )
    if not ranked:
        return None
    since, victim, instance = ranked[0]
    # The waiting session's policy decided to make room, so its switches (dry-run) apply.
    decision = decisions.recycle(
        policy,
        victim,
        instance,
        section="quota",
        trigger_key=f"quota:{victim.id}",
        inputs={"for_session": session.id, "quiet_since": since.isoformat()},
        reason="quota",
    )
    action = decisions.record(db, victim, decision, now=now)
    if action is None or action.dry_run:
        return None
    log.info("quota_recycling", session_id=victim.id, for_session=session.id)
    return (action.id, 0.0)


def _admit_coze(db: DbSession, session: Session, policy: Policy, now: dt.datetime) -> Admission:
    """Cap Coze room creations per minute: each room bills at least three minutes."""
    minute_ago = now - dt.timedelta(seconds=60)
    recent = list(
        db.scalars(
            select(func.coalesce(Session.provisioned_at, Session.start_claimed_at)).where(
                Session.provider == Provider.COZE,
                Session.id != session.id,
                or_(
                    Session.provisioned_at >= minute_ago,
                    (Session.provisioned_at.is_(None)) & (Session.start_claimed_at >= minute_ago),
                ),
            )
        )
    )
    cap = policy.coze.rooms_per_minute
    if len(recent) < cap:
        return Admission(go=True)
    oldest = min(t for t in recent if t is not None)
    wait = max(1.0, (oldest + dt.timedelta(seconds=60) - now).total_seconds())
    log.info("coze_rate_capped", session_id=session.id, rooms_last_minute=len(recent), retry_in=wait)
    return Admission(go=False, retry_in=wait, reason="coze_rooms_per_minute")


def on_vendor_quota(db: DbSession, session_id: str, now: dt.datetime) -> bool:
    """ZEGO refused the start for its concurrency limit after all: queue it rather than fail it.

    It happens when another system shares the account, or the configured limit is above the
    account's. True when the session was put in the queue.
    """
    session = db.scalars(select(Session).where(Session.id == session_id).with_for_update()).one_or_none()
    if session is None or session.state != SessionState.STARTING or session.provisioned_at is not None:
        return False
    _queue(session, now)
    log.info("session_queued_by_vendor", session_id=session_id)
    return True


def anyone_waiting(db: DbSession, app_ids: set[int]) -> bool:
    """Whether sessions of these apps wait in line for a slot (the drain asks after a deletion)."""
    waiting = select(Session.id).where(Session.state == SessionState.QUEUED, Session.app_id.in_(app_ids))
    return db.scalar(waiting.limit(1)) is not None


def dequeue(db: DbSession, book: PolicyBook, now: dt.datetime) -> list[str]:
    """Start the oldest queued sessions that fit now; fail those that waited too long.

    Returns the ids to hand to ``start_session`` after the commit. A started session keeps its
    ``queued_at``, so should it be beaten to the slot it goes back in line at its old place.
    """
    # The per-app locks first, then the rows, in the order admit takes them: no deadlock.
    apps = db.scalars(select(Session.app_id).where(Session.state == SessionState.QUEUED).distinct())
    for app_id in sorted(apps):
        _serialise(db, app_id)
    queued = list(
        db.scalars(
            select(Session)
            .where(Session.state == SessionState.QUEUED)
            .order_by(Session.queued_at, Session.id)
            .with_for_update(skip_locked=True)
        )
    )
    starting: list[str] = []
    free: dict[tuple[int, bool], int] = {}
    for session in queued:
        timeout = book.for_session(session.app_id, session.template).quota.queue_timeout_seconds
        if session.queued_at is not None and now - session.queued_at > dt.timedelta(seconds=timeout):
            session.state = SessionState.FAILED
            session.end_reason = "queue_timeout"
            session.failure_message = f"waited {timeout:g} s for a free agent slot"
            session.ended_at = now
            session_events.changed(db, session, SessionState.QUEUED, instances=[], learned="policy")
            log.warning("session_queue_timeout", session_id=session.id)
            continue
        key = (session.app_id, is_digital_human(session.provider))
        if key not in free:
            limit = limit_for(book.for_session(session.app_id, None), session.provider)
            free[key] = limit - in_use(db, session.app_id, session.provider)
        if free[key] <= 0:
            continue
        free[key] -= 1
        session.state = SessionState.STARTING
        session.start_claimed_at = None
        starting.append(session.id)
    return starting


def duplicate_coze_room(
    db: DbSession, user_id: str, bot_id: str, policy: Policy, now: dt.datetime
) -> Session | None:
    """A live (or starting) Coze session for this user and bot made within the window, if any."""
    window = policy.coze.one_room_window_seconds
    if window <= 0:
        return None
    return db.scalars(
        select(Session)
        .where(
            Session.provider == Provider.COZE,
            Session.app_id == COZE_APP_ID,
            Session.user_id == user_id,
            Session.agent_id == bot_id,
            Session.state.in_([SessionState.STARTING, SessionState.ACTIVE, SessionState.QUEUED]),
            Session.created_at >= now - dt.timedelta(seconds=window),
        )
        .order_by(Session.created_at.desc())
        .limit(1)
    ).first()
