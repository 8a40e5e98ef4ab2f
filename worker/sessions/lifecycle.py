"""Session lifecycles: which session a callback belongs to, and what it does to session and instance.

Every transition here is written so that the end state depends only on the *set* of callbacks
applied, never on their order: times merge with min/max, the last status is the one with the
highest Sequence, and a session's state is recomputed from its instances (ended only when every
instance it has is deleted). That is what lets late, duplicated and reordered callbacks, and a
full ``rebuild``, all land on the same answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session as DbSession

from worker.db import Base, from_ms, insert_ignoring_conflicts, utcnow
from worker.events import sessions as session_events
from worker.events import turns as turn_events
from worker.inbox.callbacks import Callback, int_field, text_field
from worker.inbox.store import StreamKey
from worker.models import AgentException, AgentInstance, Provider, Session, SessionState, TimelineEvent, Turn
from worker.models.presence import RoomUser
from worker.sessions import presence
from worker.sessions import rounds as round_marks

SESSION_NAMESPACE = uuid.UUID("5b0f3c52-1d7e-4c59-9a55-7f1f0f7e2a11")

# AgentInstanceDeleted codes (vendor facts 2.1) and the end reason a reader sees.
END_REASONS = {
    0: "deleted",
    1201: "rtc_error",
    1202: "user_absent",
    1203: "kicked_out",
    1204: "login_failed",
    1205: "disconnected",
    1206: "push_failed",
    1207: "pull_failed",
}

TIMELINE_EVENTS = frozenset({"UserSpeakAction", "AgentSpeakAction", "AgentInstanceStatus"})


def session_id_for(app_id: int, agent_instance_id: str) -> str:
    """Sessions first heard of through a callback get an id derived from it, so a rebuild keeps it."""
    return str(uuid.uuid5(SESSION_NAMESPACE, f"zego:{app_id}:{agent_instance_id}"))


def exception_family(code: int) -> str:
    if 1000 <= code < 2000:
        return "agent_rtc"
    return {21: "asr", 22: "llm", 23: "tts"}.get(code // 100, "other")


def end_reason(code: int, provider: str | None = None) -> str:
    """``provider`` matters for 1202 only: a live digital human has no user, and ZEGO deletes it
    with 1202 when nothing drove it (no TTS) for its MaxIdleTime: it was idle, no user left."""
    if code == 1202 and provider == Provider.ZEGO_LIVE_DIGITAL_HUMAN:
        return "idle"
    return END_REASONS.get(code, f"deleted_{code}")


@dataclass(eq=False)  # identity: streams key dicts while a batch is applied
class Stream:
    """The locked session and the instance whose callbacks are being applied, with its turns at hand."""

    session: Session
    instance: AgentInstance
    # Every instance of the session, this one included: a session's state is a function of them.
    siblings: list[AgentInstance]
    dirty_rounds: set[int] = field(default_factory=set)
    turns: dict[tuple[int, str], Turn] = field(default_factory=dict)
    loaded_rounds: set[int] = field(default_factory=set)
    # Rows nothing reads back in this transaction (sentences, timeline, exceptions, audio): kept
    # as plain values and inserted with one executemany per table when the batch settles.
    inserts: dict[type[Base], list[dict[str, Any]]] = field(default_factory=dict)
    # The highest Round this batch showed to be over (turn.completed, worker/events/turns.py).
    complete_through: int | None = None
    # This batch deleted the instance: its vendor slot is free (a session in line may take it).
    freed: bool = False
    # Per Round, the response time marks this batch saw (worker/sessions/rounds.py), written with
    # one upsert when the batch settles.
    rounds: dict[int, round_marks.Marks] = field(default_factory=dict)

    def complete(self, round_: int | None) -> None:
        if round_ is not None and (self.complete_through is None or round_ > self.complete_through):
            self.complete_through = round_

    def insert(self, model: type[Base], **values: Any) -> None:
        self.inserts.setdefault(model, []).append(values)


def lock_streams(
    db: DbSession, keys: Sequence[StreamKey], *, skip_locked: bool = False
) -> dict[StreamKey, Stream]:
    """Find or create each instance and its session, and hold the sessions' row locks until commit.

    A handful of statements for any number of streams. With ``skip_locked`` a session another
    worker holds is left out instead of waited for: that worker looks for pending callbacks
    again after it commits, so nothing is stranded.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    known = ensure_streams(db, wanted)
    sessions = {
        session.id: session
        for session in db.scalars(
            select(Session)
            .where(Session.id.in_(set(known.values())))
            .order_by(Session.id)
            .with_for_update(skip_locked=skip_locked)
        )
    }
    siblings: dict[str, list[AgentInstance]] = {}
    for instance in db.scalars(select(AgentInstance).where(AgentInstance.session_id.in_(sessions))):
        siblings.setdefault(instance.session_id, []).append(instance)
    streams: dict[StreamKey, Stream] = {}
    for key in wanted:
        session = sessions.get(known[key])
        if session is None:
            continue
        family = siblings[session.id]
        instance = next(i for i in family if (i.app_id, i.agent_instance_id) == key)
        streams[key] = Stream(session=session, instance=instance, siblings=family)
    return streams


def ensure_streams(db: DbSession, keys: Sequence[StreamKey]) -> dict[StreamKey, str]:
    """The session id of each stream, creating instance and session for streams never seen.

    Worth its own short transaction before a long drain: a concurrent insert of the same new
    session waits for the inserting transaction to end, and a drain's may take a while.
    """
    wanted = sorted(set(keys))  # one order for every worker: concurrent inserts cannot deadlock
    known = _session_ids(db, wanted) if wanted else {}
    missing = [key for key in wanted if key not in known]
    if missing:
        dialect = db.get_bind().dialect.name
        now = utcnow()
        made = db.execute(
            insert_ignoring_conflicts(Session, dialect)
            .returning(Session)
            .values(
                [
                    {
                        "id": session_id_for(*key),
                        "app_id": key[0],
                        "origin": "callback",
                        "state": SessionState.STARTING.value,
                        "created_at": now,
                    }
                    for key in missing
                ]
            )
        ).scalars()
        first_seen = {session_id_for(*key): key[1] for key in missing}
        for session in made:
            session_events.created(db, session, first_seen[session.id])
        db.execute(
            insert_ignoring_conflicts(AgentInstance, dialect).values(
                [
                    {
                        "app_id": key[0],
                        "agent_instance_id": key[1],
                        "session_id": session_id_for(*key),
                        "state": "starting",
                    }
                    for key in missing
                ]
            )
        )
        known.update(_session_ids(db, missing))
    return known


def _session_ids(db: DbSession, keys: Sequence[StreamKey]) -> dict[StreamKey, str]:
    rows = db.execute(
        select(AgentInstance.app_id, AgentInstance.agent_instance_id, AgentInstance.session_id).where(
            tuple_(AgentInstance.app_id, AgentInstance.agent_instance_id).in_(list(keys))
        )
    )
    return {(app_id, instance): session_id for app_id, instance, session_id in rows}


def earliest(current: dt.datetime | None, new: dt.datetime) -> dt.datetime:
    return new if current is None or new < current else current


def latest(current: dt.datetime | None, new: dt.datetime) -> dt.datetime:
    return new if current is None or new > current else current


def observe(stream: Stream, cb: Callback) -> None:
    """What every callback tells us: who the agent is, where, and that the instance was alive then.

    Attributes are written only when they change: an ORM write costs far more than a compare,
    and this runs for every callback.
    """
    instance, session, payload = stream.instance, stream.session, cb.payload
    at = from_ms(cb.timestamp_ms)
    if instance.first_seen_at is None or at < instance.first_seen_at:
        instance.first_seen_at = at
    if instance.last_event_at is None or at > instance.last_event_at:
        instance.last_event_at = at
    if cb.sequence is not None and (instance.last_sequence is None or cb.sequence > instance.last_sequence):
        instance.last_sequence = cb.sequence
    if instance.agent_user_id is None:
        instance.agent_user_id = text_field(payload.get("AgentUserId"))
    if instance.agent_id is None:
        instance.agent_id = text_field(payload.get("AgentId"))
    if instance.room_id is None:
        instance.room_id = text_field(payload.get("RoomId"))
    if session.room_id is None and instance.room_id is not None:
        session.room_id = instance.room_id
    if session.agent_id is None and instance.agent_id is not None:
        session.agent_id = instance.agent_id
    if session.agent_name is None:
        session.agent_name = text_field(payload.get("Name"))
    if session.user_id is None and cb.event in ("ASRResult", "UserSpeakAction", "UserAudioData"):
        session.user_id = text_field(cb.data.get("UserId"))
    if cb.event not in ("AgentInstanceCreated", "AgentInstanceDeleted", "Exception") and (
        session.last_activity_at is None or at > session.last_activity_at
    ):
        session.last_activity_at = at
    if cb.event in ("ASRResult", "UserSpeakAction") and (
        session.last_user_speech_at is None or at > session.last_user_speech_at
    ):
        session.last_user_speech_at = at


def instance_created(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    created = int_field(cb.data.get("CreatedTimestamp"))
    at = from_ms(created) if created else from_ms(cb.timestamp_ms)
    stream.instance.created_at = earliest(stream.instance.created_at, at)
    if stream.instance.state != "deleted":
        stream.instance.state = "active"
        session_events.live(db, stream.session, stream.instance.agent_instance_id)
    stream.session.started_at = earliest(stream.session.started_at, at)


def instance_deleted(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    data, instance = cb.data, stream.instance
    deleted = int_field(data.get("DeletedTimestamp"))
    at = from_ms(deleted) if deleted else from_ms(cb.timestamp_ms)
    if instance.state not in ("active", "deleted"):
        # A deletion that overtook its creation still proves the agent was live: say so first, so
        # the app hears active before ended (the creation, applied later, repeats the same key).
        session_events.live(db, stream.session, instance.agent_instance_id)
    stream.freed = stream.freed or instance.state != "deleted"
    instance.state = "deleted"
    instance.deleted_at = at
    instance.delete_code = int_field(data.get("Code"))
    stream.complete(turn_events.ALL_ROUNDS)
    latency = data.get("LatencyData")
    instance.latency = latency if isinstance(latency, dict) else None


def exception(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    code = int_field(cb.data.get("Code")) or 0
    stream.insert(
        AgentException,
        session_id=stream.session.id,
        instance_id=stream.instance.id,
        inbox_id=inbox_id,
        code=code,
        family=exception_family(code),
        message=text_field(cb.data.get("Message")) or "",
        round=int_field(cb.data.get("Round")),
        sequence=cb.sequence,
        at=from_ms(cb.timestamp_ms),
    )


def timeline(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    data = cb.data
    if cb.event == "AgentInstanceStatus" and isinstance(data.get("Status"), str):
        seq = cb.sequence if cb.sequence is not None else -1
        if stream.instance.status_sequence is None or seq > stream.instance.status_sequence:
            stream.instance.status = data["Status"]
            stream.instance.status_sequence = seq
        if data["Status"] == "IDLE":
            stream.complete(int_field(data.get("Round")))  # this Round and every earlier one
    round_, at = int_field(data.get("Round")), from_ms(cb.timestamp_ms)
    stream.insert(
        TimelineEvent,
        session_id=stream.session.id,
        instance_id=stream.instance.id,
        inbox_id=inbox_id,
        event=cb.event,
        round=round_,
        sequence=cb.sequence,
        at=at,
        detail={k: v for k, v in data.items() if k != "Round"},
    )
    round_marks.heard(stream, cb.event, data, round_, at)


def refresh_session_state(db: DbSession, stream: Stream, *, learned: str = "callback") -> None:
    """Recompute the session's state (``settle_state``) and announce a change (worker/events)."""
    before = stream.session.state
    settle_state(stream)
    if before != SessionState.ENDED and stream.session.state == SessionState.ENDED:
        settle_absence(db, stream.session, stream.siblings)
    session_events.changed(db, stream.session, before, instances=stream.siblings, learned=learned)


def settle_state(stream: Stream) -> None:
    """A session's state is a function of its instances and of what policies have decided.

    Ended only once every instance is deleted and no policy is bringing a new one; the end
    reason is the policy's when one ended it (gave_up, idle, ...), else the last deletion code's.
    A session that has been live and has an instance on its way back is recovering.
    """
    session = stream.session
    instances = stream.siblings
    if instances and all(i.state == "deleted" for i in instances):
        if session.recovering_since is not None:
            session.state = SessionState.RECOVERING
            session.ended_at = session.end_code = session.end_reason = None
            return
        last = max(instances, key=lambda i: i.deleted_at or dt.datetime.min.replace(tzinfo=dt.UTC))
        session.state = SessionState.ENDED
        session.ended_at = last.deleted_at
        session.end_code = last.delete_code
        session.end_reason = session.policy_reason or (
            end_reason(last.delete_code, session.provider) if last.delete_code is not None else None
        )
    elif any(i.state == "active" for i in instances):
        session.state = SessionState.ACTIVE
        session.ended_at = session.end_code = session.end_reason = None
    elif session.started_at is not None:
        session.state = SessionState.RECOVERING
        session.ended_at = session.end_code = session.end_reason = None
    else:
        session.state = SessionState.STARTING


def settle_absence(db: DbSession, session: Session, instances: Sequence[AgentInstance]) -> None:
    """A session just ended: its ``no_user_seconds`` over its instances' whole lives, from the
    room callbacks heard for its user (worker/sessions/rooms.py; none heard: it stays NULL)."""
    if session.room_id is None or session.user_id is None:
        return
    row = db.get(RoomUser, (session.app_id, session.room_id, session.user_id))
    if row is not None:
        session.no_user_seconds = presence.billed_absence_seconds(
            row.changes or [], instance_windows(instances, None)
        )


def instance_windows(
    instances: Sequence[AgentInstance], now: dt.datetime | None
) -> list[tuple[float, float]]:
    """Each instance's billed life in ms: from its creation to its deletion (or ``now``)."""
    windows = []
    for instance in instances:
        start = instance.created_at or instance.first_seen_at
        end = instance.deleted_at or now
        if start is not None and end is not None:
            windows.append((start.timestamp() * 1000, end.timestamp() * 1000))
    return windows


def refresh(db: DbSession, session: Session, *, learned: str) -> None:
    """``refresh_session_state`` outside a drain: after a policy attached or gave up an instance.

    ``learned`` says how the change became known ("policy", "reconciliation", ...) for the
    ``session.ended`` event.
    """
    db.flush()
    family = list(db.scalars(select(AgentInstance).where(AgentInstance.session_id == session.id)))
    if family:
        refresh_session_state(
            db, Stream(session=session, instance=family[0], siblings=family), learned=learned
        )
