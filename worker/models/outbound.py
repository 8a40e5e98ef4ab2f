"""Events out: the transactional outbox, the app endpoints it is delivered to, and every attempt."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Boolean, FetchedValue, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class OutboxEvent(Base):
    """One thing that happened, written in the transaction that made it happen.

    ``dedup_key`` names the cause ("session.ended:<session>", "turn.completed:<turn>"), so a
    cause seen twice (a duplicate storm, a late callback after reconciliation) is one event.
    ``txid`` is the writing transaction's id on Postgres: readers walk events in (txid, id)
    order below the oldest transaction still running, an order no later commit can insert into
    (see worker/events/outbox.py). SQLite commits one writer at a time, so there id order is it.
    """

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    session_id: Mapped[str | None] = mapped_column(String(36))
    app_id: Mapped[int | None] = mapped_column(BigInteger)
    # Set for an event meant for one endpoint only (a test): neither fanned out nor streamed.
    endpoint_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())

    __table_args__ = (
        Index("ix_outbox_events_txid_id", "txid", "id"),
        Index("ix_outbox_events_session_id", "session_id", "id"),
        Index("ix_outbox_events_occurred_at", "occurred_at"),
    )


class OutboxCursor(Base):
    """How far the fan-out has read the outbox: (txid, id) of the last event turned into deliveries."""

    __tablename__ = "outbox_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    txid: Mapped[int] = mapped_column(BigInteger, default=0)
    event_id: Mapped[int] = mapped_column(BigInteger, default=0)


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Types or prefixes ending in "." ("session."); null: every type.
    events: Mapped[list[str] | None] = mapped_column(JSONType)
    app_id: Mapped[int | None] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(String(512))
    # "whsec_..." sealed with ROOMWARDEN_SECRET_KEY when one is set (worker/sealing.py).
    secret: Mapped[str] = mapped_column(Text)
    # After a rotation the old secret keeps signing alongside the new one until this time.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    # Gave up: the schedule ran out, or the endpoint kept refusing it (4xx). Replay sends it again.
    FAILED = "failed"


class Delivery(Base):
    """One event to one endpoint. ``webhook-id`` is ``evt_<event id>``: the same on every retry."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"))
    # Copied from the event: a session's deliveries to one endpoint go out one at a time, in order.
    session_id: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    replay: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index(
            "ix_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_deliveries_session_order",
            "endpoint_id",
            "session_id",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_deliveries_endpoint_id", "endpoint_id", "id"),
        Index("ix_deliveries_event_id", "event_id"),
    )


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    # "timeout", "connection refused", "blocked address"...; null when an HTTP answer came.
    error: Mapped[str | None] = mapped_column(String(256))
    response_excerpt: Mapped[str | None] = mapped_column(String(1024))

    __table_args__ = (Index("ix_delivery_attempts_delivery_id", "delivery_id"),)
