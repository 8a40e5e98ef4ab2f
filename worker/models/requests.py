"""Requests the API has answered under an ``Idempotency-Key``, so that a retry gets the same answer.

A client whose ``POST /v1/sessions`` timed out cannot know whether the session was made; it
sends the request again with the same key. The row is written in the transaction that does the
work, so it exists exactly when the work does, and holds the answer given (status and body).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, UTCDateTime
from worker.models.inbox import ID

# How long a key holds its answer; the hourly retention job deletes older rows.
KEPT_FOR = dt.timedelta(hours=24)


class IdempotentRequest(Base):
    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("route", "key", name="uq_idempotent_requests_route_key"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    route: Mapped[str] = mapped_column(String(100))  # "POST /v1/sessions"
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical request body
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
