"""User audio: the first second or so of each utterance, kept only when the operator opts in.

It is personal data, so it is off by default (``ROOMWARDEN_STORE_USER_AUDIO``): with it off the
audio is stripped from the stored callback as soon as it is applied; with it on it is kept in
``user_audio`` for ``ROOMWARDEN_USER_AUDIO_RETENTION_DAYS`` and then purged.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from worker.db import from_ms
from worker.inbox.callbacks import Callback, MalformedCallback, int_field, text_field
from worker.models import InboxCallback, InboxState, UserAudio
from worker.sessions.lifecycle import Stream


def user_audio(db: DbSession, stream: Stream, cb: Callback, inbox_id: int) -> None:
    encoded = cb.data.get("Audio")
    if not isinstance(encoded, str):
        return
    try:
        pcm = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedCallback("UserAudioData.Audio is not valid base64") from None
    stream.insert(
        UserAudio,
        session_id=stream.session.id,
        instance_id=stream.instance.id,
        inbox_id=inbox_id,
        user_id=text_field(cb.data.get("UserId")),
        round=int_field(cb.data.get("Round")),
        sample_rate=int_field(cb.data.get("SampleRate")),
        format=text_field(cb.data.get("Format")),
        audio=pcm,
        at=from_ms(cb.timestamp_ms),
    )


def without_audio(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload.get("Data")
    if not isinstance(data, dict) or "Audio" not in data:
        return payload
    return {**payload, "Data": {**data, "Audio": None, "AudioDropped": True}}


def purge_expired(db: DbSession, *, now: dt.datetime, retention_days: int) -> int:
    """Delete kept audio past retention, and strip it from the stored callbacks it came in."""
    cutoff = now - dt.timedelta(days=retention_days)
    result = db.execute(delete(UserAudio).where(UserAudio.at < cutoff))
    rows = db.scalars(
        select(InboxCallback).where(
            InboxCallback.event == "UserAudioData",
            InboxCallback.received_at < cutoff,
            InboxCallback.state != InboxState.PENDING,
            InboxCallback.payload.contains('"Audio":"'),
        )
    )
    for row in rows:
        row.payload = orjson.dumps(without_audio(orjson.loads(row.payload))).decode()
    return int(getattr(result, "rowcount", 0) or 0)
