"""ZEGO's RTC room callbacks applied: who is in the room, and what that means for its sessions.

The receiver stores ``room_login``, ``room_logout``, ``stream_create`` and ``stream_close`` in the
inbox under the room's stream (``rtc:<room_id>``); the drain hands a room's due callbacks here,
under a lock on the room. They fold into ``room_users`` by ZEGO's own sequence numbers
(worker/sessions/presence.py), since they arrive late, retried and reordered; then every session
of that user in that room learns of it:

- ``user_present`` / ``user_absent_since`` / ``user_logout_reason``, which the idle rule reads
  (worker/policies/scans.py): a user out of the room is idle whether or not ASR callbacks come;
- ``no_user_seconds``: the agent time billed while the user was out, summed again from every
  login and logout heard, so that a late one corrects it (also when the session has ended);
- a login wakes a 1202 wait (``await_user``) at once instead of at its next DescribeUsers poll;
- a new stream of the user asks for UpdateAgentInstance with it (a ``follow_stream`` action),
  for sessions roomwarden started (it knows which stream their agent pulls).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms
from worker.inbox.rtc_callbacks import RtcEvent, parse_rtc_event
from worker.inbox.store import StreamKey
from worker.models import (
    ActionKind,
    ActionState,
    AgentInstance,
    PolicyAction,
    Provider,
    Session,
    SessionState,
)
from worker.models.presence import RoomUser
from worker.policies.decisions import Decision, record
from worker.sessions import presence
from worker.sessions.lifecycle import instance_windows
from worker.sessions.presence import Presence

log = structlog.get_logger(__name__)

UserKey = tuple[int, str, str]  # app_id, room_id, user_id
# Sessions that ended this long ago still take a late logout into their no_user_seconds.
LATE = dt.timedelta(days=1)
_LIVE = (SessionState.STARTING, SessionState.ACTIVE, SessionState.RECOVERING)
# Providers whose agent pulls a user stream that UpdateAgentInstance can switch.
_FOLLOWS_STREAMS = (Provider.ZEGO, Provider.ZEGO_DIGITAL_HUMAN)


def lock_rooms(db: DbSession, keys: Sequence[StreamKey]) -> list[StreamKey]:
    """The rooms whose callbacks this transaction may apply: those no other worker holds.

    A room has no row of its own to lock (its users come and go), so Postgres takes a transaction
    advisory lock on the key; SQLite has one writer at a time (``BEGIN IMMEDIATE``) already.
    """
    if db.get_bind().dialect.name != "postgresql":
        return list(keys)
    return [
        key
        for key in sorted(set(keys))
        if db.scalar(select(func.pg_try_advisory_xact_lock(func.hashtextextended(f"{key[0]}:{key[1]}", 17))))
    ]


def apply(
    db: DbSession, rows: Sequence[tuple[int, str]], *, now: dt.datetime, react: bool = True
) -> list[PolicyAction]:
    """Fold (app_id, payload) rows, in the order ZEGO's retries let them arrive, into presence and
    sessions; returns the policy actions to run (woken waits, stream follows), none without
    ``react`` (a rebuild only derives state again)."""
    events = [(app_id, parse_rtc_event(orjson.loads(payload))) for app_id, payload in rows]
    wanted = {(app_id, e.room_id, e.user_id) for app_id, e in events}
    users = _room_users(db, wanted, now)
    before = {key: _presence(row) for key, row in users.items()}
    for app_id, event in events:
        row = users[(app_id, event.room_id, event.user_id)]
        _fold(row, event, now)
    actions: list[PolicyAction] = []
    for key in sorted(wanted):
        row = users[key]
        for session in _sessions_of(db, key, now):
            actions.extend(_tell(db, session, before[key], row, now, react=react))
    return actions


def _room_users(db: DbSession, keys: set[UserKey], now: dt.datetime) -> dict[UserKey, RoomUser]:
    found = {
        (row.app_id, row.room_id, row.user_id): row
        for row in db.scalars(
            select(RoomUser).where(
                tuple_(RoomUser.app_id, RoomUser.room_id, RoomUser.user_id).in_(list(keys))
            )
        )
    }
    for app_id, room_id, user_id in keys - found.keys():
        row = RoomUser(
            app_id=app_id,
            room_id=room_id,
            user_id=user_id,
            present=False,
            user_seq=-1,
            stream_seq=-1,
            changes=[],
            updated_at=now,
        )
        db.add(row)
        found[(app_id, room_id, user_id)] = row
    return found


def _presence(row: RoomUser) -> Presence:
    return Presence(
        present=row.present,
        user_seq=row.user_seq,
        session_id=row.zego_session_id or "",
        login_time_ms=_ms(row.login_at),
        absent_since_ms=_ms(row.absent_since),
        logout_reason=row.logout_reason or "",
        stream_id=row.stream_id or "",
        stream_seq=row.stream_seq,
        stream_at_ms=_ms(row.stream_at),
    )


def _fold(row: RoomUser, event: RtcEvent, now: dt.datetime) -> None:
    after = presence.apply(_presence(row), event)
    row.present, row.user_seq, row.stream_seq = after.present, after.user_seq, after.stream_seq
    row.zego_session_id = after.session_id or None
    row.login_at = from_ms(after.login_time_ms) if after.login_time_ms else None
    row.absent_since = from_ms(after.absent_since_ms) if after.absent_since_ms else None
    row.logout_reason = after.logout_reason or None
    row.stream_id = after.stream_id or None
    row.stream_at = from_ms(after.stream_at_ms) if after.stream_at_ms else None
    changes = presence.record_change(list(row.changes or []), event)
    if changes is not row.changes:
        row.changes = changes
    row.updated_at = now


def _sessions_of(db: DbSession, key: UserKey, now: dt.datetime) -> list[Session]:
    """The user's sessions in the room that are live or ended lately, locked (a drain of their
    agent callbacks commits first: the two never hold each other's locks)."""
    app_id, room_id, user_id = key
    return list(
        db.scalars(
            select(Session)
            .where(
                Session.app_id == app_id,
                Session.room_id == room_id,
                Session.user_id == user_id,
                or_(Session.ended_at.is_(None), Session.ended_at >= now - LATE),
            )
            .order_by(Session.id)
            .with_for_update()
        )
    )


def _tell(
    db: DbSession, session: Session, before: Presence, row: RoomUser, now: dt.datetime, *, react: bool
) -> list[PolicyAction]:
    session.user_present = row.present
    session.user_absent_since = None if row.present else row.absent_since
    session.user_logout_reason = None if row.present else row.logout_reason
    instances = list(db.scalars(select(AgentInstance).where(AgentInstance.session_id == session.id)))
    ended = session.state not in _LIVE
    session.no_user_seconds = presence.billed_absence_seconds(
        row.changes or [], instance_windows(instances, None if ended else now)
    )
    if ended or not react:
        return []
    actions: list[PolicyAction] = []
    if row.present and not before.present:
        actions.extend(_wake_waits(db, session, row, now))
    followed = _follow_stream(db, session, before, row, instances, now)
    if followed is not None:
        actions.append(followed)
    return actions


def _wake_waits(db: DbSession, session: Session, row: RoomUser, now: dt.datetime) -> list[PolicyAction]:
    """The user logged in while a 1202 wait polls for them: run it now, and let it trust the login."""
    # SKIP LOCKED: a runner claims an action before its session, the opposite of this order; one
    # it holds is running now and asks DescribeUsers itself, which finds the user back.
    waiting = list(
        db.scalars(
            select(PolicyAction)
            .where(
                PolicyAction.session_id == session.id,
                PolicyAction.kind == ActionKind.AWAIT_USER,
                PolicyAction.state == ActionState.PENDING,
            )
            .with_for_update(skip_locked=True)
        )
    )
    login = {"user_update_seq": row.user_seq, "at": row.login_at.isoformat() if row.login_at else None}
    for action in waiting:
        action.result = {**(action.result or {}), "room_login": login}
        action.not_before = now
        log.info("await_user_woken", session_id=session.id, action_id=action.id)
    return waiting


def _follow_stream(
    db: DbSession,
    session: Session,
    before: Presence,
    row: RoomUser,
    instances: list[AgentInstance],
    now: dt.datetime,
) -> PolicyAction | None:
    current = user_stream_id(session)
    if current is None or session.provider not in _FOLLOWS_STREAMS or session.state != SessionState.ACTIVE:
        return None
    after = _presence(row)
    new = presence.rejoined_on_new_stream(before, after, current)
    live = [i for i in instances if i.state == "active"]
    if new is None or not live:
        return None
    decision = Decision(
        ActionKind.FOLLOW_STREAM,
        "user_new_stream",
        policy="presence",
        trigger_key=f"stream:{session.id}:{new}:{row.stream_seq}",
        dry_run=False,
        inputs={"user_stream_id": new, "previous_user_stream_id": current, "stream_seq": row.stream_seq},
        agent_instance_id=live[-1].agent_instance_id,
    )
    return record(db, session, decision, now=now)


def user_stream_id(session: Session) -> str | None:
    """The stream the session's agent pulls, from the request roomwarden sent; None when it did
    not start the session (its agent is somebody else's to steer)."""
    rtc: Any = ((session.spec or {}).get("params") or {}).get("RTC") or {}
    stream = rtc.get("UserStreamId") if isinstance(rtc, dict) else None
    return str(stream) if stream else None


def _ms(at: dt.datetime | None) -> int:
    return int(at.timestamp() * 1000) if at is not None else 0


def timeline_entries(db: DbSession, session: Session) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """The user's logins and logouts during the session, in ZEGO's order, as timeline events
    ``room_login`` / ``room_logout``: where a reader sees the user leave and come back."""
    if session.room_id is None or session.user_id is None:
        return []
    row = db.get(RoomUser, (session.app_id, session.room_id, session.user_id))
    if row is None:
        return []
    start, end = session.created_at, session.ended_at
    entries = []
    for seq, kind, at_ms in sorted(row.changes or [], key=lambda c: int(c[0])):
        at = from_ms(int(at_ms))
        if at < start or (end is not None and at > end):
            continue
        event = "room_login" if kind == "in" else "room_logout"
        detail = {"user_id": session.user_id, "user_update_seq": int(seq)}
        entries.append(
            (
                at,
                {
                    "at": at.isoformat(),
                    "event": event,
                    "round": None,
                    "agent_instance_id": None,
                    "detail": detail,
                },
            )
        )
    return entries
