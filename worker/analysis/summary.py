"""Summaries: the one-line view of each session, every count in a constant number of queries.

Shared by the list, search, exports and the CLI, so that a session shows the same figures
wherever it is seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, case, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.models import AgentException, AgentInstance, Session, Turn


def summaries(db: DbSession, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The one-line view of each session, in the order of ``ids`` (unknown ids are left out).

    Four queries whatever the number of sessions (sessions, turn counts, exceptions, instances),
    so a page of 500 costs the same round trips as a page of one. Heavy columns (spec, join info)
    are not read.
    """
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    turns = _turn_counts(db, wanted)
    exceptions = _counts(db, AgentException.session_id, wanted)
    instances = _counts(db, AgentInstance.session_id, wanted)
    by_id = {
        row.id: _summary(
            row, turns.get(row.id, (0, 0, 0, 0)), exceptions.get(row.id, 0), instances.get(row.id, 0)
        )
        for row in db.execute(select(*_COLUMNS).where(Session.id.in_(wanted)))
    }
    return [by_id[i] for i in wanted if i in by_id]


# What a summary shows of the session row itself; heavy columns (spec, join info) stay unread.
_COLUMNS = (
    Session.id,
    Session.app_id,
    Session.provider,
    Session.template,
    Session.agent_id,
    Session.agent_name,
    Session.room_id,
    Session.user_id,
    Session.state,
    Session.end_reason,
    Session.end_code,
    Session.flag,
    Session.created_at,
    Session.started_at,
    Session.ended_at,
    Session.no_user_seconds,
)


def _turn_counts(db: DbSession, ids: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """Per session: turns, user turns, agent turns, agent turns the user cut off."""
    user = case((Turn.speaker == "user", 1), else_=0)
    agent = case((Turn.speaker == "agent", 1), else_=0)
    cut = case((and_(Turn.speaker == "agent", Turn.interrupted.is_(True)), 1), else_=0)
    return {
        session_id: (int(total), int(users or 0), int(agents or 0), int(cuts or 0))
        for session_id, total, users, agents, cuts in db.execute(
            select(Turn.session_id, func.count(), func.sum(user), func.sum(agent), func.sum(cut))
            .where(Turn.session_id.in_(ids))
            .group_by(Turn.session_id)
        )
    }


def _summary(
    row: Row[*tuple[Any, ...]], turns: tuple[int, int, int, int], exceptions: int, instances: int
) -> dict[str, Any]:
    total, users, agents, cuts = turns
    duration = (
        (row.ended_at - row.started_at).total_seconds()
        if row.started_at is not None and row.ended_at is not None
        else None
    )
    return {
        "id": row.id,
        "app_id": row.app_id,
        "provider": row.provider,
        "template": row.template,
        "agent_id": row.agent_id,
        "agent_name": row.agent_name,
        "room_id": row.room_id,
        "user_id": row.user_id,
        "state": row.state,
        "end_reason": row.end_reason,
        "end_code": row.end_code,
        "flag": row.flag,
        "started_at": iso(row.started_at or row.created_at),
        "ended_at": iso(row.ended_at),
        "duration_seconds": duration,
        "turns": total,
        "user_turns": users,
        "agent_turns": agents,
        "interruptions": cuts,
        "exceptions": exceptions,
        "instances": instances,
        # A new agent in the same session (after a deletion, by a policy): what users notice.
        "recreations": max(instances - 1, 0),
        # Agent time billed with the user out of the RTC room; None until a room callback for the
        # user is heard, since "never heard" must not read as "never absent".
        "no_user_seconds": row.no_user_seconds,
    }


def _counts(db: DbSession, column: InstrumentedAttribute[str], ids: list[str]) -> dict[str, int]:
    return {
        key: int(n)
        for key, n in db.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    }
