"""``callback.failed``: a stored callback could not be applied and is parked in the inbox.

It stays there for a person (``roomwarden inbox``); the app hears of it because the transcript
or the lifecycle of that session may now miss something.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import utcnow
from worker.events import turns
from worker.events.outbox import Event, emit
from worker.models import AgentInstance, InboxCallback, Session


def parked(db: DbSession, row: InboxCallback, *, attempts: int, error: str) -> None:
    session = db.scalars(
        select(Session)
        .join(AgentInstance, AgentInstance.session_id == Session.id)
        .where(AgentInstance.app_id == row.app_id, AgentInstance.agent_instance_id == row.agent_instance_id)
    ).first()
    data: dict[str, object] = (
        turns.about(session, row.agent_instance_id)
        if session is not None
        else {
            "session_id": None,
            "app_id": row.app_id,
            "room_id": None,
            "user_id": None,
            "agent_instance_id": row.agent_instance_id,
        }
    )
    data.update(
        inbox_id=row.id, callback_event=row.event, sequence=row.sequence, attempts=attempts, error=error
    )
    emit(
        db,
        [
            Event(
                type="callback.failed",
                key=f"callback.failed:{row.id}",
                data=data,
                occurred_at=utcnow(),
                session_id=session.id if session is not None else None,
                app_id=row.app_id,
            )
        ],
    )
