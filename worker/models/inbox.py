"""The inbox: every callback exactly as received, the source of truth everything else derives from."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime

ID = BigInteger().with_variant(Integer(), "sqlite")


class InboxState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    # Validly signed, same dedup key as a stored callback, other content (a forged body stored
    # first with a leaked signature, or a vendor bug): kept for a person, never applied.
    CONFLICT = "conflict"


class InboxCallback(Base):
    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(64))
    agent_instance_id: Mapped[str] = mapped_column(String(128))
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    # (AppId, AgentInstanceId, Event, Sequence), or a payload hash when Sequence is absent:
    # the same callback delivered twice collides here and is stored once.
    dedup_key: Mapped[str] = mapped_column(String(320), unique=True)
    # The signature does not cover the body; a second body under one signature is a replay.
    signature: Mapped[str] = mapped_column(String(64), unique=True)
    body_hash: Mapped[str] = mapped_column(String(64))  # callbacks.payload_hash: content, not bytes
    payload: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(16))
    callback_ts: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default=InboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Retention emptied ``payload`` (see worker/inbox/retention.py); what was derived from it stays.
    purged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_inbox_pending_stream",
            "app_id",
            "agent_instance_id",
            "sequence",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_inbox_pending_received",
            "received_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_inbox_state", "state"),
    )
