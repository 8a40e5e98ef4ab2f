"""Request models for the ZEGO AI Agent actions, holding every documented constraint.

A spec is validated when it is built, so a broken request never leaves the process: the error is
a :class:`SpecError` naming each offending field by its dotted ZEGO path (``LLM.Temperature``,
``MessageHistory.Messages[3].Role``) and the rule it breaks. Attribute names are ZEGO's own
PascalCase names, so a body dict and a spec read the same.

Sources: vendor-facts 1.1, 1.3, 1.4 (the current docs) and seed 002 (an older revision of
CreateDigitalHumanAgentInstance). Where they differ, both shapes are accepted: TTS vendor
``ByteDance`` (seed) and ``ByteDanceV3`` (current), VAD settings under ``ASR`` (deprecated) and
under ``VAD``, ``WindowSize`` and ``ZIM.LoadMessageCount`` up to 500 (seed: 200), and the callback
flags ``AgentSpeakAction`` (seed) and ``AgentInstanceStatus`` (current). Where they differ in
strictness the stricter reading wins (``LLM.ApiKey`` required, ``cluster`` required for
ByteDance), so a spec that passes here also passes at ZEGO.

Unknown fields are refused everywhere except in the objects ZEGO passes through to another vendor
(``LLM.Params``, ``LLM.AgentExtraInfo``, ``TTS.Params`` beyond ``app``, ``ASR.Params``,
``AdvancedConfig.TTSParamPaths``): a misspelt ``Temprature`` would otherwise be dropped by ZEGO
and silently fall back to a default.

Secrets (``LLM.ApiKey`` and every value of ``TTS.Params.app``) are ``SecretStr``: repr(), str()
and errors show ``**********``; :meth:`ZegoRequest.to_body` alone reveals them, for sending.
:func:`worker.sealing.secret_paths` says where they sit in a body, so that callers can encrypt them at rest.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
    model_validator,
)

from worker.vendors.errors import SpecError

# --- errors: the shared SpecError (worker.vendors.errors), with ZEGO's field paths -------------


class _At(ValueError):
    """Raised by model validators to point at a field below the model (``Params.app.token``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(outer: str, inner: str) -> str:
    if not outer or not inner:
        return outer or inner
    return outer + inner if inner.startswith("[") else f"{outer}.{inner}"


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this ZEGO object (unknown fields are refused)",
}


def spec_error(error: ValidationError, spec: str | None) -> SpecError:
    """One SpecError listing every problem pydantic found, with ZEGO field paths."""
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False, include_input=False):
        loc = list(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, SpecError):
            # A nested model's custom __init__ already turned its problems into a SpecError.
            problems.extend((_join(_path(loc), field), message) for field, message in cause.errors)
            continue
        if isinstance(cause, _At):
            path = _path([*loc, *cause.path.split(".")])
            message = str(cause)
        elif isinstance(cause, ValueError):
            path, message = _path(loc), str(cause)
        else:
            path, message = _path(loc), _MESSAGES.get(item["type"], item["msg"])
        problems.append((path, message))
    return SpecError(problems, spec=spec or "ZEGO")


# --- field types ------------------------------------------------------------------------------


def _reveal(value: SecretStr, info: SerializationInfo) -> str:
    if isinstance(info.context, dict) and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return str(value)


Secret = Annotated[SecretStr, PlainSerializer(_reveal, return_type=str, when_used="always")]


def _identifier(max_bytes: int, pattern: str, allowed: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        size = len(value.encode("utf-8"))
        if size > max_bytes:
            raise ValueError(f"must be at most {max_bytes} bytes, got {size}")
        if not compiled.fullmatch(value):
            raise ValueError(f"may only contain {allowed}")
        return value

    return AfterValidator(check)


def _max_bytes(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > limit:
            raise ValueError(f"must be at most {limit} bytes, got {size}")
        return value

    return AfterValidator(check)


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


UserIdStr = Annotated[str, _identifier(32, r"[0-9A-Za-z_-]+", "digits, letters, '-' and '_'")]
AgentIdStr = Annotated[
    str,
    _identifier(
        128,
        r"[0-9A-Za-z!#$%&()+\-:;\\<=.>?@\[\]^_ {}|~,]+",
        "digits, letters and !#$%&()+-:;\\<=.>?@[]^_ {}|~,",
    ),
]
RtcIdStr = Annotated[str, _identifier(128, r"[0-9A-Za-z_.-]+", "digits, letters, '_', '-' and '.'")]
AgentUserIdStr = Annotated[str, _identifier(32, r"[0-9A-Za-z_.-]+", "digits, letters, '_', '-' and '.'")]
InstanceIdStr = Annotated[str, _identifier(64, r"[0-9A-Za-z_-]+", "digits, letters, '-' and '_'")]
TextStr = Annotated[str, AfterValidator(_nonempty)]
Flag = Literal[0, 1]
PriorityStr = Literal["Low", "Medium", "High"]
SamePriorityStr = Literal["ClearAndInterrupt", "Enqueue"]


def _hot_words(value: str) -> str:
    """``word|weight,...``: at most 128 words of 1-30 characters without spaces, weights in [-1, 11]."""
    if not value:
        return value
    entries = value.split(",")
    if len(entries) > 128:
        raise ValueError(f"must have at most 128 words, got {len(entries)}")
    for index, entry in enumerate(entries):
        word, sep, weight = entry.partition("|")
        if not sep:
            raise ValueError(f"entry {index + 1} ({entry!r}) must be word|weight")
        if not word or len(word) > 30:
            raise ValueError(f"entry {index + 1}: a word must be 1-30 characters, got {len(word)}")
        if any(c.isspace() for c in word):
            raise ValueError(f"entry {index + 1} ({word!r}): a word must not contain spaces")
        if not re.fullmatch(r"-?\d+", weight) or not -1 <= int(weight) <= 11:
            raise ValueError(f"entry {index + 1} ({word!r}): the weight must be an integer in [-1, 11]")
    return value


HotWordStr = Annotated[str, AfterValidator(_hot_words)]


class _Schema(BaseModel):
    """Base of every ZEGO object: unknown fields refused, inputs never echoed in errors."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            # ``from None``: pydantic's own error would otherwise ride along in tracebacks.
            raise spec_error(error, type(self).__name__) from None

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        try:
            return super().model_validate(obj, **options)
        except ValidationError as error:
            raise spec_error(error, cls.__name__) from None

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send, secrets revealed, unset fields left out."""
        body: dict[str, Any] = self.model_dump(
            mode="json", exclude_none=True, context={"reveal_secrets": True}
        )
        return body


# --- shared schemas (vendor-facts 1.4) --------------------------------------------------------


class RTCSpec(_Schema):
    RoomId: RtcIdStr
    AgentStreamId: RtcIdStr
    AgentUserId: AgentUserIdStr
    UserStreamId: RtcIdStr
    StreamExtraInfo: Annotated[str, _max_bytes(1024)] | None = None


class UpdateRTCSpec(_Schema):
    """UpdateAgentInstance switches the user stream the agent pulls, and nothing else."""

    UserStreamId: RtcIdStr


ZEGO_TEST_KEY = "zego_test"
# The test key works only with these URL/model pairs (seed 002); ZEGO answers 410001047 otherwise.
ZEGO_TEST_MODELS: dict[str, frozenset[str]] = {
    "https://api.minimax.chat/v1/text/chatcompletion_v2": frozenset({"MiniMax-Text-01"}),
    "https://ark.cn-beijing.volces.com/api/v3/chat/completions": frozenset(
        {"doubao-1-5-pro-32k-250115", "doubao-1-5-lite-32k-250115"}
    ),
    "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions": frozenset({"qwen-plus"}),
    "https://api.stepfun.com/v1/chat/completions": frozenset({"step-2-16k"}),
}


class LLMSpec(_Schema):
    Vendor: Literal["OpenAIChat", "OpenAIResponses"] | None = None
    Url: TextStr
    ApiKey: Secret
    Model: TextStr
    SystemPrompt: str | None = None
    Temperature: float | None = Field(default=None, ge=0, le=2)
    TopP: float | None = Field(default=None, ge=0, le=1)
    Params: dict[str, Any] | None = None
    AddAgentInfo: bool | None = None
    AgentExtraInfo: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _zego_test(self) -> Self:
        if self.ApiKey.get_secret_value() != ZEGO_TEST_KEY:
            return self
        models = ZEGO_TEST_MODELS.get(self.Url)
        if models is None:
            raise _At(
                "Url",
                "must be one of ZEGO's test URLs when ApiKey is zego_test: " + ", ".join(ZEGO_TEST_MODELS),
            )
        if self.Model not in models:
            raise _At(
                "Model", "with ApiKey zego_test and this Url must be one of " + ", ".join(sorted(models))
            )
        return self


class TTSParamsSpec(_Schema):
    """``app`` authenticates with the TTS vendor (all values secret); the rest is passed through."""

    model_config = ConfigDict(extra="allow")

    app: dict[str, Secret]


# Required string keys of TTS.Params.app per vendor, and the enums some of them take (seed 002).
# ByteDanceV3 (current docs) documents no app shape beyond appid/token.
TTS_APP_SHAPES: dict[str, tuple[tuple[str, ...], dict[str, frozenset[str]]]] = {
    "Aliyun": (("app_key", "ak_id", "ak_key"), {}),
    "ByteDance": (
        ("appid", "token", "cluster"),
        {"cluster": frozenset({"volcano_tts", "volcano_mega", "volcano_icl"})},
    ),
    "ByteDanceV3": (("appid", "token"), {}),
    "ByteDanceFlowing": (
        ("appid", "token", "resource_id"),
        {
            "resource_id": frozenset(
                {"volc.service_type.10029", "volc.megatts.default", "volc.megatts.concurr"}
            )
        },
    ),
    "MiniMax": (("api_key",), {}),
    "CosyVoice": (("api_key",), {}),
}


class FilterTextSpec(_Schema):
    BeginCharacters: TextStr
    EndCharacters: TextStr


def _character_filter(value: str) -> str:
    if not value or len(value) > 2:
        raise ValueError("each entry must be 1-2 characters")
    return value


class TTSSpec(_Schema):
    Vendor: Literal["Aliyun", "ByteDance", "ByteDanceV3", "ByteDanceFlowing", "MiniMax", "CosyVoice"]
    Params: TTSParamsSpec
    Url: str | None = None
    FilterText: list[FilterTextSpec] | None = None
    TerminatorText: str | None = Field(default=None, max_length=4)
    CharacterFilter: list[Annotated[str, AfterValidator(_character_filter)]] | None = None

    @model_validator(mode="after")
    def _app_shape(self) -> Self:
        required, enums = TTS_APP_SHAPES[self.Vendor]
        app = self.Params.app
        for key in required:
            if key not in app or not app[key].get_secret_value():
                raise _At(f"Params.app.{key}", f"is required for Vendor {self.Vendor}")
        for key, allowed in enums.items():
            if app[key].get_secret_value() not in allowed:
                raise _At(f"Params.app.{key}", f"must be one of {', '.join(sorted(allowed))}")
        if (
            self.Vendor == "ByteDanceFlowing"
            and self.TerminatorText is not None
            and len(self.TerminatorText) > 1
        ):
            raise _At(
                "TerminatorText", "must be a single character for ByteDanceFlowing (bidirectional streaming)"
            )
        return self


PauseMsNum = Annotated[float, Field(ge=200, le=2000)]


class ASRSpec(_Schema):
    Vendor: (
        Literal["Tencent", "AliyunParaformer", "Microsoft", "AliyunFunASR", "AliyunQwenASR", "VolcSeedASR"]
        | None
    ) = None
    Params: dict[str, Any] | None = None
    # Deprecated since v2.12 (moved to VAD), still accepted.
    VADSilenceSegmentation: PauseMsNum | None = None
    PauseInterval: PauseMsNum | None = None
    VADSensitiveLevel: int | None = Field(default=None, ge=0, le=3)
    VADMinSpeechDur: float | None = Field(default=None, ge=0, le=1000)
    VADEnergyThreshold: float | None = Field(default=None, ge=0, le=1)
    HotWord: HotWordStr | None = None


class TurnDetectConfigSpec(_Schema):
    SilenceSegmentation: PauseMsNum | None = None
    PauseInterval: PauseMsNum | None = None


class SensitiveConfigSpec(_Schema):
    Level: int | None = Field(default=None, ge=0, le=3)
    MinSpeechDur: float | None = Field(default=None, ge=0, le=1000)
    EnergyThreshold: float | None = Field(default=None, ge=0, le=1)


class VoiceDetectConfigSpec(_Schema):
    SensitiveConfig: SensitiveConfigSpec | None = None


class VADSpec(_Schema):
    TurnDetectConfig: TurnDetectConfigSpec | None = None
    VoiceDetectConfig: VoiceDetectConfigSpec | None = None
    HotWord: HotWordStr | None = None


class HistoryMessageSpec(_Schema):
    Role: Literal["user", "assistant"]
    Content: str


class ZIMSpec(_Schema):
    RobotId: str | None = None
    LoadMessageCount: int | None = Field(default=None, ge=0, le=500)


class MessageHistorySpec(_Schema):
    SyncMode: Flag | None = None
    Messages: list[HistoryMessageSpec] | None = Field(default=None, max_length=100)
    WindowSize: int | None = Field(default=None, ge=0, le=500)
    ZIM: ZIMSpec | None = None


class CallbackConfigSpec(_Schema):
    ASRResult: Flag | None = None
    LLMResult: Flag | None = None
    Interrupted: Flag | None = None
    UserSpeakAction: Flag | None = None
    AgentSpeakAction: Flag | None = None  # seed 002; replaced by AgentInstanceStatus
    AgentInstanceStatus: Flag | None = None
    UserAudioData: Flag | None = None
    HostTag: str | None = None


class LLMMetaInfoSpec(_Schema):
    BeginCharacters: str | None = None
    EndCharacters: str | None = None
    SendMetaKeys: list[str] | None = None


class AdvancedConfigSpec(_Schema):
    InterruptMode: Flag | None = None
    MaxIdleTime: int | None = Field(default=None, ge=10, le=1800)
    DisableTTS: bool | None = None
    CommunicationMode: Literal[0, 2] | None = None
    LLMMetaInfo: LLMMetaInfoSpec | None = None
    AddASRInfo: bool | None = None
    TTSParamPaths: dict[str, Any] | None = None


class DigitalHumanSpec(_Schema):
    DigitalHumanId: TextStr
    ConfigId: Literal["mobile", "web"] | None = None
    EncodeCode: Literal["H264", "VP8"] | None = None


# --- actions (vendor-facts 1.3) ---------------------------------------------------------------


class ZegoRequest(_Schema):
    """The body of one action; ``ACTION`` is the ``?Action=`` it is sent with."""

    ACTION: ClassVar[str]


class RegisterAgent(ZegoRequest):
    ACTION: ClassVar[str] = "RegisterAgent"
    AgentId: AgentIdStr
    Name: Annotated[str, _max_bytes(256)] | None = None
    LLM: LLMSpec | None = None
    TTS: TTSSpec | None = None
    ASR: ASRSpec | None = None


class UpdateAgent(ZegoRequest):
    """Each of LLM, TTS and ASR replaces the stored object wholesale: send it complete."""

    ACTION: ClassVar[str] = "UpdateAgent"
    AgentId: AgentIdStr
    Name: str | None = Field(default=None, max_length=64)
    LLM: LLMSpec | None = None
    TTS: TTSSpec | None = None
    ASR: ASRSpec | None = None


class CreateAgentInstance(ZegoRequest):
    ACTION: ClassVar[str] = "CreateAgentInstance"
    AgentId: AgentIdStr
    UserId: UserIdStr
    RTC: RTCSpec
    LLM: LLMSpec | None = None
    TTS: TTSSpec | None = None
    ASR: ASRSpec | None = None
    VAD: VADSpec | None = None
    MessageHistory: MessageHistorySpec | None = None
    CallbackConfig: CallbackConfigSpec | None = None
    AdvancedConfig: AdvancedConfigSpec | None = None


class CreateDigitalHumanAgentInstance(CreateAgentInstance):
    ACTION: ClassVar[str] = "CreateDigitalHumanAgentInstance"
    DigitalHuman: DigitalHumanSpec

    @model_validator(mode="after")
    def _speaks(self) -> Self:
        if self.AdvancedConfig is not None and self.AdvancedConfig.DisableTTS:
            raise _At("AdvancedConfig.DisableTTS", "must not be true: a digital human needs TTS")
        return self


# --- the live digital human (CreateLiveDigitalHumanAgentInstance, v2.13.5) --------------------
# A digital human pushing to RTC and/or a CDN, driven only by SendAgentInstanceTTS: no user, so no
# UserId, no user stream, no LLM/ASR/VAD; its MaxIdleTime counts from the last TTS (vendor-facts
# 1.3). Whether ``CDN`` itself is required is not settled by the facts (the docs page speaks of
# RTC "or" a CDN push): it is optional here, and its ``Url`` is required when it is given.


class LiveRTCSpec(_Schema):
    RoomId: RtcIdStr
    AgentStreamId: RtcIdStr
    AgentUserId: AgentUserIdStr
    StreamExtraInfo: Annotated[str, _max_bytes(1024)] | None = None
    # Declared only to be refused with a sentence (CreateLiveDigitalHumanAgentInstance's _shape).
    UserStreamId: Any = None


class CDNSpec(_Schema):
    Url: TextStr


class LiveCallbackConfigSpec(_Schema):
    Interrupted: Flag | None = None
    AgentInstanceStatus: Flag | None = None
    HostTag: str | None = None


LIVE_DEFAULT_MAX_IDLE_S = 900


class LiveAdvancedConfigSpec(_Schema):
    MaxIdleTime: int | None = Field(default=None, ge=30, le=86400)
    DisableTTS: bool | None = None
    TTSParamPaths: dict[str, Any] | None = None


class CreateLiveDigitalHumanAgentInstance(ZegoRequest):
    ACTION: ClassVar[str] = "CreateLiveDigitalHumanAgentInstance"
    AgentId: AgentIdStr
    DigitalHuman: DigitalHumanSpec
    RTC: LiveRTCSpec
    CDN: CDNSpec | None = None
    TTS: TTSSpec | None = None
    CallbackConfig: LiveCallbackConfigSpec | None = None
    AdvancedConfig: LiveAdvancedConfigSpec | None = None

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.RTC.UserStreamId is not None:
            raise _At("RTC.UserStreamId", "is not taken by a live digital human: it pulls no user stream")
        if self.AdvancedConfig is not None and self.AdvancedConfig.DisableTTS:
            raise _At("AdvancedConfig.DisableTTS", "must not be true: a live digital human is driven by TTS")
        return self


class UpdateAgentInstance(ZegoRequest):
    """LLM, TTS and ASR replace the running instance's objects wholesale."""

    ACTION: ClassVar[str] = "UpdateAgentInstance"
    AgentInstanceId: InstanceIdStr
    LLM: LLMSpec | None = None
    TTS: TTSSpec | None = None
    ASR: ASRSpec | None = None
    RTC: UpdateRTCSpec | None = None

    @model_validator(mode="after")
    def _fixed_tts_fields(self) -> Self:
        if self.TTS is not None:
            for name in ("FilterText", "TerminatorText"):
                if getattr(self.TTS, name) is not None:
                    raise _At(f"TTS.{name}", "cannot be changed on a running instance")
        return self


class DeleteAgentInstance(ZegoRequest):
    ACTION: ClassVar[str] = "DeleteAgentInstance"
    AgentInstanceId: InstanceIdStr
    GracefulShutdown: bool | None = None
    GracefulShutdownTimeout: int | None = Field(default=None, ge=1, le=120)


class QueryAgentInstanceStatus(ZegoRequest):
    ACTION: ClassVar[str] = "QueryAgentInstanceStatus"
    AgentInstanceId: InstanceIdStr


class SendAgentInstanceLLM(ZegoRequest):
    ACTION: ClassVar[str] = "SendAgentInstanceLLM"
    AgentInstanceId: InstanceIdStr
    Text: TextStr
    SystemPrompt: str | None = None
    AddQuestionToHistory: bool | None = None
    AddAnswerToHistory: bool | None = None
    Priority: PriorityStr | None = None
    SamePriorityOption: SamePriorityStr | None = None


class SendAgentInstanceTTS(ZegoRequest):
    ACTION: ClassVar[str] = "SendAgentInstanceTTS"
    AgentInstanceId: InstanceIdStr
    Text: Annotated[str, AfterValidator(_nonempty), Field(max_length=300)]
    AddHistory: bool | None = None
    InterruptMode: Flag | None = None  # deprecated by ZEGO, still accepted
    Priority: PriorityStr | None = None
    SamePriorityOption: SamePriorityStr | None = None


class InterruptAgentInstance(ZegoRequest):
    ACTION: ClassVar[str] = "InterruptAgentInstance"
    AgentInstanceId: InstanceIdStr


class GetAgentInstanceMsgList(ZegoRequest):
    ACTION: ClassVar[str] = "GetAgentInstanceMsgList"
    AgentInstanceId: InstanceIdStr


S = TypeVar("S", bound=ZegoRequest)


def coerce(cls: type[S], spec: S | dict[str, Any]) -> S:
    """A validated spec from a spec or a body dict (raising SpecError before anything is sent)."""
    if isinstance(spec, cls):
        return spec
    if isinstance(spec, ZegoRequest):
        raise TypeError(f"expected {cls.__name__}, got {type(spec).__name__}")
    return cls.model_validate(spec)


# --- responses --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedInstance:
    agent_instance_id: str
    request_id: str | None = None


@dataclass(frozen=True)
class CreatedDigitalHumanInstance(CreatedInstance):
    digital_human_config: str = ""

    @property
    def decoded_digital_human_config(self) -> dict[str, Any]:
        """The base64 JSON ZEGO returns for the digital-human SDK, decoded (empty if unreadable)."""
        try:
            decoded = json.loads(base64.b64decode(self.digital_human_config, validate=True))
        except (binascii.Error, ValueError):
            return {}
        return decoded if isinstance(decoded, dict) else {}


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class UserStatus:
    """One row of RTC DescribeUsers: ``status`` 1 means in the room."""

    user_id: str
    status: int
    login_time: int | None = None
    user_role: int | None = None

    @property
    def in_room(self) -> bool:
        return self.status == 1


@dataclass(frozen=True)
class UserCount:
    room_id: str
    user_count: int
    admin_user_count: int = 0
