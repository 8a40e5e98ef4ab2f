"""``turn.completed``: a turn is announced once its Round is over.

A Round is over when the agent's status for it (or a later Round) returns to IDLE, when the user's
words of a later Round are recognised (ASRResult), or when its instance is deleted. By then an
interrupted agent turn has its played text too (ZEGO sends Interrupted before the IDLE). Words
that arrive after the Round was announced are in the API and the transcript, not in a second
event: each turn is announced once, and never after its session's ``session.ended``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session as DbSession

from worker.events.outbox import Event, emit
from worker.models import AgentInstance, Session, Turn
from worker.privacy.modes import for_reader
from worker.settings import Settings

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
    complete_many(db, [(session, instance, through)])


def complete_many(db: DbSession, marks: Sequence[tuple[Session, AgentInstance, int]]) -> None:
    """``complete`` for several instances at once: one query and one insert for a whole drain batch."""
    announce(db, advance(marks))


@dataclass(frozen=True, slots=True)
class Completed:
    """An instance's Rounds after ``after`` up to ``through``, just shown to be over."""

    session: Session
    instance: AgentInstance
    after: int | None
    through: int


def advance(marks: Sequence[tuple[Session, AgentInstance, int]]) -> list[Completed]:
    """Move the instances' marks (``completed_round``) to ``through`` where that is further on.

    Only in memory: a drain batch moves them before its flush, so that each instance is written
    once a batch, and announces the Rounds that moved after it (``announce``), once the turns are
    in the database.
    """
    moved = []
    for session, instance, through in marks:
        if instance.completed_round is None or through > instance.completed_round:
            moved.append(Completed(session, instance, instance.completed_round, through))
            instance.completed_round = through
    return moved


def announce(db: DbSession, moved: Sequence[Completed], *, settings: Settings | None = None) -> None:
    """``turn.completed`` for the told turns of the Rounds that ``advance`` moved past, in order."""
    if not moved:
        return
    ranges = [
        and_(
            Turn.instance_id == m.instance.id,
            Turn.round <= m.through,
            Turn.round > (-(2**63) if m.after is None else m.after),
        )
        for m in moved
    ]
    found: dict[int, list[Turn]] = {}
    # user before agent within a Round
    for turn in db.scalars(select(Turn).where(or_(*ranges)).order_by(Turn.round, Turn.speaker.desc())):
        found.setdefault(turn.instance_id, []).append(turn)
    events: list[Event] = []
    for m in moved:
        told = [t for t in found.get(m.instance.id, []) if t.text or t.interrupted]
        events.extend(_event(m.session, m.instance, turn, settings) for turn in told)
    emit(db, events)


def _event(session: Session, instance: AgentInstance, turn: Turn, settings: Settings | None) -> Event:
    data = about(session, instance.agent_instance_id)
    data.update(
        round=turn.round,
        speaker=turn.speaker,
        # An app's endpoint is a reader like any other: redacted unless the mode is off.
        text=for_reader(turn.text, session.app_id, session.template, settings=settings),
        spoken_at=turn.spoken_at.isoformat() if turn.spoken_at else None,
        interrupted=turn.interrupted,
    )
    if turn.speaker == "user":
        data["user_id"] = turn.user_id or session.user_id
    if turn.interrupted:
        data["interrupt_reason"] = turn.interrupt_reason
        played = turn.played_text
        data["played_text"] = (
            for_reader(played, session.app_id, session.template, settings=settings) if played else played
        )
    return Event(
        type="turn.completed",
        key=f"turn.completed:{turn.id}",
        data=data,
        occurred_at=turn.spoken_at or dt.datetime.now(dt.UTC),
        session_id=session.id,
        app_id=session.app_id,
    )
