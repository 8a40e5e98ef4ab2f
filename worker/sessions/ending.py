"""Ending a session's agents at the vendor; the deletion callbacks then end the session itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import session_scope
from worker.models import AgentInstance, Session
from worker.sessions import repair

if TYPE_CHECKING:
    from worker.jobs.context import JobContext
    from worker.vendors.clients import Vendors


def live_instances(db: DbSession, session_id: str) -> list[tuple[int, str]]:
    """The (AppId, AgentInstanceId) of every instance of the session not known to be deleted."""
    rows = db.execute(
        select(AgentInstance.app_id, AgentInstance.agent_instance_id).where(
            AgentInstance.session_id == session_id, AgentInstance.state != "deleted"
        )
    )
    return [(app_id, instance_id) for app_id, instance_id in rows]


def delete_instances(vendors: Vendors, instances: list[tuple[int, str]], *, graceful: bool) -> int:
    """DeleteAgentInstance for each; an instance ZEGO no longer knows is already what we want."""
    from worker.vendors.zego.errors import ZegoNotFoundError

    deleted = 0
    for app_id, agent_instance_id in instances:
        try:
            vendors.zego_agent(app_id).delete_agent_instance(agent_instance_id, graceful=graceful)
            deleted += 1
        except ZegoNotFoundError:
            continue
    return deleted


def end(job: JobContext, session_id: str, *, graceful: bool) -> int:
    """DeleteAgentInstance for each live instance of the session; returns how many were deleted.

    First the turns the callbacks missed are filled from each instance's context (gap repair,
    worker/sessions/repair.py): once deleted, the instance has no context left to read."""
    with session_scope(job.sessions) as db:
        instances = live_instances(db, session_id)
        provider = db.scalar(select(Session.provider).where(Session.id == session_id))
    contexts = repair.read_contexts(job.vendors, instances, provider)
    if contexts:
        with session_scope(job.sessions) as db:
            repair.fill_session(db, session_id, contexts, settings=job.settings)
    return delete_instances(job.vendors, instances, graceful=graceful)
