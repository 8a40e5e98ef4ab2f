"""What happened around the turns: speak/status timeline, vendor exceptions, optional user audio."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class TimelineEvent(Base):
    __tablename__ = "timeline_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("agent_instances.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ID, unique=True)  # the callback's row, until retention deletes it
    event: Mapped[str] = mapped_column(String(64))
    round: Mapped[int | None] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (Index("ix_timeline_events_session_id", "session_id"),)


class AgentException(Base):
    __tablename__ = "agent_exceptions"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("agent_instances.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ID, unique=True)  # the callback's row, until retention deletes it
    code: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    round: Mapped[int | None] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_agent_exceptions_session_id", "session_id"),)


class UserAudio(Base):
    """The first second or so of a user utterance; kept only when ROOMWARDEN_STORE_USER_AUDIO is on."""

    __tablename__ = "user_audio"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("agent_instances.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ID, unique=True)  # the callback's row, until retention deletes it
    user_id: Mapped[str | None] = mapped_column(String(64))
    round: Mapped[int | None] = mapped_column(BigInteger)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    audio: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_user_audio_at", "at"),)
