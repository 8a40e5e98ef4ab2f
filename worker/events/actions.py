"""``action.completed`` / ``action.failed``: a policy action (worker/policies/) came to an end."""

from __future__ import annotations

from sqlalchemy.orm import Session as DbSession

from worker.db import utcnow
from worker.events import turns
from worker.events.outbox import Event, emit
from worker.models import ActionState, PolicyAction, Session

TYPES = {ActionState.DONE: "action.completed", ActionState.FAILED: "action.failed"}


def finished(db: DbSession, action: PolicyAction, session: Session) -> None:
    """Announce a finished action: done or failed (skipped and dry-run ones did nothing to tell)."""
    type_ = TYPES.get(ActionState(action.state))
    if type_ is None:
        return
    data = turns.about(session, action.agent_instance_id)
    data.update(
        action_id=action.id,
        action=action.kind,
        reason=action.reason,
        policy=action.policy,
        attempts=action.attempts,
        result=action.result,
        error=action.error,
    )
    emit(
        db,
        [
            Event(
                type=type_,
                key=f"{type_}:{action.id}",
                data=data,
                occurred_at=action.finished_at or utcnow(),
                session_id=session.id,
                app_id=session.app_id,
            )
        ],
    )
