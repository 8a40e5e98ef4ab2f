"""The Coze client: audio rooms, conversations, messages and voices (see ``client`` and ``errors``)."""

from worker.vendors.coze.client import CozeClient
from worker.vendors.coze.errors import (
    CozeAuthError,
    CozeError,
    CozeNotFoundError,
    CozePermanentError,
    CozeQuotaError,
    CozeTransientError,
    CozeValidationError,
    SpecError,
)
from worker.vendors.coze.specs import CreatedRoom, CreateRoom, Message, MessagePage, Voice, VoicePage

__all__ = [
    "CozeAuthError",
    "CozeClient",
    "CozeError",
    "CozeNotFoundError",
    "CozePermanentError",
    "CozeQuotaError",
    "CozeTransientError",
    "CozeValidationError",
    "CreateRoom",
    "CreatedRoom",
    "Message",
    "MessagePage",
    "SpecError",
    "Voice",
    "VoicePage",
]
