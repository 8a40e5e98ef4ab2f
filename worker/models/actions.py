"""What policies decided and what came of it: one row per decision, executed at most once.

A decision is written in the same transaction as the callback (or scan) that prompted it, under
a ``trigger_key`` that names its cause ("the deletion of instance X", "idle since T"): the same
cause seen twice, from a duplicated callback or a second beat, collides there and is stored once.
A Celery task then claims the row, calls the vendor outside any transaction, and records the
outcome; a claim older than ``ROOMWARDEN_ACTION_STALE_SECONDS`` is taken over, so a worker killed
mid-action leaves it to be retried, never done twice over.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from worker.db import Base, JSONType, UTCDateTime
from worker.models.inbox import ID


class ActionKind(enum.StrEnum):
    # A new AgentInstance in the same room for the same user, from the session's stored spec.
    RECREATE = "recreate"
    # DeleteAgentInstance for every live instance; the session ends with the action's reason.
    END = "end"
    # CloseRoom: everyone out of the RTC room (after 1202, when nobody should be billed further).
    CLOSE_ROOM = "close_room"
    # Idle, too long, or making room under the quota: optional spoken warning, then END.
    RECYCLE = "recycle"
    # 1202 in "wait" mode: poll DescribeUsers until the user is back (then RECREATE) or give up.
    AWAIT_USER = "await_user"
    # The user rejoined on another stream (RTC stream_create): UpdateAgentInstance RTC.UserStreamId.
    FOLLOW_STREAM = "follow_stream"
    # Live control through the API (worker/sessions/control.py): called inline, recorded here.
    SAY = "say"  # SendAgentInstanceTTS
    INTERRUPT = "interrupt"  # InterruptAgentInstance
    MESSAGE = "message"  # SendAgentInstanceLLM
    UPDATE = "update"  # UpdateAgentInstance (LLM / TTS / ASR)
    CONTEXT = "context"  # GetAgentInstanceMsgList


# The kinds a person runs live through the API; never claimed by the policy executor.
CONTROL_KINDS = frozenset(
    {ActionKind.SAY, ActionKind.INTERRUPT, ActionKind.MESSAGE, ActionKind.UPDATE, ActionKind.CONTEXT}
)


class ActionState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Confirming with the vendor showed there was nothing to do (e.g. the instance is gone).
    SKIPPED = "skipped"
    # Decided under a dry-run policy: recorded and shown, never executed.
    DRY_RUN = "dry_run"


class PolicyAction(Base):
    __tablename__ = "policy_actions"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    # Why, in a word a reader can filter on: gave_up, user_absent, idle, max_length, quota,
    # reconciled, llm_auth_failed, llm_errors, disconnected, manual, ...
    reason: Mapped[str] = mapped_column(String(64))
    # The policy section that decided: on_deleted, on_exception, idle, max_length, quota,
    # reconcile, manual.
    policy: Mapped[str] = mapped_column(String(32))
    trigger_key: Mapped[str] = mapped_column(String(320), unique=True)
    app_id: Mapped[int] = mapped_column(BigInteger)
    # The instance the decision is about (deleted, idle, ...), when there is one.
    agent_instance_id: Mapped[str | None] = mapped_column(String(128))
    # What the decision was made from: the code, counts in the window, the policy values.
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), default=ActionState.PENDING)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Backoff: not to be executed before this time.
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # What the executor saw and did: vendor status before acting, new instance id, ...
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_policy_actions_session_id", "session_id"),
        Index(
            "ix_policy_actions_due",
            "not_before",
            postgresql_where=text("state IN ('pending', 'running')"),
            sqlite_where=text("state IN ('pending', 'running')"),
        ),
        Index("ix_policy_actions_created_at", "created_at"),
    )


class JobLock(Base):
    """A lease on a periodic job: whoever holds an unexpired row runs it; a crash frees it by TTL."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
