"""Re-deriving every session and transcript from the inbox, the source of truth.

Useful after a bug fix in how callbacks are applied, and a standing proof that derived state is
a pure function of the stored callbacks. Sessions first heard of through callbacks are dropped
and re-made with the same ids (they are derived from the instance id); sessions started through
roomwarden keep their row and lose only what callbacks had written on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, ScalarSelect, delete, func, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import aliased, sessionmaker

from worker.db import session_scope, utcnow
from worker.events import outbox
from worker.inbox import store as inbox
from worker.inbox.drain import drain_until_done
from worker.jobs import presence
from worker.models import (
    COZE_APP_ID,
    AgentException,
    AgentInstance,
    AgentSentence,
    InboxCallback,
    Round,
    Session,
    SessionState,
    TimelineEvent,
    Turn,
    UserAudio,
)
from worker.sessions import control
from worker.settings import Settings


def _purged_sessions() -> CompoundSelect[str]:
    """Sessions with a callback whose payload retention emptied: they cannot be derived again,
    so a rebuild leaves them (all their instances, all their callbacks) exactly as they are."""
    # Aliases: this subquery sits inside statements on the same tables and must not correlate.
    instance, callback = aliased(AgentInstance), aliased(InboxCallback)
    emptied = (
        select(instance.session_id)
        .join(
            callback,
            (callback.app_id == instance.app_id) & (callback.agent_instance_id == instance.agent_instance_id),
        )
        .where(callback.purged_at.is_not(None))
    )
    deleted = aliased(AgentInstance)  # its rows are gone altogether (inbox retention)
    return emptied.union(select(deleted.session_id).where(deleted.history_purged))


def reset_derived(db: DbSession) -> None:
    kept = _purged_sessions()
    # Coze rooms send no callbacks: their rows were read from Coze, not derived from the inbox.
    zego_instances = select(AgentInstance.id).where(
        AgentInstance.app_id != COZE_APP_ID, AgentInstance.session_id.not_in(kept)
    )
    for model in (UserAudio, AgentException, TimelineEvent, AgentSentence, Round, Turn):
        db.execute(delete(model).where(model.instance_id.in_(zego_instances)))
    kept_streams = select(AgentInstance.id).where(
        AgentInstance.session_id.in_(kept),
        AgentInstance.app_id == InboxCallback.app_id,
        AgentInstance.agent_instance_id == InboxCallback.agent_instance_id,
    )
    callback_sessions = select(Session.id).where(Session.origin == "callback", Session.id.not_in(kept))
    db.execute(delete(AgentInstance).where(AgentInstance.session_id.in_(callback_sessions)))
    db.execute(delete(Session).where(Session.origin == "callback", Session.id.not_in(kept)))
    db.execute(
        update(AgentInstance)
        .where(AgentInstance.app_id != COZE_APP_ID, AgentInstance.session_id.not_in(kept))
        .values(
            state="starting",
            created_at=None,
            deleted_at=None,
            delete_code=None,
            latency=None,
            status=None,
            status_sequence=None,
            first_seen_at=None,
            last_event_at=None,
            last_sequence=None,
        )
    )
    # A session's state derives from its instances; one with none (failed, cancelled before the
    # vendor answered, still starting) keeps what the API wrote.
    with_instances = select(AgentInstance.session_id).where(
        AgentInstance.app_id != COZE_APP_ID, AgentInstance.session_id.not_in(kept)
    )
    db.execute(
        update(Session)
        .where(Session.id.in_(with_instances))
        .values(
            state=SessionState.STARTING,
            end_reason=None,
            end_code=None,
            started_at=None,
            ended_at=None,
            last_activity_at=None,
            last_user_speech_at=None,
            # Counted again as the turns are made again (Coze turns, not derived, stay counted).
            user_turns=_turns_of(Session.id, Turn.speaker == "user"),
            agent_turns=_turns_of(Session.id, Turn.speaker == "agent"),
            interrupted_turns=_turns_of(Session.id, Turn.speaker == "agent", Turn.interrupted.is_(True)),
        )
    )
    # A callback whose payload retention emptied cannot be applied again: it stays done, and what
    # it made stays (its session is kept; a room's presence stays in room_users).
    inbox.reset_all(db, unless=kept_streams.exists() | InboxCallback.purged_at.is_not(None))


def _turns_of(session_id: Any, *where: ColumnElement[bool]) -> ScalarSelect[int]:
    """How many of a session's turns (those left) match ``where``."""
    return select(func.count()).where(Turn.session_id == session_id, *where).scalar_subquery()


class WorkersRunning(Exception):
    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        super().__init__(
            f"workers are running ({', '.join(nodes)}): stop every worker first; a drain racing the "
            "rebuild would apply callbacks twice"
        )


def rebuild(factory: sessionmaker[DbSession], settings: Settings) -> int:
    """Wipe derived state and apply every stored callback again; returns how many were applied.

    Refused while workers run (``WorkersRunning``): a drain racing the wipe would apply callbacks
    twice over.
    """
    with session_scope(factory) as db:
        running = presence.live(db, now=utcnow())
    if running:
        raise WorkersRunning(running)
    with session_scope(factory) as db:
        reset_derived(db)
        streams = inbox.all_streams(db)
    # react=False: replaying history decides nothing anew (the decisions made are kept), and
    # announces nothing: the events of that history went out when it happened.
    replaying = outbox.quiet_sessions(factory)
    applied = drain_until_done(replaying, streams, settings=settings, react=False).applied
    with session_scope(factory) as db:
        control.remark_said(db)  # the turns of `say` Rounds, which no callback makes or marks
    return applied
