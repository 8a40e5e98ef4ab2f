"""Body validation for the AI Agent actions: ``410000003`` naming the field, as ZEGO does.

Every constraint here is one that ZEGO documents (vendor-facts 1.3/1.4 and seed 002); where the
seed (older) and the current docs differ, both shapes are accepted (TTS vendor ``ByteDance`` and
``ByteDanceV3``, VAD settings under ``ASR`` and under ``VAD``, ``WindowSize`` up to 500,
``CallbackConfig.AgentSpeakAction``). Where they differ in strictness, the stricter reading is
kept (``LLM.ApiKey`` required when ``LLM`` is given; ``cluster`` required for ByteDance), so code
that passes here passes against the vendor. Unknown fields are ignored, like the vendor's JSON
decoder does. Values typed ``integer`` must be JSON integers; ``number`` accepts both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from emulator.zego_gateway import ZegoError

INVALID = 410000003
ZEGO_TEST_URLS = frozenset(
    {
        "https://api.minimax.chat/v1/text/chatcompletion_v2",
        "https://ark.cn-beijing.volces.com/api/v3/chat/completions",
        "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
        "https://api.stepfun.com/v1/chat/completions",
    }
)
USER_ID = re.compile(r"[0-9A-Za-z_-]+")
RTC_ID = re.compile(r"[0-9A-Za-z_.-]+")
AGENT_ID = re.compile(r"[0-9A-Za-z!#$%&()+\-:;\\<=.>?@\[\]^_ {}|~,]+")
TTS_APP_SHAPES: dict[str, tuple[tuple[str, ...], dict[str, frozenset[str]]]] = {
    # vendor: (required string keys of Params.app, enums of some of them)
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
ASR_VENDORS = frozenset(
    {"Tencent", "AliyunParaformer", "Microsoft", "AliyunFunASR", "AliyunQwenASR", "VolcSeedASR"}
)
CALLBACK_FLAGS = (
    "ASRResult",
    "LLMResult",
    "Interrupted",
    "UserSpeakAction",
    "AgentInstanceStatus",
    "UserAudioData",
    "AgentSpeakAction",
)


def invalid(path: str, reason: str) -> ZegoError:
    return ZegoError(INVALID, f"invalid parameter: {path} {reason}")


class Obj:
    """A JSON object at ``path`` with typed getters that raise 410000003 naming the field."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def present(self, key: str) -> bool:
        return self.data.get(key) is not None

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        max_len: int | None = None,
        max_bytes: int | None = None,
        pattern: re.Pattern[str] | None = None,
        choices: frozenset[str] | None = None,
        nonempty: bool = False,
    ) -> str | None:
        value = self.data.get(key)
        if value is None or (required and value == ""):
            if required:
                raise invalid(self.name(key), "is required")
            return None
        if not isinstance(value, str):
            raise invalid(self.name(key), "must be a string")
        if nonempty and not value:
            raise invalid(self.name(key), "must not be empty")
        if max_len is not None and len(value) > max_len:
            raise invalid(self.name(key), f"must be at most {max_len} characters")
        if max_bytes is not None and len(value.encode()) > max_bytes:
            raise invalid(self.name(key), f"must be at most {max_bytes} bytes")
        if pattern is not None and value and not pattern.fullmatch(value):
            raise invalid(self.name(key), "contains characters that are not allowed")
        if choices is not None and value not in choices:
            raise invalid(self.name(key), f"must be one of {', '.join(sorted(choices))}")
        return value

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        lo: int | None = None,
        hi: int | None = None,
        choices: frozenset[int] | None = None,
    ) -> int | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise invalid(self.name(key), "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self.name(key), "must be an integer")
        self._bounds(key, value, lo, hi)
        if choices is not None and value not in choices:
            raise invalid(self.name(key), f"must be one of {', '.join(map(str, sorted(choices)))}")
        return value

    def number(self, key: str, *, lo: float, hi: float) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(self.name(key), "must be a number")
        self._bounds(key, value, lo, hi)
        return float(value)

    def _bounds(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise invalid(self.name(key), f"must be within [{_fmt(lo)}, {_fmt(hi)}]")

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise invalid(self.name(key), "must be a boolean")
        return value

    def obj(self, key: str, *, required: bool = False) -> Obj | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise invalid(self.name(key), "is required")
            return None
        if not isinstance(value, dict):
            raise invalid(self.name(key), "must be an object")
        return Obj(value, self.name(key))

    def need(self, key: str) -> Obj:
        """A required object."""
        found = self.obj(key, required=True)
        assert found is not None
        return found

    def array(self, key: str, *, required: bool = False, max_items: int | None = None) -> list[Any] | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise invalid(self.name(key), "is required")
            return None
        if not isinstance(value, list):
            raise invalid(self.name(key), "must be an array")
        if required and not value:
            raise invalid(self.name(key), "must not be empty")
        if max_items is not None and len(value) > max_items:
            raise invalid(self.name(key), f"must have at most {max_items} items")
        return value

    def objects(self, key: str, *, max_items: int | None = None) -> list[Obj]:
        items = self.array(key, max_items=max_items) or []
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise invalid(f"{self.name(key)}[{i}]", "must be an object")
            out.append(Obj(item, f"{self.name(key)}[{i}]"))
        return out


def _fmt(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else str(value))


# --- shared schemas ---------------------------------------------------------------------------


def agent_id(body: Obj) -> None:
    body.string("AgentId", required=True, max_bytes=128, pattern=AGENT_ID)


def instance_id(body: Obj) -> None:
    body.string("AgentInstanceId", required=True)


def rtc(body: Obj) -> None:
    r = body.need("RTC")
    for key, limit in (("RoomId", 128), ("AgentStreamId", 128), ("AgentUserId", 32), ("UserStreamId", 128)):
        r.string(key, required=True, max_len=limit, pattern=RTC_ID)
    r.string("StreamExtraInfo", max_bytes=1024)


def llm(parent: Obj) -> None:
    o = parent.obj("LLM")
    if o is None:
        return
    url = o.string("Url", required=True)
    api_key = o.string("ApiKey", required=True)
    o.string("Model", required=True)
    o.string("Vendor", choices=frozenset({"OpenAIChat", "OpenAIResponses"}))
    o.string("SystemPrompt")
    o.number("Temperature", lo=0, hi=2)
    o.number("TopP", lo=0, hi=1)
    o.obj("Params")
    o.boolean("AddAgentInfo")
    o.obj("AgentExtraInfo")
    if api_key == "zego_test" and url not in ZEGO_TEST_URLS:
        raise ZegoError(410001047, "LLM.ApiKey is zego_test but LLM.Url is not an allowed test url")


def tts(parent: Obj, *, updating: bool = False) -> None:
    o = parent.obj("TTS")
    if o is None:
        return
    vendor = o.string("Vendor", required=True, choices=frozenset(TTS_APP_SHAPES)) or ""
    app = o.need("Params").need("app")
    keys, enums = TTS_APP_SHAPES[vendor]
    for key in keys:
        app.string(key, required=True, choices=enums.get(key))
    if vendor == "MiniMax":
        app.string("group_id")
    o.string("Url")
    if updating:
        for key in ("FilterText", "TerminatorText"):
            if o.present(key):
                raise invalid(o.name(key), "cannot be updated")
    for item in o.objects("FilterText"):
        item.string("BeginCharacters", required=True)
        item.string("EndCharacters", required=True)
    o.string("TerminatorText", max_len=4)
    for i, entry in enumerate(o.array("CharacterFilter") or []):
        if not isinstance(entry, str) or len(entry) > 2:
            raise invalid(f"{o.name('CharacterFilter')}[{i}]", "must be a string of at most 2 characters")


def hot_words(o: Obj, key: str) -> None:
    value = o.string(key)
    if not value:
        return
    entries = value.split(",")
    if len(entries) > 128:
        raise invalid(o.name(key), "must have at most 128 words")
    for entry in entries:
        word, sep, weight = entry.partition("|")
        if not sep or not word or len(word) > 30 or any(c.isspace() for c in word):
            raise invalid(o.name(key), "must be word|weight,... with words of 1-30 characters and no spaces")
        if not re.fullmatch(r"-?\d+", weight) or not -1 <= int(weight) <= 11:
            raise invalid(o.name(key), "weights must be integers within [-1, 11]")


def asr(parent: Obj) -> None:
    o = parent.obj("ASR")
    if o is None:
        return
    o.string("Vendor", choices=ASR_VENDORS)
    o.obj("Params")
    # Deprecated since v2.12 (moved to VAD) but still accepted.
    o.number("VADSilenceSegmentation", lo=200, hi=2000)
    o.number("PauseInterval", lo=200, hi=2000)
    o.integer("VADSensitiveLevel", lo=0, hi=3)
    o.number("VADMinSpeechDur", lo=0, hi=1000)
    o.number("VADEnergyThreshold", lo=0, hi=1)
    hot_words(o, "HotWord")


def vad(parent: Obj) -> None:
    o = parent.obj("VAD")
    if o is None:
        return
    turn = o.obj("TurnDetectConfig")
    if turn is not None:
        turn.number("SilenceSegmentation", lo=200, hi=2000)
        turn.number("PauseInterval", lo=200, hi=2000)
    voice = o.obj("VoiceDetectConfig")
    sensitive = voice.obj("SensitiveConfig") if voice is not None else None
    if sensitive is not None:
        sensitive.integer("Level", lo=0, hi=3)
        sensitive.number("MinSpeechDur", lo=0, hi=1000)
        sensitive.number("EnergyThreshold", lo=0, hi=1)
    hot_words(o, "HotWord")


def message_history(parent: Obj) -> None:
    o = parent.obj("MessageHistory")
    if o is None:
        return
    o.integer("SyncMode", choices=frozenset({0, 1}))
    for m in o.objects("Messages", max_items=100):
        m.string("Role", required=True, choices=frozenset({"user", "assistant"}))
        m.string("Content", required=True)
    o.integer("WindowSize", lo=0, hi=500)
    zim = o.obj("ZIM")
    if zim is not None:
        zim.string("RobotId")
        zim.integer("LoadMessageCount", lo=0, hi=500)


def callback_config(parent: Obj) -> None:
    o = parent.obj("CallbackConfig")
    if o is None:
        return
    for flag in CALLBACK_FLAGS:
        o.integer(flag, choices=frozenset({0, 1}))
    o.string("HostTag")


def advanced_config(parent: Obj) -> None:
    o = parent.obj("AdvancedConfig")
    if o is None:
        return
    o.integer("InterruptMode", choices=frozenset({0, 1}))
    o.integer("MaxIdleTime", lo=10, hi=1800)
    o.boolean("DisableTTS")
    o.integer("CommunicationMode", choices=frozenset({0, 2}))
    o.boolean("AddASRInfo")
    o.obj("TTSParamPaths")
    meta = o.obj("LLMMetaInfo")
    if meta is not None:
        meta.string("BeginCharacters")
        meta.string("EndCharacters")
        for i, key in enumerate(meta.array("SendMetaKeys") or []):
            if not isinstance(key, str):
                raise invalid(f"{meta.name('SendMetaKeys')}[{i}]", "must be a string")


def digital_human(body: Obj) -> None:
    o = body.need("DigitalHuman")
    o.string("DigitalHumanId", required=True)
    o.string("ConfigId", choices=frozenset({"mobile", "web"}))
    o.string("EncodeCode", choices=frozenset({"H264", "VP8"}))


PRIORITY = frozenset({"Low", "Medium", "High"})
SAME_PRIORITY = frozenset({"ClearAndInterrupt", "Enqueue"})


# --- actions ----------------------------------------------------------------------------------


def _register(body: Obj) -> None:
    agent_id(body)
    body.string("Name", max_bytes=256)
    llm(body)
    tts(body)
    asr(body)


def _update_agent(body: Obj) -> None:
    agent_id(body)
    body.string("Name", max_len=64)
    llm(body)
    tts(body)
    asr(body)


def _list_agents(body: Obj) -> None:
    body.integer("Limit", lo=0, hi=10)
    body.string("Cursor")


def _query_agents(body: Obj) -> None:
    ids = body.array("AgentIds", required=True, max_items=10)
    for i, value in enumerate(ids or []):
        if not isinstance(value, str):
            raise invalid(f"AgentIds[{i}]", "must be a string")


def _create(body: Obj) -> None:
    agent_id(body)
    body.string("UserId", required=True, max_len=32, pattern=USER_ID)
    rtc(body)
    llm(body)
    tts(body)
    asr(body)
    vad(body)
    message_history(body)
    callback_config(body)
    advanced_config(body)


def _create_digital_human(body: Obj) -> None:
    _create(body)
    digital_human(body)
    advanced = body.obj("AdvancedConfig")
    if advanced is not None and advanced.boolean("DisableTTS"):
        raise invalid("AdvancedConfig.DisableTTS", "must not be true for a digital human")


LIVE_CALLBACK_FLAGS = ("Interrupted", "AgentInstanceStatus")


def _create_live_digital_human(body: Obj) -> None:
    """CreateLiveDigitalHumanAgentInstance (v2.13.5): no UserId and no user stream, a CDN push
    (``CDN.Url`` required when ``CDN`` is given; whether ``CDN`` itself is required is not in the
    facts), TTS only, MaxIdleTime in [30, 86400] counted from the last TTS."""
    agent_id(body)
    digital_human(body)
    r = body.need("RTC")
    for key, limit in (("RoomId", 128), ("AgentStreamId", 128), ("AgentUserId", 32)):
        r.string(key, required=True, max_len=limit, pattern=RTC_ID)
    r.string("StreamExtraInfo", max_bytes=1024)
    if "UserStreamId" in r.data:
        raise invalid("RTC.UserStreamId", "is not supported by a live digital human")
    cdn = body.obj("CDN")
    if cdn is not None:
        cdn.string("Url", required=True)
    tts(body)
    callbacks = body.obj("CallbackConfig")
    if callbacks is not None:
        for flag in LIVE_CALLBACK_FLAGS:
            callbacks.integer(flag, choices=frozenset({0, 1}))
        callbacks.string("HostTag")
    advanced = body.obj("AdvancedConfig")
    if advanced is not None:
        advanced.integer("MaxIdleTime", lo=30, hi=86400)
        if advanced.boolean("DisableTTS"):
            raise invalid("AdvancedConfig.DisableTTS", "must not be true for a live digital human")
        advanced.obj("TTSParamPaths")


def _update_instance(body: Obj) -> None:
    instance_id(body)
    llm(body)
    tts(body, updating=True)
    asr(body)
    r = body.obj("RTC")
    if r is not None:
        r.string("UserStreamId", max_len=128, pattern=RTC_ID)


def _delete(body: Obj) -> None:
    instance_id(body)
    body.boolean("GracefulShutdown")
    body.integer("GracefulShutdownTimeout", lo=1, hi=120)


def _send_llm(body: Obj) -> None:
    instance_id(body)
    body.string("Text", required=True)
    body.string("SystemPrompt")
    body.boolean("AddQuestionToHistory")
    body.boolean("AddAnswerToHistory")
    body.string("Priority", choices=PRIORITY)
    body.string("SamePriorityOption", choices=SAME_PRIORITY)


def _send_tts(body: Obj) -> None:
    instance_id(body)
    body.string("Text", required=True, max_len=300)
    body.boolean("AddHistory")
    body.integer("InterruptMode", choices=frozenset({0, 1}))
    body.string("Priority", choices=PRIORITY)
    body.string("SamePriorityOption", choices=SAME_PRIORITY)


def _listening(body: Obj) -> None:
    instance_id(body)
    body.string("UserId", max_len=32, pattern=USER_ID)
    body.integer("Sequence")


def _add_messages(body: Obj) -> None:
    instance_id(body)
    items = body.objects("Messages")
    if not items:
        raise invalid("Messages", "is required")
    for m in items:
        m.string("Role", required=True, choices=frozenset({"user", "assistant"}))
        m.string("Content", required=True)


VALIDATORS: dict[str, Callable[[Obj], None]] = {
    "RegisterAgent": _register,
    "UpdateAgent": _update_agent,
    "UnregisterAgent": agent_id,
    "ListAgents": _list_agents,
    "QueryAgents": _query_agents,
    "CreateAgentInstance": _create,
    "CreateDigitalHumanAgentInstance": _create_digital_human,
    "CreateLiveDigitalHumanAgentInstance": _create_live_digital_human,
    "UpdateAgentInstance": _update_instance,
    "DeleteAgentInstance": _delete,
    "QueryAgentInstanceStatus": instance_id,
    "SendAgentInstanceLLM": _send_llm,
    "SendAgentInstanceTTS": _send_tts,
    "InterruptAgentInstance": instance_id,
    "GetAgentInstanceMsgList": instance_id,
    "AddAgentInstanceMsg": _add_messages,
    "ResetAgentInstanceMsgList": instance_id,
    "StartListening": _listening,
    "StopListening": _listening,
}


def validate(action: str, body: Mapping[str, Any]) -> None:
    """Raise ``ZegoError(410000003, ...)`` (or 410001047) for the first broken constraint."""
    VALIDATORS[action](Obj(body))
