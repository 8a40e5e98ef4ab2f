"""Turns of a conversation: one user turn and one agent turn per Round at most."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class Turn(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("agent_instances.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(BigInteger)
    speaker: Mapped[str] = mapped_column(String(8))  # "user" | "agent"
    text: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[str | None] = mapped_column(String(64))
    spoken_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The Sequence the user text came from: a later ASRResult of the same Round wins.
    text_sequence: Mapped[int | None] = mapped_column(BigInteger)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    interrupt_reason: Mapped[int | None] = mapped_column(Integer)
    played_text: Mapped[str | None] = mapped_column(Text)
    # What readers without the admin token see (worker/privacy/turns.py): NULL when nothing was
    # redacted or redaction is off; the BI views show these where set (migration 0014).
    text_redacted: Mapped[str | None] = mapped_column(Text)
    played_text_redacted: Mapped[str | None] = mapped_column(Text)
    meta_info: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The text should not change any more (transcripts.settles): only settled turns are in the
    # Postgres search indexes, so re-joining a live turn's sentences does not rewrite them.
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # "say": the app had the agent speak this text (POST /v1/sessions/{id}/say); None: callbacks.
    source: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        UniqueConstraint("instance_id", "round", "speaker"),
        Index("ix_turns_session_id", "session_id"),
    )


class AgentSentence(Base):
    """One LLMResult: the agent's turn text is its sentences joined in Sequence order."""

    __tablename__ = "agent_sentences"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("agent_instances.id", ondelete="CASCADE"))
    inbox_id: Mapped[int] = mapped_column(ID, unique=True)  # the callback's row, until retention deletes it
    round: Mapped[int] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    callback_ts: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_agent_sentences_instance_round", "instance_id", "round"),)


class Round(Base):
    """What one Round's response time is computed from, kept by the drain as callbacks are applied.

    A summary of rows stored elsewhere (the timeline's SPEAK_END and SPEAKING, the first
    LLMResult sentence), folded with max/min so that the order callbacks arrive in does not
    matter: stats read one row per Round instead of grouping the timeline on every request.
    Postgres adds ``response_ms``, a generated column (migration 0012, not modelled here).
    """

    __tablename__ = "rounds"

    instance_id: Mapped[int] = mapped_column(
        ForeignKey("agent_instances.id", ondelete="CASCADE"), primary_key=True
    )
    round: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # The last SPEAK_END of the Round: a user who pauses and goes on is still speaking.
    user_speak_end_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The first SPEAKING status of the Round.
    agent_speaking_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The first LLMResult's callback time, in milliseconds as ZEGO sent it (agent_sentences.callback_ts).
    first_llm_ts: Mapped[int | None] = mapped_column(BigInteger)
