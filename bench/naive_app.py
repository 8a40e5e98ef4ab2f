"""The design roomwarden is measured against in ``bench/pipeline``: verify, one Celery task per callback.

This is what a team writes first when it has to take ZEGO's callbacks: a Starlette endpoint that
verifies the signature, calls ``apply_async`` with the payload and answers, and a task that
applies that one callback with the SQLAlchemy ORM in one transaction. It is the peer roomwarden
must beat, so it is written honestly, not as a straw man:

- the same receiver contract as ``POST /callbacks/zego`` (same body forms, roomwarden's own
  ``verify_callback`` and field checks, the same 200 body, the same 4xx), minus the durable
  store: the answer comes once the task is published;
- the same tables, written through roomwarden's models on the schema its migrations build (same
  indexes), with the same meaning per column, so the bench's completeness check (every turn
  visible with its text) holds for it exactly as for roomwarden;
- the same broker and the delivery settings of ``noop_app`` (copied from ``worker.celery_app``),
  except that acknowledgements stay Celery's defaults (acks early), as a team would leave them;
- races handled as a team would: the instance row is locked for the transaction, and when two
  tasks create the same row at once the loser's IntegrityError makes the task retry.

What it lacks is what roomwarden adds: no inbox (a callback acknowledged and then lost with a
dead worker is gone), no deduplication (a second delivery of a callback fails on the
``inbox_id`` uniqueness below and is retried until it gives up), no batching (one transaction
and one broker message per callback).

The ``inbox_id`` columns (sentences, timeline, exceptions) hold roomwarden's inbox row; this
design has no inbox, and the columns are NOT NULL UNIQUE, so they get a number derived from the
callback's dedup key instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webhooks.receiver import error
from worker.celery_app import app as real_app
from worker.db import from_ms, session_scope, sessions_for, utcnow
from worker.inbox import callback_fields
from worker.inbox.callbacks import Callback, MalformedCallback, int_field, parse_body, text_field
from worker.inbox.signatures import InvalidSignature, verify_callback
from worker.models import (
    AgentException,
    AgentInstance,
    AgentSentence,
    Session,
    SessionState,
    TimelineEvent,
    Turn,
)
from worker.sessions.lifecycle import earliest, end_reason, exception_family, latest, session_id_for
from worker.sessions.transcripts import join_sentences
from worker.settings import Settings, get_settings

QUEUE = "bench_naive"
PATH = "/callbacks/zego"
TASK_NAME = "bench.naive.apply"
BROKER_URL = os.environ.get("ROOMWARDEN_BROKER_URL", "redis://127.0.0.1:6379/13")
MAX_RETRIES = 10

# noop_app's list (worker.celery_app's delivery settings) but for the acknowledgements.
SHARED_CONF = (
    "worker_prefetch_multiplier",
    "task_ignore_result",
    "task_serializer",
    "accept_content",
    "broker_transport_options",
    "broker_connection_timeout",
    "broker_connection_retry_on_startup",
    "worker_send_task_events",
    "worker_hijack_root_logger",
)

# Not made the current app: tests import this module beside roomwarden's app (`celery -A` sets it).
app = Celery("bench_naive", broker=BROKER_URL, set_as_current=False)
app.conf.update({key: real_app.conf[key] for key in SHARED_CONF}, task_default_queue=QUEUE)


# --------------------------------------------------------------------------- the task


@functools.cache
def _settings() -> Settings:
    """Read once per process, as a module-level settings object would be."""
    return get_settings()


@app.task(name=TASK_NAME, bind=True, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
def apply(self: Any, payload: dict[str, Any]) -> None:
    try:
        with session_scope(sessions_for(_settings().database_url)) as db:
            apply_callback(db, payload)
    except IntegrityError as exc:
        # Another task created the same session, instance or turn first: the retry finds it.
        raise self.retry(exc=exc, countdown=0) from exc


def apply_callback(db: DbSession, payload: dict[str, Any]) -> None:
    """Apply one verified callback; the caller commits. Order-tolerant where a team would know to be:
    sentences joined by Sequence, times merged with min/max, the highest Sequence's status wins."""
    cb = Callback.from_payload(payload)
    instance = _instance(db, cb)
    session = db.get(Session, instance.session_id)
    assert session is not None
    _observe(session, instance, cb)
    handler = HANDLERS.get(cb.event)
    if handler is not None:
        handler(db, session, instance, cb)


def _instance(db: DbSession, cb: Callback) -> AgentInstance:
    """The callback's agent instance, locked until commit; created with its session when new."""
    instance = db.scalars(
        select(AgentInstance)
        .where(AgentInstance.app_id == cb.app_id, AgentInstance.agent_instance_id == cb.agent_instance_id)
        .with_for_update()
    ).one_or_none()
    if instance is not None:
        return instance
    session_id = session_id_for(cb.app_id, cb.agent_instance_id)
    if db.get(Session, session_id) is None:
        db.add(
            Session(
                id=session_id,
                app_id=cb.app_id,
                origin="callback",
                state=SessionState.STARTING.value,
                created_at=utcnow(),
            )
        )
    instance = AgentInstance(
        app_id=cb.app_id, agent_instance_id=cb.agent_instance_id, session_id=session_id, state="starting"
    )
    db.add(instance)
    db.flush()  # IntegrityError when another task has just created it: the task retries
    return instance


def _observe(session: Session, instance: AgentInstance, cb: Callback) -> None:
    """What every callback says about the agent and when it was alive."""
    payload, at = cb.payload, from_ms(cb.timestamp_ms)
    instance.first_seen_at = earliest(instance.first_seen_at, at)
    instance.last_event_at = latest(instance.last_event_at, at)
    if cb.sequence is not None:
        instance.last_sequence = max(instance.last_sequence or 0, cb.sequence)
    instance.agent_user_id = instance.agent_user_id or text_field(payload.get("AgentUserId"))
    instance.agent_id = instance.agent_id or text_field(payload.get("AgentId"))
    instance.room_id = instance.room_id or text_field(payload.get("RoomId"))
    session.room_id = session.room_id or instance.room_id
    session.agent_id = session.agent_id or instance.agent_id
    session.agent_name = session.agent_name or text_field(payload.get("Name"))
    if cb.event in ("ASRResult", "UserSpeakAction", "UserAudioData"):
        session.user_id = session.user_id or text_field(cb.data.get("UserId"))
    if cb.event not in ("AgentInstanceCreated", "AgentInstanceDeleted", "Exception"):
        session.last_activity_at = latest(session.last_activity_at, at)
    if cb.event in ("ASRResult", "UserSpeakAction"):
        session.last_user_speech_at = latest(session.last_user_speech_at, at)


def _row_id(cb: Callback) -> int:
    """A stand-in for the inbox row id: 63 bits of the callback's dedup key."""
    return int.from_bytes(hashlib.blake2b(cb.dedup_key.encode(), digest_size=8).digest()) >> 1


def _turn(db: DbSession, instance: AgentInstance, round_: int, speaker: str) -> Turn:
    turn = db.scalars(
        select(Turn).where(Turn.instance_id == instance.id, Turn.round == round_, Turn.speaker == speaker)
    ).one_or_none()
    if turn is None:
        turn = Turn(
            session_id=instance.session_id,
            instance_id=instance.id,
            round=round_,
            speaker=speaker,
            text="",
            interrupted=False,
        )
        db.add(turn)
    return turn


def created(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    stamp = int_field(cb.data.get("CreatedTimestamp"))
    at = from_ms(stamp or cb.timestamp_ms)
    instance.created_at = earliest(instance.created_at, at)
    session.started_at = earliest(session.started_at, at)
    if instance.state != "deleted":
        instance.state = "active"
        session.state = SessionState.ACTIVE.value


def deleted(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    stamp = int_field(cb.data.get("DeletedTimestamp"))
    code = int_field(cb.data.get("Code"))
    latency = cb.data.get("LatencyData")
    instance.state = "deleted"
    instance.deleted_at = from_ms(stamp or cb.timestamp_ms)
    instance.delete_code = code
    instance.latency = latency if isinstance(latency, dict) else None
    session.state = SessionState.ENDED.value
    session.ended_at = instance.deleted_at
    session.end_code = code
    session.end_reason = end_reason(code) if code is not None else None


def user_said(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    turn = _turn(db, instance, round_, "user")
    text = text_field(cb.data.get("Text")) or ""
    sequence = cb.sequence if cb.sequence is not None else -1
    if turn.text_sequence is None or (sequence, text) > (turn.text_sequence, turn.text):
        turn.text, turn.text_sequence = text, sequence
    turn.user_id = turn.user_id or text_field(cb.data.get("UserId"))
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))


def agent_said(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    """Store the sentence, then write the turn's text again from all its sentences in Sequence order."""
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    db.add(
        AgentSentence(
            instance_id=instance.id,
            inbox_id=_row_id(cb),
            round=round_,
            sequence=cb.sequence,
            callback_ts=cb.timestamp_ms,
            text=text_field(cb.data.get("Text")) or "",
        )
    )
    turn = _turn(db, instance, round_, "agent")
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))
    sentences = db.scalars(  # autoflush writes the new sentence first
        select(AgentSentence.text)
        .where(AgentSentence.instance_id == instance.id, AgentSentence.round == round_)
        .order_by(AgentSentence.sequence.asc().nulls_last(), AgentSentence.callback_ts, AgentSentence.text)
    ).all()
    turn.text = join_sentences(list(sentences))


def interrupted(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    round_ = int_field(cb.data.get("Round"))
    if round_ is None:
        return
    turn = _turn(db, instance, round_, "agent")
    turn.interrupted = True
    turn.interrupt_reason = int_field(cb.data.get("Reason")) or turn.interrupt_reason
    played = text_field(cb.data.get("PlayedText"))
    if played is not None:
        turn.played_text = played
    turn.spoken_at = earliest(turn.spoken_at, from_ms(cb.timestamp_ms))


def meta_info(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    round_ = int_field(cb.data.get("Round"))
    info = cb.data.get("MetaInfo")
    if round_ is None or not isinstance(info, dict):
        return
    turn = _turn(db, instance, round_, "agent")
    turn.meta_info = {**(turn.meta_info or {}), **info}


def timeline(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    data = cb.data
    if cb.event == "AgentInstanceStatus" and isinstance(data.get("Status"), str):
        sequence = cb.sequence if cb.sequence is not None else -1
        if instance.status_sequence is None or sequence > instance.status_sequence:
            instance.status, instance.status_sequence = data["Status"], sequence
    db.add(
        TimelineEvent(
            session_id=session.id,
            instance_id=instance.id,
            inbox_id=_row_id(cb),
            event=cb.event,
            round=int_field(data.get("Round")),
            sequence=cb.sequence,
            at=from_ms(cb.timestamp_ms),
            detail={k: v for k, v in data.items() if k != "Round"},
        )
    )


def exception(db: DbSession, session: Session, instance: AgentInstance, cb: Callback) -> None:
    code = int_field(cb.data.get("Code")) or 0
    db.add(
        AgentException(
            session_id=session.id,
            instance_id=instance.id,
            inbox_id=_row_id(cb),
            code=code,
            family=exception_family(code),
            message=text_field(cb.data.get("Message")) or "",
            round=int_field(cb.data.get("Round")),
            sequence=cb.sequence,
            at=from_ms(cb.timestamp_ms),
        )
    )


HANDLERS: dict[str, Callable[[DbSession, Session, AgentInstance, Callback], None]] = {
    "AgentInstanceCreated": created,
    "AgentInstanceDeleted": deleted,
    "ASRResult": user_said,
    "LLMResult": agent_said,
    "Interrupted": interrupted,
    "AgentInstanceMetaInfo": meta_info,
    "UserSpeakAction": timeline,
    "AgentSpeakAction": timeline,
    "AgentInstanceStatus": timeline,
    "Exception": exception,
}


# --------------------------------------------------------------------------- the receiver

# webhooks/receiver.py's answer, byte for byte: ZEGO sees no difference.
_STORED = Response(b'{"status":"stored"}', media_type="application/json")


async def zego_callback(request: Request) -> Response:
    """Verify and publish; the event loop waits for the broker's LPUSH, as a plain handler would."""
    settings: Settings = request.app.state.settings
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        return error(413, "body_too_large", f"body exceeds {settings.max_body_bytes} bytes")
    try:
        payload, _form = parse_body(body)
    except MalformedCallback as exc:
        return error(400, "malformed", str(exc))
    try:
        verify_callback(
            payload,
            secret_for=request.app.state.callback_secrets.get,
            now=time.time(),
            window_seconds=settings.timestamp_window_seconds,
        )
    except InvalidSignature as exc:
        return error(401, exc.reason, exc.detail)
    try:
        callback_fields.check(payload)
        Callback.from_payload(payload)
    except MalformedCallback as exc:
        return error(400, "malformed", str(exc))
    apply.apply_async(args=(payload,))
    return _STORED


def callback_secrets(settings: Settings) -> dict[int, str]:
    """AppId -> callback secret, from the same settings roomwarden's receiver reads."""
    secrets = {app_id: zego.callback_secret.get_secret_value() for app_id, zego in settings.zego_apps.items()}
    if settings.zego_app_id is not None and settings.zego_callback_secret is not None:
        secrets.setdefault(settings.zego_app_id, settings.zego_callback_secret.get_secret_value())
    return secrets


@asynccontextmanager
async def _lifespan(web_app: Starlette) -> AsyncIterator[None]:
    settings = get_settings()
    web_app.state.settings = settings
    web_app.state.callback_secrets = callback_secrets(settings)
    yield


web = Starlette(routes=[Route(PATH, zego_callback, methods=["POST"])], lifespan=_lifespan)
