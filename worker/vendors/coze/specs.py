"""Coze request models that check every documented constraint before a request leaves, and the
typed shapes of what comes back.

Requests (``CreateRoom``, ``CreateConversation``, ``ListMessages``, ``ListVoices``) are strict:
wrong types, out-of-range numbers, unknown enum values and unknown fields (a misspelt
``room_mod`` would otherwise be dropped silently and the room made with defaults) make
``Model.model_validate(...)`` raise :class:`SpecError` naming the field. (``Model(...)`` raises
pydantic's ``ValidationError``, also a ``ValueError`` naming the field: overriding ``__init__``
would make pydantic call it for nested models too and lose the field path.)
Ranges and enums are those of the create-room doc (seed ``000``) and vendor-facts 4.4-4.7;
``room_mode`` also takes ``s2s`` and ``translate`` (the SDK lists them).

Responses are parsed leniently (extra fields ignored, numbers given as strings accepted), since
the vendor adds fields and its examples are not always typed consistently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from worker.vendors.coze.errors import SpecError

__all__ = [
    "AudioConfig",
    "Conversation",
    "CreateConversation",
    "CreateRoom",
    "CreatedRoom",
    "EnterMessage",
    "ListMessages",
    "ListVoices",
    "Message",
    "MessagePage",
    "RoomConfig",
    "SpecError",
    "TranslateConfig",
    "TurnDetection",
    "VideoConfig",
    "Voice",
    "VoicePage",
]


def _spec_error(error: ValidationError) -> SpecError:
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        message = str(item["msg"]).removeprefix("Value error, ")
        found.append((path or "body", message))
    return SpecError(found, spec="Coze")


class _Spec(BaseModel):
    """A request model: strict, closed, immutable, and failing with :class:`SpecError`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        try:
            return super().model_validate(obj, **options)
        except ValidationError as error:
            raise _spec_error(error) from None

    def body(self) -> dict[str, Any]:
        """The JSON the vendor expects: aliases, and unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- create room ------------------------------------------------------------------------------

NonEmpty = Annotated[str, Field(min_length=1)]


class AudioConfig(_Spec):
    codec: Literal["AACLC", "G711A", "OPUS", "G722"] | None = None


class VideoConfig(_Spec):
    codec: Literal["H264", "BYTEVC1"] | None = None
    stream_video_type: Literal["main", "screen"] | None = None
    video_frame_rate: Annotated[int, Field(ge=1, le=24)] | None = None
    video_frame_expire_duration: Annotated[int, Field(ge=1, le=10)] | None = None


class TurnDetection(_Spec):
    type: Literal["server_vad", "client_interrupt", "semantic_vad"] | None = None


class TranslateConfig(_Spec):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class RoomConfig(_Spec):
    room_mode: Literal["default", "s2s", "podcast", "translate"] | None = None
    audio_config: AudioConfig | None = None
    video_config: VideoConfig | None = None
    turn_detection: TurnDetection | None = None
    prologue_content: str | None = None
    prologue_delay_duration_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    translate_config: TranslateConfig | None = None


class CreateRoom(_Spec):
    """``POST /v1/audio/rooms``: the bot joins a new RTC room (and billing starts) at once."""

    bot_id: NonEmpty
    conversation_id: NonEmpty | None = None
    voice_id: NonEmpty | None = None
    uid: NonEmpty | None = None
    workflow_id: NonEmpty | None = None  # deprecated by the vendor on 2025-09-15; still accepted
    config: RoomConfig | None = None


@dataclass(frozen=True)
class CreatedRoom:
    """What an end user needs to join the room. ``token`` is the RTC join secret: never in repr."""

    room_id: str
    app_id: str
    token: str = field(repr=False)
    uid: str


# -- conversations and messages ---------------------------------------------------------------


class EnterMessage(_Spec):
    role: Literal["user", "assistant"]
    type: Literal["question", "answer"] | None = None
    content: str = ""
    content_type: Literal["text", "object_string", "card"] = "text"
    meta_data: dict[str, str] | None = None


def _check_meta_data(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("at most 16 pairs")
    for key, item in value.items():
        if not 1 <= len(key) <= 64:
            raise ValueError(f"key {key!r} must be 1-64 characters")
        if not 1 <= len(item) <= 512:
            raise ValueError(f"value of {key!r} must be 1-512 characters")
    return value


class CreateConversation(_Spec):
    """``POST /v1/conversation/create``."""

    bot_id: NonEmpty | None = None
    name: Annotated[str, Field(max_length=100)] | None = None
    messages: Annotated[list[EnterMessage], Field(max_length=16)] | None = None
    meta_data: dict[str, str] | None = None
    connector_id: NonEmpty | None = None

    @field_validator("meta_data")
    @classmethod
    def _meta(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_meta_data(value)


MessageId = Annotated[str, Field(pattern=r"^[0-9]+$")]


class ListMessages(_Spec):
    """Body of ``POST /v1/conversation/message/list``; ``before_id`` and ``after_id`` exclude each other."""

    order: Literal["asc", "desc"] = "desc"
    chat_id: NonEmpty | None = None
    before_id: MessageId | None = None
    after_id: MessageId | None = None
    limit: Annotated[int, Field(ge=1, le=50)] = 50

    @field_validator("after_id")
    @classmethod
    def _one_cursor(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("before_id") is not None:
            raise ValueError("cannot be combined with before_id")
        return value


class ListVoices(_Spec):
    """Query of ``GET /v1/audio/voices``."""

    filter_system_voice: bool = False
    model_type: Literal["big", "small"] | None = None
    voice_state: Literal["init", "cloned", "all"] | None = None
    page_num: Annotated[int, Field(ge=1)] = 1
    page_size: Annotated[int, Field(ge=1, le=100)] = 100

    def query(self) -> dict[str, str | int]:
        params: dict[str, str | int] = {}
        for key, value in self.body().items():
            params[key] = str(value).lower() if isinstance(value, bool) else value
        return params


# -- responses --------------------------------------------------------------------------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Message(_Reply):
    id: str
    conversation_id: str = ""
    bot_id: str = ""
    chat_id: str = ""
    section_id: str = ""
    role: str = ""
    type: str = ""
    content: str = ""
    content_type: str = "text"
    meta_data: dict[str, str] = Field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    reasoning_content: str = ""


class MessagePage(_Reply):
    messages: list[Message]
    first_id: str = ""
    last_id: str = ""
    has_more: bool = False


class Conversation(_Reply):
    id: str
    name: str = ""
    meta_data: dict[str, str] = Field(default_factory=dict)
    creator_id: str = ""
    created_at: int = 0
    updated_at: int = 0
    last_section_id: str = ""
    connector_id: str = ""


class EmotionScale(_Reply):
    min: float
    max: float
    default: float


class Emotion(_Reply):
    emotion: str
    display_name: str = ""
    emotion_scale_interval: EmotionScale | None = None


class Voice(_Reply):
    voice_id: str
    name: str = ""
    state: str = ""
    model_type: str = ""
    create_time: int = 0
    update_time: int = 0
    preview_text: str = ""
    preview_audio: str = ""
    language_code: str = ""
    language_name: str = ""
    is_system_voice: bool = False
    available_training_times: int = 0
    support_emotions: list[Emotion] = Field(default_factory=list)


class VoicePage(_Reply):
    voices: list[Voice] = Field(validation_alias="voice_list")
    has_more: bool = False
