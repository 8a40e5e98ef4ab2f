"""``session.*`` events: emitted where a session's state changes, once per cause.

A cause is named in the event's key: the session (created, ended, failed), the instance that
went live or was lost (active, recovering). So a duplicate storm, a late deletion callback
after reconciliation, or a policy recreation (recovering, then active with a new instance)
each give exactly the events they should, and one ``session.ended`` per session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.events import turns
from worker.events.outbox import Event, emit
from worker.models import AgentInstance, Session, SessionState, Turn

# How roomwarden learned a session ended.
LEARNED = ("callback", "reconciliation", "policy", "api")


def created(db: DbSession, session: Session, agent_instance_id: str | None = None) -> None:
    emit(db, [_event("session.created", session, agent_instance_id, key=session.id)])


def live(db: DbSession, session: Session, agent_instance_id: str | None) -> None:
    """``session.active``: an agent instance is live in the session (the first, or a recreated one).

    Said when the instance's creation is applied, not only when the session's state moves: a
    backlog applied in one batch may take a session from starting to ended without ever
    resting in "active", and the app still hears that its agent was live.
    """
    event = _event("session.active", session, agent_instance_id, key=f"{session.id}:{agent_instance_id}")
    event.data["state"] = SessionState.ACTIVE.value
    emit(db, [event])


def changed(
    db: DbSession,
    session: Session,
    before: str,
    *,
    instances: Sequence[AgentInstance],
    learned: str,
) -> None:
    """Announce the state ``session`` is now in, if it was ``before`` something else."""
    state = session.state
    if state == before:
        return
    current = _current(instances)
    instance_id = current.agent_instance_id if current is not None else None
    if state == SessionState.ACTIVE:
        live(db, session, instance_id)
    elif state == SessionState.RECOVERING:
        recovering = _event(
            "session.recovering",
            session,
            instance_id,
            key=f"{session.id}:{instance_id}",
            reason=session.policy_reason,
            recovering_since=iso(session.recovering_since),
        )
        emit(db, [recovering])
    elif state == SessionState.ENDED:
        for instance in instances:  # every turn before the end, in order
            turns.complete(db, session, instance, turns.ALL_ROUNDS)
        emit(db, [_ended(db, session, instance_id, learned)])
    elif state == SessionState.FAILED:
        failed = _event(
            "session.failed",
            session,
            instance_id,
            key=session.id,
            end_reason=session.end_reason,
            end_code=session.end_code,
            message=session.failure_message,
        )
        emit(db, [failed])


def _ended(db: DbSession, session: Session, instance_id: str | None, learned: str) -> Event:
    if session.end_requested_at is not None:
        learned = "api"
    elif learned == "callback" and session.policy_reason not in (None, "reconciled"):
        learned = "policy"  # a policy ended it; the deletion callback only confirmed it
    started, ended = session.started_at, session.ended_at
    count = db.scalar(select(func.count()).select_from(Turn).where(Turn.session_id == session.id)) or 0
    return _event(
        "session.ended",
        session,
        instance_id,
        key=session.id,
        end_reason=session.end_reason,
        end_code=session.end_code,
        learned=learned,
        started_at=iso(started),
        ended_at=iso(ended),
        duration_seconds=(ended - started).total_seconds() if started and ended else None,
        turn_count=count,
    )


def _event(type_: str, session: Session, instance_id: str | None, *, key: str, **extra: object) -> Event:
    data = turns.about(session, instance_id)
    data["state"] = session.state
    data.update(extra)
    return Event(
        type=type_,
        key=f"{type_}:{key}",
        data=data,
        occurred_at=dt.datetime.now(dt.UTC),
        session_id=session.id,
        app_id=session.app_id,
    )


def _current(instances: Sequence[AgentInstance]) -> AgentInstance | None:
    """The instance the session is about now: a live one, else the last one seen."""
    live = [i for i in instances if i.state != "deleted"]
    pool = live or list(instances)
    if not pool:
        return None
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(pool, key=lambda i: (i.first_seen_at or i.created_at or floor, i.id or 0))
