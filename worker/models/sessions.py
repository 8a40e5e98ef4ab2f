"""A session is one end user's conversation with one agent in one room; agent instances come and go in it."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class SessionState(enum.StrEnum):
    STARTING = "starting"
    ACTIVE = "active"
    ENDED = "ended"
    # Started through the API and refused by the vendor: never had a live agent.
    FAILED = "failed"
    # Its agent is gone and a policy is bringing a new one (recreating, or waiting for the user).
    RECOVERING = "recovering"
    # Started through the API while the vendor's concurrency quota was full: starts when a slot frees.
    QUEUED = "queued"


# Coze sessions have no ZEGO AppId; their room is filed as an instance under this one.
COZE_APP_ID = 0


class Provider(enum.StrEnum):
    ZEGO = "zego"
    ZEGO_DIGITAL_HUMAN = "zego_digital_human"
    # CreateLiveDigitalHumanAgentInstance: pushed to RTC/CDN, no user, driven only by `say` (TTS).
    ZEGO_LIVE_DIGITAL_HUMAN = "zego_live_digital_human"
    COZE = "coze"


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    # "callback": first heard of through a callback; "api": started through roomwarden.
    origin: Mapped[str] = mapped_column(String(16), default="callback")
    state: Mapped[str] = mapped_column(String(16), default=SessionState.STARTING)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    end_code: Mapped[int | None] = mapped_column(Integer)
    room_id: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    agent_name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_user_speech_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Sessions started through the API (origin "api") keep what it takes to start them again.
    provider: Mapped[str | None] = mapped_column(String(32))
    template: Mapped[str | None] = mapped_column(String(128))
    agent_user_id: Mapped[str | None] = mapped_column(String(64))
    # The vendor request body, vendor secrets sealed (see worker/sealing.py).
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # What a client needs to join: ZEGO instance id and DigitalHumanConfig, Coze room and token.
    join_info: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    failure_message: Mapped[str | None] = mapped_column(String(1024))
    start_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A start in flight: a second task finding a fresh claim leaves it alone.
    start_claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    provisioned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    end_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Coze: the conversation the room writes to, and the last message already in the transcript.
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    message_cursor: Mapped[str | None] = mapped_column(String(64))

    # Written by policies (worker/policies/), never by callbacks, so a rebuild keeps them.
    # Set while a recreation or a wait for the user is pending: the session is recovering, not over.
    recovering_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Why a policy ended the session (gave_up, idle, max_length, reconciled, ...): once every
    # instance is deleted this, not the last deletion code, is the session's end_reason.
    policy_reason: Mapped[str | None] = mapped_column(String(64))
    # Something an operator should look at (e.g. llm_auth_failed): recreating cannot help.
    flag: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The last time reconciliation asked the vendor about this session's agent, and how many asks
    # in a row did not settle it (alive or unknown): the wait before the next one doubles with each.
    reconciled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reconcile_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Its turns by speaker, and its interrupted agent turns: counted as turns are made (the drain,
    # Coze rooms) so that ``min_turns`` and the stats' turn figures read sessions, not turns.
    user_turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    agent_turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    interrupted_turns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    # Its words were removed (worker/privacy/): by transcript retention or by a user's erasure.
    # Counts, timings and Rounds stay, so stats read the same; the turns' text is empty.
    transcript_removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    transcript_removed_by: Mapped[str | None] = mapped_column(String(16))  # "retention" | "erasure"

    # Presence from ZEGO's RTC room callbacks (worker/sessions/rooms.py); NULL while roomwarden has
    # heard none for this user in this room. ``no_user_seconds``: agent time billed with the user
    # out of the room, summed over the session's instances (final once it ends).
    user_present: Mapped[bool | None] = mapped_column(Boolean)
    user_absent_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    user_logout_reason: Mapped[str | None] = mapped_column(String(8))
    no_user_seconds: Mapped[float | None] = mapped_column(Float)

    instances: Mapped[list[AgentInstance]] = relationship(
        back_populates="session", order_by="AgentInstance.first_seen_at"
    )

    __table_args__ = (
        Index("ix_sessions_state", "state"),
        Index("ix_sessions_user_id", "user_id"),
        Index("ix_sessions_room", "app_id", "room_id"),
    )


class AgentInstance(Base):
    __tablename__ = "agent_instances"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    agent_instance_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="starting")
    agent_user_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    room_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delete_code: Mapped[int | None] = mapped_column(Integer)
    latency: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status: Mapped[str | None] = mapped_column(String(16))
    status_sequence: Mapped[int | None] = mapped_column(BigInteger)
    first_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_sequence: Mapped[int | None] = mapped_column(BigInteger)
    # Turns of Rounds up to this one are completed and announced (turn.completed, worker/events).
    completed_round: Mapped[int | None] = mapped_column(BigInteger)
    # Its callbacks' inbox rows were deleted by retention: a rebuild cannot derive it again.
    history_purged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    session: Mapped[Session] = relationship(back_populates="instances")

    __table_args__ = (
        UniqueConstraint("app_id", "agent_instance_id"),
        Index("ix_agent_instances_session_id", "session_id"),
    )
