"""All models, imported here so that Alembic and the rest see one complete metadata."""

from worker.models.actions import ActionKind, ActionState, JobLock, PolicyAction
from worker.models.analyses import SessionAnalysis
from worker.models.events import AgentException, TimelineEvent, UserAudio
from worker.models.inbox import InboxCallback, InboxState
from worker.models.outbound import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    Endpoint,
    OutboxCursor,
    OutboxEvent,
)
from worker.models.presence import RoomUser
from worker.models.privacy import Erasure
from worker.models.requests import IdempotentRequest
from worker.models.sessions import COZE_APP_ID, AgentInstance, Provider, Session, SessionState
from worker.models.transcripts import AgentSentence, Round, Turn

__all__ = [
    "COZE_APP_ID",
    "ActionKind",
    "ActionState",
    "AgentException",
    "AgentInstance",
    "AgentSentence",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryState",
    "Endpoint",
    "Erasure",
    "IdempotentRequest",
    "InboxCallback",
    "InboxState",
    "JobLock",
    "OutboxCursor",
    "OutboxEvent",
    "PolicyAction",
    "Provider",
    "RoomUser",
    "Round",
    "Session",
    "SessionAnalysis",
    "SessionState",
    "TimelineEvent",
    "Turn",
    "UserAudio",
]
