"""One session in full: its summary, its timeline of events and its rounds with their latencies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.analysis.latency import round_latencies
from worker.analysis.summary import summaries
from worker.db import iso
from worker.events import outbox
from worker.models import AgentException, AgentInstance, Session, TimelineEvent
from worker.postcall import running as postcall
from worker.sessions import control, rooms
from worker.sessions.reading import describe


def session_detail(db: DbSession, session: Session) -> dict[str, Any]:
    """``sessions.describe`` plus the summary, one time-ordered event stream and per-round latency."""
    body = describe(db, session)
    body["summary"] = summaries(db, [session.id])[0]
    body["timeline"] = timeline(db, session.id)
    body["rounds"] = [
        {k: v for k, v in r.as_dict().items() if k != "session_id"}
        for r in round_latencies(db, session_id=session.id)
    ]
    # A page showing this detail follows the session live from here (GET .../events).
    body["last_event_id"] = outbox.last_id(db, session.id)
    # Its words were removed (worker/privacy/): the turns are there, their text is empty.
    removed = session.transcript_removed_at
    body["transcript_removed"] = (
        {"at": removed.isoformat(), "by": session.transcript_removed_by} if removed is not None else None
    )
    # Post-call analysis (worker/postcall/): the latest version's result, or None.
    analysed = postcall.latest(db, session.id)
    body["analysis"] = postcall.describe(analysed) if analysed is not None else None
    body["no_user_seconds"] = session.no_user_seconds
    body["presence"] = presence(session)
    return body


def presence(session: Session) -> dict[str, Any]:
    """The session's user in the RTC room as the room callbacks last told it (worker/sessions/rooms.py).

    ``user_present`` stays None until a callback for the user is heard: roomwarden cannot tell
    then, and a reader must not take that for "in the room". While present, the absence fields
    are None (rooms.py clears them), so a stale logout never shows beside a later login.
    """
    return {
        "user_present": session.user_present,
        "absent_since": iso(session.user_absent_since),
        "logout_reason": session.user_logout_reason,
    }


def timeline(db: DbSession, session_id: str) -> list[dict[str, Any]]:
    """What happened, in time order: speech and status events as ZEGO sent them, and, under ZEGO's
    own event names, each instance's creation and deletion (``code``) and each exception, so a
    reader sees a recreation or an error where it happened without merging lists."""
    events: list[tuple[dt.datetime, int, int, dict[str, Any]]] = []
    rows = db.execute(
        select(TimelineEvent, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == TimelineEvent.instance_id)
        .where(TimelineEvent.session_id == session_id)
    ).all()
    for event, instance_id in rows:
        entry = _event(event.at, event.event, event.round, instance_id, event.detail)
        events.append((event.at, 1, event.sequence if event.sequence is not None else -1, entry))
    for i in db.scalars(select(AgentInstance).where(AgentInstance.session_id == session_id)):
        created = i.created_at or i.first_seen_at
        if created is not None:
            events.append(
                (created, 0, -1, _event(created, "AgentInstanceCreated", None, i.agent_instance_id, {}))
            )
        if i.deleted_at is not None:
            gone = _event(
                i.deleted_at, "AgentInstanceDeleted", None, i.agent_instance_id, {"code": i.delete_code}
            )
            events.append((i.deleted_at, 3, 2**62, gone))
    for e, instance_id in db.execute(
        select(AgentException, AgentInstance.agent_instance_id)
        .join(AgentInstance, AgentInstance.id == AgentException.instance_id)
        .where(AgentException.session_id == session_id)
    ):
        detail = {"code": e.code, "family": e.family, "message": e.message}
        seq = e.sequence if e.sequence is not None else -1
        events.append((e.at, 2, seq, _event(e.at, "Exception", e.round, instance_id, detail)))
    for at, entry in control.timeline_entries(db, session_id):  # say, interrupt, ... (live control)
        events.append((at, 2, 2**62, entry))
    session = db.get(Session, session_id)
    for at, entry in rooms.timeline_entries(db, session) if session is not None else []:  # presence
        events.append((at, 2, 2**62, entry))
    events.sort(key=lambda item: item[:3])
    return [entry for *_, entry in events]


def _event(
    at: dt.datetime, event: str, round_: int | None, instance_id: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "event": event,
        "round": round_,
        "agent_instance_id": instance_id,
        "detail": detail,
    }
