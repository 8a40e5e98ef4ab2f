"""Sessions and instances as the policies find them, written straight to the database."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID
from worker.db import utcnow
from worker.models import AgentInstance, Provider, Session, SessionState

SPEC: dict[str, Any] = {
    "params": {
        "AgentId": "concierge",
        "UserId": "user_1",
        "RTC": {
            "RoomId": "room_1",
            "AgentStreamId": "as_1",
            "AgentUserId": "agent_1",
            "UserStreamId": "us_1",
        },
        "CallbackConfig": {"ASRResult": 1},
    }
}


def live_session(
    db: DbSession,
    *,
    origin: str = "api",
    provider: Provider = Provider.ZEGO,
    template: str | None = None,
    started_ago: float = 60.0,
    quiet_for: float | None = 30.0,
    instance: str | None = None,
    **values: Any,
) -> tuple[Session, AgentInstance]:
    """An active session with one active instance, started ``started_ago`` seconds ago."""
    now = utcnow()
    started = now - dt.timedelta(seconds=started_ago)
    session = Session(
        id=str(uuid.uuid4()),
        app_id=APP_ID,
        origin=origin,
        state=SessionState.ACTIVE,
        provider=provider.value,
        template=template,
        spec=SPEC if origin == "api" else None,
        room_id="room_1",
        user_id="user_1",
        agent_user_id="agent_1",
        agent_id="concierge",
        created_at=started,
        started_at=started,
        provisioned_at=started,
        last_user_speech_at=now - dt.timedelta(seconds=quiet_for) if quiet_for is not None else None,
        start_attempts=1,
        **values,
    )
    agent = AgentInstance(
        app_id=APP_ID,
        agent_instance_id=instance or str(uuid.uuid4().int)[:19],
        session_id=session.id,
        state="active",
        agent_user_id="agent_1",
        room_id="room_1",
        created_at=started,
        first_seen_at=started,
        last_event_at=now,
    )
    db.add_all([session, agent])
    db.flush()
    return session, agent


def deleted(db: DbSession, agent: AgentInstance, code: int, *, ago: float = 5.0) -> None:
    """The instance as an AgentInstanceDeleted with ``code`` leaves it."""
    agent.state = "deleted"
    agent.delete_code = code
    agent.deleted_at = utcnow() - dt.timedelta(seconds=ago)
    db.flush()
