"""``turn.completed``: a turn is announced once its Round is over.

A Round is over when the agent's status for it (or a later Round) returns to IDLE, when the user's
words of a later Round are recognised (ASRResult), or when its instance is deleted. By then an
interrupted agent turn has its played text too (ZEGO sends Interrupted before the IDLE). Words
that arrive after the Round was announced are in the API and the transcript, not in a second
event: each turn is announced once, and never after its session's ``session.ended``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.events.outbox import Event, emit
from worker.models import AgentInstance, Session, Turn

# Everything the instance will ever say: its deletion completes every Round.
ALL_ROUNDS = 2**63 - 1


def about(session: Session, agent_instance_id: str | None) -> dict[str, object]:
    """What every event's ``data`` starts with: which conversation, where, with whom."""
    return {
        "session_id": session.id,
        "app_id": session.app_id,
        "room_id": session.room_id,
        "user_id": session.user_id,
        "agent_instance_id": agent_instance_id,
    }


def complete(db: DbSession, session: Session, instance: AgentInstance, through: int) -> None:
    """Announce the instance's turns of Rounds after its mark, up to ``through``, in order."""
    done = instance.completed_round
    if done is not None and through <= done:
        return
    query = select(Turn).where(Turn.instance_id == instance.id, Turn.round <= through)
    if done is not None:
        query = query.where(Turn.round > done)
    turns = list(db.scalars(query.order_by(Turn.round, Turn.speaker.desc())))  # user before agent
    instance.completed_round = through
    emit(db, [_event(session, instance, turn) for turn in turns if turn.text or turn.interrupted])


def _event(session: Session, instance: AgentInstance, turn: Turn) -> Event:
    data = about(session, instance.agent_instance_id)
    data.update(
        round=turn.round,
        speaker=turn.speaker,
        text=turn.text,
        spoken_at=turn.spoken_at.isoformat() if turn.spoken_at else None,
        interrupted=turn.interrupted,
    )
    if turn.speaker == "user":
        data["user_id"] = turn.user_id or session.user_id
    if turn.interrupted:
        data["interrupt_reason"] = turn.interrupt_reason
        data["played_text"] = turn.played_text
    return Event(
        type="turn.completed",
        key=f"turn.completed:{turn.id}",
        data=data,
        occurred_at=turn.spoken_at or dt.datetime.now(dt.UTC),
        session_id=session.id,
        app_id=session.app_id,
    )
