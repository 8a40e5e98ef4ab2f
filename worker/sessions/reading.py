"""Reading sessions back, as the API and the CLI show them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.models import AgentException, AgentInstance, Provider, Session
from worker.policies.reports import short_actions
from worker.sealing import redact


def find_session(db: DbSession, key: str) -> Session | None:
    """A session by its id, or by the AgentInstanceId of any of its instances."""
    if "\x00" in key:
        return None  # no id holds one, and Postgres text cannot be asked about it
    session = db.get(Session, key)
    if session is not None:
        return session
    return db.scalars(
        select(Session)
        .join(AgentInstance, AgentInstance.session_id == Session.id)
        .where(AgentInstance.agent_instance_id == key)
        .limit(1)
    ).one_or_none()


def _join(session: Session) -> dict[str, Any] | None:
    """What the end user's app needs to join: room and user, plus the vendor's ZEGO instance
    and DigitalHumanConfig, or Coze RTC app id and token."""
    if session.join_info is None:
        return None
    if session.provider == Provider.COZE:
        where = {
            "room_id": session.room_id,
            "uid": session.user_id,
            "conversation_id": session.conversation_id,
        }
    else:
        where = {
            "room_id": session.room_id,
            "user_id": session.user_id,
            "agent_user_id": session.agent_user_id,
        }
    return {**where, **session.join_info}


def describe(db: DbSession, session: Session) -> dict[str, Any]:
    instances = db.scalars(
        select(AgentInstance)
        .where(AgentInstance.session_id == session.id)
        .order_by(AgentInstance.first_seen_at, AgentInstance.agent_instance_id)
    )
    exceptions = db.execute(
        select(AgentException, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == AgentException.instance_id)
        .where(AgentException.session_id == session.id)
        .order_by(AgentException.at, AgentException.sequence)
    )
    return {
        "id": session.id,
        "origin": session.origin,
        "provider": session.provider,
        "template": session.template,
        "app_id": session.app_id,
        "state": session.state,
        "end_reason": session.end_reason,
        "end_code": session.end_code,
        "failure_message": session.failure_message,
        "end_requested_at": iso(session.end_requested_at),
        # What policies made of it: why they ended it, what to look at, a recovery or queue wait.
        "policy_reason": session.policy_reason,
        "flag": session.flag,
        "recovering_since": iso(session.recovering_since),
        "queued_at": iso(session.queued_at),
        "join": _join(session),
        # The request that started it, vendor secrets shown as "***".
        "spec": redact(session.spec) if session.spec is not None else None,
        "agent_user_id": session.agent_user_id,
        "room_id": session.room_id,
        "user_id": session.user_id,
        "agent_id": session.agent_id,
        "agent_name": session.agent_name,
        "created_at": iso(session.created_at),
        "started_at": iso(session.started_at),
        "ended_at": iso(session.ended_at),
        "last_activity_at": iso(session.last_activity_at),
        "last_user_speech_at": iso(session.last_user_speech_at),
        "instances": [
            {
                "agent_instance_id": i.agent_instance_id,
                "state": i.state,
                "agent_user_id": i.agent_user_id,
                "created_at": iso(i.created_at),
                "deleted_at": iso(i.deleted_at),
                "delete_code": i.delete_code,
                "latency": i.latency,
                "status": i.status,
                "last_event_at": iso(i.last_event_at),
            }
            for i in instances
        ],
        "exceptions": [
            {
                "agent_instance_id": instance_id,
                "code": e.code,
                "family": e.family,
                "message": e.message,
                "round": e.round,
                "at": iso(e.at),
            }
            for e, instance_id in exceptions
        ],
        # The newest policy actions; GET /v1/sessions/{id}/actions lists them all.
        "actions": short_actions(db, session.id),
    }
