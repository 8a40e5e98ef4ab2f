"""Coze rooms: no callbacks, no end-room API, so roomwarden watches them itself.

A Coze room closes by the vendor's own rules: the bot waits 3 minutes for a user, and once
people talk, ``longest_silence_ms`` (180 s by default) without speech dissolves it. roomwarden
sees only what the room wrote to its conversation, so a beat job reads the new messages of
every live Coze session into its transcript (one turn per chat: the user's question and the
bot's answer) and, once the silence rule says the room is gone, reads them one last time and
ends the session with reason ``no_user`` (nobody ever spoke) or ``silence``.

As with ZEGO, the read happens outside any transaction and the write is guarded: the message
cursor must still be where the read started, so two overlapping watchers cannot write twice.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import session_scope, utcnow
from worker.events import sessions as session_events
from worker.jobs import leases
from worker.models import AgentInstance, Provider, Session, SessionState, Turn
from worker.privacy.turns import keep_redacted
from worker.sessions.transcripts import count_new_turn
from worker.vendors.errors import VendorNotConfigured, classify

if TYPE_CHECKING:
    from worker.jobs.context import JobContext

log = structlog.get_logger(__name__)

MAX_ROUND = 2**63 - 1


@dataclass(frozen=True)
class Watch:
    session_id: str
    conversation_id: str
    cursor: str | None


@dataclass(frozen=True)
class Message:
    id: str
    chat_id: str
    role: str  # "user" | "assistant"
    content: str
    created_at: int  # Unix seconds


def live_rooms(db: DbSession) -> list[Watch]:
    rows = db.execute(
        select(Session.id, Session.conversation_id, Session.message_cursor).where(
            Session.provider == Provider.COZE,
            Session.state == SessionState.ACTIVE,
            Session.conversation_id.is_not(None),
        )
    )
    return [Watch(session_id, conversation_id or "", cursor) for session_id, conversation_id, cursor in rows]


def chat_round(chat_id: str) -> int:
    """Coze chat ids are time-ordered 19-digit numbers: as Rounds they sort like the conversation."""
    try:
        value = int(chat_id)
    except ValueError:
        value = -1
    if 0 < value <= MAX_ROUND:
        return value
    return zlib.crc32(chat_id.encode()) + 1


def record(
    db: DbSession,
    watch: Watch,
    messages: list[Message],
    *,
    now: dt.datetime,
    silence_seconds: float,
) -> str | None:
    """Write new messages as turns; end the session if its room has closed. Returns the end reason."""
    session = db.scalars(
        select(Session).where(Session.id == watch.session_id).with_for_update()
    ).one_or_none()
    if session is None or session.state != SessionState.ACTIVE or session.message_cursor != watch.cursor:
        return None  # ended, or another watcher got here first
    instance = db.scalars(select(AgentInstance).where(AgentInstance.session_id == session.id)).first()
    if instance is None:
        return None
    turns: dict[tuple[int, str], Turn] = {}
    for message in messages:
        speaker = "user" if message.role == "user" else "agent"
        round_ = chat_round(message.chat_id)
        spoken = dt.datetime.fromtimestamp(message.created_at, dt.UTC)
        turn = (
            turns.get((round_, speaker))
            or db.scalars(
                select(Turn).where(
                    Turn.instance_id == instance.id, Turn.round == round_, Turn.speaker == speaker
                )
            ).one_or_none()
        )
        if turn is None:
            turn = Turn(
                session_id=session.id,
                instance_id=instance.id,
                round=round_,
                speaker=speaker,
                text="",
                interrupted=False,
                user_id=session.user_id if speaker == "user" else None,
                settled=True,  # written whole from Coze's message list: indexed for search at once
            )
            db.add(turn)
            count_new_turn(session, speaker)
        turns[(round_, speaker)] = turn
        turn.text = f"{turn.text} {message.content}".strip() if turn.text else message.content
        turn.spoken_at = spoken if turn.spoken_at is None else min(turn.spoken_at, spoken)
        session.last_activity_at = _later(session.last_activity_at, spoken)
        if speaker == "user":
            session.last_user_speech_at = _later(session.last_user_speech_at, spoken)
        session.message_cursor = message.id
    keep_redacted(session, turns.values())  # PII redaction: a no-op when off
    quiet_since = session.last_user_speech_at or session.started_at or session.created_at
    closes_at = quiet_since + dt.timedelta(seconds=silence_seconds)
    if now < closes_at:
        return None
    reason = "silence" if session.last_user_speech_at is not None else "no_user"
    before = session.state
    session.state = SessionState.ENDED
    session.end_reason = reason
    session.ended_at = closes_at
    instance.state = "deleted"
    instance.deleted_at = closes_at
    db.flush()
    session_events.changed(db, session, before, instances=[instance], learned="reconciliation")
    return reason


def _later(current: dt.datetime | None, new: dt.datetime) -> dt.datetime:
    return new if current is None or new > current else current


def messages_from(raw: list[Any]) -> list[Message]:
    """The client's message objects, as this module needs them (question and answer text only)."""
    out = []
    for m in raw:
        if getattr(m, "role", None) not in ("user", "assistant"):
            continue
        if getattr(m, "type", "") not in ("", "question", "answer", None):
            continue
        out.append(
            Message(
                id=str(m.id),
                chat_id=str(m.chat_id),
                role=str(m.role),
                content=str(m.content),
                created_at=int(m.created_at),
            )
        )
    return out


def watch(job: JobContext) -> int:
    """One beat: read every live room's new messages, end the rooms that have closed; how many ended.

    One watcher at a time across beats and workers: two would read the same messages (filed once,
    but read and billed twice). A room the vendor cannot answer for now is skipped (the next beat
    reads it); an error of ours is raised.
    """
    with leases.held(job.sessions, "watch-coze-rooms") as mine:
        return _watch(job) if mine else 0


def _watch(job: JobContext) -> int:
    with session_scope(job.sessions) as db:
        watches = live_rooms(db)
    ended = 0
    for room in watches:
        try:
            raw = list(job.vendors.coze().iter_messages(room.conversation_id, after_id=room.cursor))
        except Exception as exc:
            if classify(exc) is None and not isinstance(exc, VendorNotConfigured):
                raise
            log.warning("coze_messages_unavailable", session_id=room.session_id, error=str(exc))
            continue
        with session_scope(job.sessions) as db:
            reason = record(
                db, room, messages_from(raw), now=utcnow(), silence_seconds=job.settings.coze_silence_seconds
            )
        if reason is not None:
            ended += 1
            log.info("coze_room_closed", session_id=room.session_id, reason=reason)
    return ended
