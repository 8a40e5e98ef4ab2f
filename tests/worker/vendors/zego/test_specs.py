"""Every documented constraint is checked before sending: a clear error naming the field, and no request.

Each row is a constraint a user could break: the field, a bad value, and the field the error must
name. The request goes through the real client towards a running emulator; a counting transport
proves that nothing left the process (and a valid control request proves the counter counts).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import structlog

from emulator import Emulator
from tests.worker.vendors.zego.support import (
    LLM_KEY,
    TTS_TOKEN,
    CountingTransport,
    agent_client,
    create_body,
    digital_human_body,
    llm,
    register_body,
    tts,
    with_value,
)
from worker.vendors.errors import SpecError
from worker.vendors.zego import specs

DROP = ...
HOT_129 = ",".join(f"w{i}|5" for i in range(129))

CREATE_ROWS: list[tuple[str, Any, str]] = [
    # Identifiers: required, byte lengths, character sets (vendor-facts 1.1, 1.4).
    ("AgentId", DROP, "AgentId"),
    ("AgentId", "", "AgentId"),
    ("AgentId", "a" * 129, "AgentId"),
    ("AgentId", "agent/1", "AgentId"),
    ("UserId", DROP, "UserId"),
    ("UserId", "u" * 33, "UserId"),
    ("UserId", "user 1", "UserId"),
    ("UserId", "user.1", "UserId"),
    ("UserId", "用户", "UserId"),
    ("RTC", DROP, "RTC"),
    ("RTC.RoomId", DROP, "RTC.RoomId"),
    ("RTC.RoomId", "r" * 129, "RTC.RoomId"),
    ("RTC.RoomId", "room#1", "RTC.RoomId"),
    ("RTC.AgentStreamId", "s" * 129, "RTC.AgentStreamId"),
    ("RTC.AgentStreamId", "stream 1", "RTC.AgentStreamId"),
    ("RTC.AgentUserId", "a" * 33, "RTC.AgentUserId"),
    ("RTC.AgentUserId", "agent:1", "RTC.AgentUserId"),
    ("RTC.UserStreamId", DROP, "RTC.UserStreamId"),
    ("RTC.UserStreamId", "s*1", "RTC.UserStreamId"),
    ("RTC.StreamExtraInfo", "é" * 513, "RTC.StreamExtraInfo"),
    ("Unknown", 1, "Unknown"),
    # LLM.
    ("LLM.Url", DROP, "LLM.Url"),
    ("LLM.ApiKey", DROP, "LLM.ApiKey"),
    ("LLM.Model", DROP, "LLM.Model"),
    ("LLM.Vendor", "Anthropic", "LLM.Vendor"),
    ("LLM.Temperature", 2.01, "LLM.Temperature"),
    ("LLM.Temperature", -0.1, "LLM.Temperature"),
    ("LLM.TopP", 1.5, "LLM.TopP"),
    ("LLM.TopP", -0.5, "LLM.TopP"),
    ("LLM.Temprature", 0.5, "LLM.Temprature"),
    ("LLM.AddAgentInfo", "often", "LLM.AddAgentInfo"),
    ("LLM.Params", "max_tokens=10", "LLM.Params"),
    ("LLM", llm(ApiKey="zego_test"), "LLM.Url"),
    ("LLM", llm(ApiKey="zego_test", Url="https://api.stepfun.com/v1/chat/completions"), "LLM.Model"),
    # TTS: vendor enum, the app shape per vendor, text filters.
    ("TTS.Vendor", "Google", "TTS.Vendor"),
    ("TTS.Vendor", DROP, "TTS.Vendor"),
    ("TTS.Params", DROP, "TTS.Params"),
    ("TTS.Params.app", DROP, "TTS.Params.app"),
    ("TTS.Params.app.token", DROP, "TTS.Params.app.token"),
    ("TTS.Params.app.cluster", DROP, "TTS.Params.app.cluster"),
    ("TTS.Params.app.cluster", "volcano_x", "TTS.Params.app.cluster"),
    ("TTS", tts("Aliyun", Params={"app": {"app_key": "k", "ak_id": "i"}}), "TTS.Params.app.ak_key"),
    ("TTS", tts("ByteDanceV3", Params={"app": {"appid": "a"}}), "TTS.Params.app.token"),
    (
        "TTS",
        tts("ByteDanceFlowing", Params={"app": {"appid": "a", "token": "t", "resource_id": "x"}}),
        "TTS.Params.app.resource_id",
    ),
    ("TTS", tts("MiniMax", Params={"app": {}}), "TTS.Params.app.api_key"),
    ("TTS", tts("CosyVoice", Params={"app": {"key": "k"}}), "TTS.Params.app.api_key"),
    ("TTS.TerminatorText", "12345", "TTS.TerminatorText"),
    ("TTS", tts("ByteDanceFlowing", TerminatorText="##"), "TTS.TerminatorText"),
    ("TTS.CharacterFilter", ["*", "abc"], "TTS.CharacterFilter[1]"),
    (
        "TTS.FilterText",
        [{"BeginCharacters": "(", "EndCharacters": ")"}, {"BeginCharacters": "["}],
        "TTS.FilterText[1].EndCharacters",
    ),
    # ASR, including the deprecated VAD settings that still live there.
    ("ASR.Vendor", "Google", "ASR.Vendor"),
    ("ASR.VADSilenceSegmentation", 199, "ASR.VADSilenceSegmentation"),
    ("ASR.VADSilenceSegmentation", 2001, "ASR.VADSilenceSegmentation"),
    ("ASR.PauseInterval", 150, "ASR.PauseInterval"),
    ("ASR.PauseInterval", 2500, "ASR.PauseInterval"),
    ("ASR.VADSensitiveLevel", 4, "ASR.VADSensitiveLevel"),
    ("ASR.VADMinSpeechDur", 1001, "ASR.VADMinSpeechDur"),
    ("ASR.VADEnergyThreshold", 1.5, "ASR.VADEnergyThreshold"),
    ("ASR.HotWord", "history", "ASR.HotWord"),
    ("ASR.HotWord", "world history|5", "ASR.HotWord"),
    ("ASR.HotWord", "history|12", "ASR.HotWord"),
    ("ASR.HotWord", "history|-2", "ASR.HotWord"),
    ("ASR.HotWord", "history|high", "ASR.HotWord"),
    ("ASR.HotWord", "h" * 31 + "|5", "ASR.HotWord"),
    ("ASR.HotWord", HOT_129, "ASR.HotWord"),
    # VAD (current home of those settings).
    ("VAD.TurnDetectConfig.SilenceSegmentation", 150, "VAD.TurnDetectConfig.SilenceSegmentation"),
    ("VAD.TurnDetectConfig.SilenceSegmentation", 2001, "VAD.TurnDetectConfig.SilenceSegmentation"),
    ("VAD.TurnDetectConfig.PauseInterval", 2500, "VAD.TurnDetectConfig.PauseInterval"),
    ("VAD.VoiceDetectConfig.SensitiveConfig.Level", 4, "VAD.VoiceDetectConfig.SensitiveConfig.Level"),
    (
        "VAD.VoiceDetectConfig.SensitiveConfig.MinSpeechDur",
        -1,
        "VAD.VoiceDetectConfig.SensitiveConfig.MinSpeechDur",
    ),
    (
        "VAD.VoiceDetectConfig.SensitiveConfig.MinSpeechDur",
        1001,
        "VAD.VoiceDetectConfig.SensitiveConfig.MinSpeechDur",
    ),
    (
        "VAD.VoiceDetectConfig.SensitiveConfig.EnergyThreshold",
        1.1,
        "VAD.VoiceDetectConfig.SensitiveConfig.EnergyThreshold",
    ),
    ("VAD.HotWord", "a|20", "VAD.HotWord"),
    # MessageHistory.
    ("MessageHistory.SyncMode", 2, "MessageHistory.SyncMode"),
    ("MessageHistory.Messages", [{"Role": "user", "Content": "hi"}] * 101, "MessageHistory.Messages"),
    (
        "MessageHistory.Messages",
        [
            {"Role": "user", "Content": "a"},
            {"Role": "assistant", "Content": "b"},
            {"Role": "user", "Content": "c"},
            {"Role": "system", "Content": "d"},
        ],
        "MessageHistory.Messages[3].Role",
    ),
    ("MessageHistory.Messages", [{"Role": "user"}], "MessageHistory.Messages[0].Content"),
    ("MessageHistory.WindowSize", 501, "MessageHistory.WindowSize"),
    ("MessageHistory.WindowSize", -1, "MessageHistory.WindowSize"),
    ("MessageHistory.ZIM.LoadMessageCount", 501, "MessageHistory.ZIM.LoadMessageCount"),
    # CallbackConfig flags are 0/1, including the seed's and the current status flag.
    ("CallbackConfig.ASRResult", 2, "CallbackConfig.ASRResult"),
    ("CallbackConfig.LLMResult", -1, "CallbackConfig.LLMResult"),
    ("CallbackConfig.Interrupted", 3, "CallbackConfig.Interrupted"),
    ("CallbackConfig.UserSpeakAction", 2, "CallbackConfig.UserSpeakAction"),
    ("CallbackConfig.AgentSpeakAction", 2, "CallbackConfig.AgentSpeakAction"),
    ("CallbackConfig.AgentInstanceStatus", 2, "CallbackConfig.AgentInstanceStatus"),
    ("CallbackConfig.UserAudioData", 5, "CallbackConfig.UserAudioData"),
    # AdvancedConfig.
    ("AdvancedConfig.InterruptMode", 2, "AdvancedConfig.InterruptMode"),
    ("AdvancedConfig.MaxIdleTime", 9, "AdvancedConfig.MaxIdleTime"),
    ("AdvancedConfig.MaxIdleTime", 1801, "AdvancedConfig.MaxIdleTime"),
    ("AdvancedConfig.CommunicationMode", 1, "AdvancedConfig.CommunicationMode"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), CREATE_ROWS, ids=[f"{p}={str(v)[:20]}" for p, v, _ in CREATE_ROWS]
)
def test_create_agent_instance_constraint(emulator: Emulator, path: str, value: Any, field: str) -> None:
    """A CreateAgentInstance breaking one documented rule fails naming that field, and nothing is sent."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    with pytest.raises(SpecError) as caught:
        client.create_agent_instance(with_value(create_body(), path, value))
    assert caught.value.field == field, caught.value.errors
    assert field in str(caught.value)
    assert transport.actions == []


DH_ROWS: list[tuple[str, Any, str]] = [
    ("DigitalHuman", DROP, "DigitalHuman"),
    ("DigitalHuman.DigitalHumanId", DROP, "DigitalHuman.DigitalHumanId"),
    ("DigitalHuman.DigitalHumanId", "", "DigitalHuman.DigitalHumanId"),
    ("DigitalHuman.ConfigId", "tablet", "DigitalHuman.ConfigId"),
    ("DigitalHuman.EncodeCode", "H265", "DigitalHuman.EncodeCode"),
    ("AdvancedConfig.DisableTTS", True, "AdvancedConfig.DisableTTS"),
    ("UserId", "u" * 33, "UserId"),
]


@pytest.mark.parametrize(("path", "value", "field"), DH_ROWS, ids=[f"{p}={v}" for p, v, _ in DH_ROWS])
def test_create_digital_human_constraint(emulator: Emulator, path: str, value: Any, field: str) -> None:
    """A digital-human create breaking one rule fails naming the field, and nothing is sent."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    with pytest.raises(SpecError) as caught:
        client.create_digital_human_agent_instance(with_value(digital_human_body(), path, value))
    assert caught.value.field == field, caught.value.errors
    assert transport.actions == []


INSTANCE = "1912122918452641792"
OTHER_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("send_agent_instance_tts", {"AgentInstanceId": INSTANCE, "Text": "x" * 301}, "Text"),
    ("send_agent_instance_tts", {"AgentInstanceId": INSTANCE, "Text": ""}, "Text"),
    (
        "send_agent_instance_tts",
        {"AgentInstanceId": INSTANCE, "Text": "hi", "Priority": "Urgent"},
        "Priority",
    ),
    (
        "send_agent_instance_tts",
        {"AgentInstanceId": INSTANCE, "Text": "hi", "SamePriorityOption": "Replace"},
        "SamePriorityOption",
    ),
    (
        "send_agent_instance_tts",
        {"AgentInstanceId": INSTANCE, "Text": "hi", "InterruptMode": 2},
        "InterruptMode",
    ),
    ("send_agent_instance_llm", {"AgentInstanceId": INSTANCE, "Text": " "}, "Text"),
    ("send_agent_instance_llm", {"AgentInstanceId": INSTANCE, "Text": "hi", "Priority": "low"}, "Priority"),
    (
        "send_agent_instance_llm",
        {"AgentInstanceId": INSTANCE, "Text": "hi", "SamePriorityOption": "Drop"},
        "SamePriorityOption",
    ),
    ("send_agent_instance_llm", {"Text": "hi"}, "AgentInstanceId"),
    (
        "update_agent_instance",
        {"AgentInstanceId": INSTANCE, "TTS": tts(TerminatorText="#")},
        "TTS.TerminatorText",
    ),
    ("update_agent_instance", {"AgentInstanceId": INSTANCE, "TTS": tts(FilterText=[])}, "TTS.FilterText"),
    (
        "update_agent_instance",
        {"AgentInstanceId": INSTANCE, "RTC": {"UserStreamId": "s" * 129}},
        "RTC.UserStreamId",
    ),
    (
        "update_agent_instance",
        {"AgentInstanceId": INSTANCE, "RTC": {"RoomId": "r1", "UserStreamId": "s"}},
        "RTC.RoomId",
    ),
    ("update_agent_instance", {"AgentInstanceId": INSTANCE, "LLM": llm(Temperature=3)}, "LLM.Temperature"),
    ("register_agent", {**register_body(), "Name": "n" * 257}, "Name"),
    ("register_agent", {**register_body(), "AgentId": "a" * 129}, "AgentId"),
    ("register_agent", {**register_body(), "ASR": {"HotWord": "a b|1"}}, "ASR.HotWord"),
    ("update_agent", {**register_body(), "Name": "n" * 65}, "Name"),
]


@pytest.mark.parametrize(("method", "body", "field"), OTHER_ROWS, ids=[f"{m}:{f}" for m, _, f in OTHER_ROWS])
def test_other_action_constraint(emulator: Emulator, method: str, body: dict[str, Any], field: str) -> None:
    """Sends, updates and registrations breaking a rule fail naming the field, and nothing is sent."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    with pytest.raises(SpecError) as caught:
        getattr(client, method)(body)
    assert caught.value.field == field, caught.value.errors
    assert transport.actions == []


@pytest.mark.parametrize("timeout", [0, 121])
def test_graceful_shutdown_timeout_range(emulator: Emulator, timeout: int) -> None:
    """A graceful delete waits 1-120 s at most; other values fail naming the field, and nothing is sent."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    with pytest.raises(SpecError) as caught:
        client.delete_agent_instance(INSTANCE, graceful=True, graceful_timeout=timeout)
    assert caught.value.field == "GracefulShutdownTimeout"
    assert transport.actions == []


def test_all_problems_are_listed_at_once() -> None:
    """A request with several mistakes names all of them in one error, in ZEGO's field paths."""
    body = with_value(
        with_value(create_body(), "LLM.Temperature", 3),
        "MessageHistory.Messages",
        [{"Role": "bot", "Content": "x"}],
    )
    with pytest.raises(SpecError) as caught:
        specs.CreateAgentInstance.model_validate(body)
    fields = [f for f, _ in caught.value.errors]
    assert fields == ["LLM.Temperature", "MessageHistory.Messages[0].Role"]
    assert "less than or equal to 2" in dict(caught.value.errors)["LLM.Temperature"]


# --- both shapes where the seed and the current docs differ, accepted here AND by the emulator ---

BOTH_SHAPES: list[tuple[str, Any]] = [
    ("TTS", tts("ByteDance")),
    ("TTS", tts("ByteDanceV3")),
    ("TTS", tts("Aliyun")),
    ("TTS", tts("ByteDanceFlowing", TerminatorText="#")),
    ("TTS", tts("MiniMax", CharacterFilter=["*", "~~"])),
    ("TTS", tts("CosyVoice", FilterText=[{"BeginCharacters": "(", "EndCharacters": ")"}])),
    (
        "ASR",
        {
            "Vendor": "Tencent",
            "VADSilenceSegmentation": 500,
            "PauseInterval": 800,
            "HotWord": "history|10,physics|11,sport|-1",
        },
    ),
    (
        "VAD",
        {
            "TurnDetectConfig": {"SilenceSegmentation": 200, "PauseInterval": 2000},
            "VoiceDetectConfig": {"SensitiveConfig": {"Level": 3, "MinSpeechDur": 0, "EnergyThreshold": 1}},
        },
    ),
    (
        "MessageHistory",
        {"SyncMode": 1, "WindowSize": 200, "Messages": [{"Role": "user", "Content": "hi"}] * 100},
    ),
    (
        "MessageHistory",
        {"SyncMode": 0, "WindowSize": 500, "ZIM": {"RobotId": "@RBT#1", "LoadMessageCount": 500}},
    ),
    ("CallbackConfig", {"AgentSpeakAction": 1, "ASRResult": 1, "LLMResult": 1}),
    (
        "CallbackConfig",
        {
            "AgentInstanceStatus": 1,
            "Interrupted": 1,
            "UserSpeakAction": 1,
            "UserAudioData": 0,
            "HostTag": "a",
        },
    ),
    ("AdvancedConfig", {"InterruptMode": 1, "MaxIdleTime": 10, "CommunicationMode": 2}),
    ("AdvancedConfig", {"MaxIdleTime": 1800, "CommunicationMode": 0, "TTSParamPaths": {"x": "y"}}),
    (
        "LLM",
        llm(
            ApiKey="zego_test",
            Url="https://api.stepfun.com/v1/chat/completions",
            Model="step-2-16k",
            Temperature=2,
            TopP=0,
        ),
    ),
    (
        "LLM",
        llm(Vendor="OpenAIResponses", Params={"max_tokens": 10}, AgentExtraInfo={"a": 1}, AddAgentInfo=True),
    ),
    ("RTC.StreamExtraInfo", "é" * 512),
    ("UserId", "u" * 32),
]


@pytest.mark.parametrize(
    ("path", "value"), BOTH_SHAPES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(BOTH_SHAPES)]
)
def test_documented_shapes_are_accepted_and_sent(emulator: Emulator, path: str, value: Any) -> None:
    """Valid requests in either documented shape (seed or current) are sent and accepted by ZEGO."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    client.register_agent(register_body())
    created = client.create_agent_instance(with_value(create_body(), path, value))
    assert created.agent_instance_id.isdigit()
    assert transport.actions == ["RegisterAgent", "CreateAgentInstance"]


# --- secrets --------------------------------------------------------------------------------


def test_secrets_absent_from_repr_and_str_but_sent() -> None:
    """Printing a spec hides the LLM key and TTS credentials; the body sent carries them."""
    spec = specs.CreateAgentInstance.model_validate(create_body())
    for text in (repr(spec), str(spec), repr(spec.LLM), repr(spec.TTS)):
        assert LLM_KEY not in text
        assert TTS_TOKEN not in text
    body = spec.to_body()
    assert body["LLM"]["ApiKey"] == LLM_KEY
    assert body["TTS"]["Params"]["app"]["token"] == TTS_TOKEN
    assert body["TTS"]["Params"]["voice_type"] == "v1"


def test_secrets_absent_from_validation_errors() -> None:
    """A failing spec's error (and its traceback chain) never carries the secrets it was given."""
    body = with_value(with_value(create_body(), "LLM.Url", 5), "TTS.Params.app.cluster", "nope")
    body["LLM"]["Model"] = None
    with pytest.raises(SpecError) as caught:
        specs.CreateAgentInstance.model_validate(body)
    error = caught.value
    for text in (str(error), repr(error), repr(error.errors)):
        assert LLM_KEY not in text
        assert TTS_TOKEN not in text
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_secrets_never_reach_the_logs(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    """A whole register/create/delete run logs no LLM key, TTS token, server secret or signature."""
    from tests.emulator_fixture import SERVER_SECRET

    caplog.set_level("DEBUG")
    caplog.set_level("INFO", logger="httpx")  # configure_logging (another test) may have quietened it
    client = agent_client(emulator.zego_agent_url)
    with structlog.testing.capture_logs() as events:
        client.register_agent(register_body())
        instance = client.create_agent_instance(create_body()).agent_instance_id
        client.delete_agent_instance(instance)
    calls = [e for e in events if e["event"] == "zego_api_call"]
    assert [e["action"] for e in calls] == ["RegisterAgent", "CreateAgentInstance", "DeleteAgentInstance"]
    assert all({"code", "request_id", "duration_ms", "attempt"} <= set(e) for e in calls)
    everything = repr(events) + caplog.text
    for secret in (LLM_KEY, TTS_TOKEN, SERVER_SECRET):
        assert secret not in everything
    assert "Signature=***" in caplog.text  # httpx's own request line, redacted
    assert not re.search(r"Signature=[0-9a-f]{32}", everything)
