"""What was erased, for whom, by whom and when: the erasure itself is a record to keep."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class Erasure(Base):
    """One ``DELETE /v1/users/{id}`` or ``roomwarden erase --user``.

    ``user_hash`` is the SHA-256 of the user id, not the id: the log of erasures should not be
    a list of the people who asked to be forgotten. Who asked can still be checked by hashing
    the id again. ``finished_at`` stays null if the erasure stopped half-way (it is run in
    batches); running it again finishes it.
    """

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    user_hash: Mapped[str] = mapped_column(String(64))
    # "api:admin" or "cli:<operating-system user>".
    requested_by: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    # Rows changed per kind (turns, agent_sentences, payloads, user_audio, events, ...).
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The database's own clean-up after it: SQLite FTS merged and WAL truncated, Postgres VACUUM.
    files_scrubbed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_erasures_user_hash", "user_hash"),)
