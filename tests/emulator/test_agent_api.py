"""The AI Agent actions: body validation naming the field, the agent registry, instance actions."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from tests.emulator_fixture import ZegoApi, instance_body, llm, register_agent, tts, wait_for


@pytest.fixture
def api(emulator: Emulator) -> ZegoApi:
    api = ZegoApi(emulator.zego_agent_url)
    register_agent(api)
    return api


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value

    return apply


_DELETE = object()
TTS_ALIYUN = {"Vendor": "Aliyun", "Params": {"app": {"app_key": "k", "ak_id": "i"}}}

# (change to a valid CreateAgentInstance body, the field the error must name)
CREATE_CASES = [
    ("AgentId", _set("AgentId", _DELETE)),
    ("AgentId", _set("AgentId", "a" * 129)),
    ("AgentId", _set("AgentId", "agent/1")),
    ("UserId", _set("UserId", _DELETE)),
    ("UserId", _set("UserId", "u" * 33)),
    ("UserId", _set("UserId", "user.1")),
    ("RTC", _set("RTC", _DELETE)),
    ("RTC.RoomId", _set("RTC.RoomId", _DELETE)),
    ("RTC.RoomId", _set("RTC.RoomId", "r" * 129)),
    ("RTC.RoomId", _set("RTC.RoomId", "room 1")),
    ("RTC.AgentStreamId", _set("RTC.AgentStreamId", "s" * 129)),
    ("RTC.AgentUserId", _set("RTC.AgentUserId", "a" * 33)),
    ("RTC.UserStreamId", _set("RTC.UserStreamId", _DELETE)),
    ("LLM.Url", _set("LLM", {"ApiKey": "k", "Model": "m"})),
    ("LLM.ApiKey", _set("LLM", {"Url": "https://x", "Model": "m"})),
    ("LLM.Model", _set("LLM", {"Url": "https://x", "ApiKey": "k"})),
    ("LLM.Temperature", _set("LLM", llm(Temperature=2.1))),
    ("LLM.Temperature", _set("LLM", llm(Temperature=-0.1))),
    ("LLM.TopP", _set("LLM", llm(TopP=1.5))),
    ("LLM.Vendor", _set("LLM", llm(Vendor="Anthropic"))),
    ("TTS.Vendor", _set("TTS", tts(Vendor="Polly"))),
    ("TTS.Params", _set("TTS", {"Vendor": "MiniMax"})),
    ("TTS.Params.app", _set("TTS", {"Vendor": "MiniMax", "Params": {"voice": "x"}})),
    ("TTS.Params.app.ak_key", _set("TTS", TTS_ALIYUN)),
    ("TTS.Params.app.cluster", _set("TTS", tts(Params={"app": {"appid": "a", "token": "t", "cluster": "x"}}))),
    ("TTS.Params.app.resource_id", _set("TTS", {"Vendor": "ByteDanceFlowing", "Params": {"app": {"appid": "a", "token": "t", "resource_id": "nope"}}})),
    ("TTS.Params.app.api_key", _set("TTS", {"Vendor": "CosyVoice", "Params": {"app": {}}})),
    ("TTS.TerminatorText", _set("TTS", tts(TerminatorText="12345"))),
    ("TTS.CharacterFilter[1]", _set("TTS", tts(CharacterFilter=["*", "###"]))),
    ("TTS.FilterText[0].EndCharacters", _set("TTS", tts(FilterText=[{"BeginCharacters": "("}]))),
    ("ASR.Vendor", _set("ASR", {"Vendor": "Whisper"})),
    ("ASR.VADSilenceSegmentation", _set("ASR", {"VADSilenceSegmentation": 100})),
    ("ASR.PauseInterval", _set("ASR", {"PauseInterval": 2500})),
    ("ASR.HotWord", _set("ASR", {"HotWord": "hello world|5"})),
    ("ASR.HotWord", _set("ASR", {"HotWord": "hello|12"})),
    ("ASR.HotWord", _set("ASR", {"HotWord": "x" * 31 + "|1"})),
    ("ASR.HotWord", _set("ASR", {"HotWord": ",".join(f"w{i}|1" for i in range(129))})),
    ("ASR.HotWord", _set("ASR", {"HotWord": "hello"})),
    ("VAD.TurnDetectConfig.SilenceSegmentation", _set("VAD", {"TurnDetectConfig": {"SilenceSegmentation": 199}})),
    ("VAD.TurnDetectConfig.PauseInterval", _set("VAD", {"TurnDetectConfig": {"PauseInterval": 2001}})),
    ("VAD.VoiceDetectConfig.SensitiveConfig.Level", _set("VAD", {"VoiceDetectConfig": {"SensitiveConfig": {"Level": 4}}})),
    ("VAD.VoiceDetectConfig.SensitiveConfig.MinSpeechDur", _set("VAD", {"VoiceDetectConfig": {"SensitiveConfig": {"MinSpeechDur": 1001}}})),
    ("VAD.VoiceDetectConfig.SensitiveConfig.EnergyThreshold", _set("VAD", {"VoiceDetectConfig": {"SensitiveConfig": {"EnergyThreshold": 1.5}}})),
    ("MessageHistory.SyncMode", _set("MessageHistory", {"SyncMode": 2})),
    ("MessageHistory.Messages", _set("MessageHistory", {"Messages": [{"Role": "user", "Content": "x"}] * 101})),
    ("MessageHistory.Messages[0].Role", _set("MessageHistory", {"Messages": [{"Role": "system", "Content": "x"}]})),
    ("MessageHistory.WindowSize", _set("MessageHistory", {"WindowSize": 501})),
    ("MessageHistory.ZIM.LoadMessageCount", _set("MessageHistory", {"ZIM": {"LoadMessageCount": 501}})),
    ("CallbackConfig.ASRResult", _set("CallbackConfig", {"ASRResult": 2})),
    ("CallbackConfig.AgentSpeakAction", _set("CallbackConfig", {"AgentSpeakAction": True})),
    ("AdvancedConfig.InterruptMode", _set("AdvancedConfig", {"InterruptMode": 2})),
    ("AdvancedConfig.MaxIdleTime", _set("AdvancedConfig", {"MaxIdleTime": 9})),
    ("AdvancedConfig.MaxIdleTime", _set("AdvancedConfig", {"MaxIdleTime": 1801})),
    ("AdvancedConfig.CommunicationMode", _set("AdvancedConfig", {"CommunicationMode": 1})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "change"), CREATE_CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CREATE_CASES)]
)
def test_create_validation_names_the_field(
    api: ZegoApi, field: str, change: Callable[[dict[str, Any]], None]
) -> None:
    """A broken field of CreateAgentInstance answers 410000003 with that field in the message."""
    body = instance_body()
    change(body)
    result = api.post("CreateAgentInstance", body)
    assert result["Code"] == 410000003, result
    assert result["Message"].startswith(f"invalid parameter: {field} "), result["Message"]


def test_old_and_new_shapes_are_both_accepted(api: ZegoApi) -> None:
    """Seed-era and current shapes pass: ByteDance/ByteDanceV3, VAD under ASR or VAD, WindowSize 500."""
    body = instance_body(
        TTS={"Vendor": "ByteDanceV3", "Params": {"app": {"appid": "a", "token": "t"}}},
        ASR={"VADSilenceSegmentation": 500, "PauseInterval": 800, "HotWord": "历史类|10,物理类|-1"},
        VAD={"TurnDetectConfig": {"SilenceSegmentation": 200, "PauseInterval": 2000}},
        MessageHistory={"SyncMode": 1, "Messages": [{"Role": "user", "Content": "hi"}], "WindowSize": 500},
        CallbackConfig={"ASRResult": 1, "AgentSpeakAction": 1, "AgentInstanceStatus": 1, "HostTag": "a"},
        AdvancedConfig={"InterruptMode": 1, "MaxIdleTime": 10, "CommunicationMode": 2},
        LLM=llm(Temperature=2, TopP=0),
    )
    assert api.post("CreateAgentInstance", body)["Code"] == 0


def test_zego_test_key_needs_a_whitelisted_url(api: ZegoApi) -> None:
    """LLM.ApiKey "zego_test" with another Url is refused with 410001047; a whitelisted Url passes."""
    bad = instance_body(LLM=llm(ApiKey="zego_test"))
    assert api.post("CreateAgentInstance", bad)["Code"] == 410001047
    good = instance_body(
        LLM=llm(ApiKey="zego_test", Url="https://ark.cn-beijing.volces.com/api/v3/chat/completions")
    )
    assert api.post("CreateAgentInstance", good)["Code"] == 0


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("RegisterAgent", {"Name": "x"}, "AgentId"),
        ("RegisterAgent", {"AgentId": "a", "Name": "n" * 257}, "Name"),
        ("UpdateAgent", {"AgentId": "agent_1", "Name": "n" * 65}, "Name"),
        ("ListAgents", {"Limit": 11}, "Limit"),
        ("ListAgents", {"Limit": -1}, "Limit"),
        ("QueryAgents", {"AgentIds": [f"a{i}" for i in range(11)]}, "AgentIds"),
        ("QueryAgents", {}, "AgentIds"),
        ("DeleteAgentInstance", {}, "AgentInstanceId"),
        ("DeleteAgentInstance", {"AgentInstanceId": "1", "GracefulShutdownTimeout": 121}, "GracefulShutdownTimeout"),
        ("DeleteAgentInstance", {"AgentInstanceId": "1", "GracefulShutdownTimeout": 0}, "GracefulShutdownTimeout"),
        ("SendAgentInstanceTTS", {"AgentInstanceId": "1", "Text": "x" * 301}, "Text"),
        ("SendAgentInstanceTTS", {"AgentInstanceId": "1", "Text": "hi", "Priority": "Urgent"}, "Priority"),
        ("SendAgentInstanceLLM", {"AgentInstanceId": "1"}, "Text"),
        ("SendAgentInstanceLLM", {"AgentInstanceId": "1", "Text": "hi", "SamePriorityOption": "Drop"}, "SamePriorityOption"),
        ("UpdateAgentInstance", {"AgentInstanceId": "1", "TTS": tts(TerminatorText="#")}, "TTS.TerminatorText"),
        ("UpdateAgentInstance", {"AgentInstanceId": "1", "RTC": {"UserStreamId": "s" * 129}}, "RTC.UserStreamId"),
        ("StartListening", {"AgentInstanceId": "1", "Sequence": "1"}, "Sequence"),
        ("QueryAgentInstanceStatus", {}, "AgentInstanceId"),
    ],
)  # fmt: skip
def test_other_actions_validate_their_fields(
    api: ZegoApi, action: str, body: dict[str, Any], field: str
) -> None:
    """Every action names the broken field of its body with 410000003."""
    result = api.post(action, body)
    assert result["Code"] == 410000003, result
    assert result["Message"].startswith(f"invalid parameter: {field} "), result["Message"]


def test_register_twice_and_unknown_agents(api: ZegoApi) -> None:
    """Registering an AgentId twice gives 410001008; using an unregistered one gives 410001009."""
    assert api.post("RegisterAgent", {"AgentId": "agent_1"})["Code"] == 410001008
    assert api.post("UpdateAgent", {"AgentId": "ghost"})["Code"] == 410001009
    assert api.post("UnregisterAgent", {"AgentId": "ghost"})["Code"] == 410001009
    assert api.post("CreateAgentInstance", instance_body(AgentId="ghost"))["Code"] == 410001009
    assert api.post("UnregisterAgent", {"AgentId": "agent_1"})["Code"] == 0
    assert api.post("CreateAgentInstance", instance_body())["Code"] == 410001009


def test_update_agent_replaces_objects_wholesale(api: ZegoApi) -> None:
    """UpdateAgent's LLM replaces the stored LLM (no merge); QueryAgents shows it."""
    assert api.post("UpdateAgent", {"AgentId": "agent_1", "LLM": llm(Model="m2")})["Code"] == 0
    agents = api.post("QueryAgents", {"AgentIds": ["agent_1", "ghost"]})["Data"]["Agents"]
    assert [a["AgentId"] for a in agents] == ["agent_1"], "unknown ids are left out"
    assert agents[0]["LLM"] == llm(Model="m2")


def test_list_agents_pages_with_a_cursor(emulator_factory: Callable[..., Emulator]) -> None:
    """ListAgents returns 5 by default, at most 10, and a Cursor until the list is finished."""
    api = ZegoApi(emulator_factory(rate_limits=False).zego_agent_url)
    for i in range(23):
        assert api.post("RegisterAgent", {"AgentId": f"agent_{i}"})["Code"] == 0
    first = api.post("ListAgents", {})["Data"]
    assert first["Total"] == 23
    assert len(first["Agents"]) == 5
    assert first["Cursor"]
    seen = [a["AgentId"] for a in first["Agents"]]
    cursor = first["Cursor"]
    while cursor:
        page = api.post("ListAgents", {"Limit": 10, "Cursor": cursor})["Data"]
        assert len(page["Agents"]) <= 10
        seen += [a["AgentId"] for a in page["Agents"]]
        cursor = page["Cursor"]
    assert len(seen) == len(set(seen)) == first["Total"]


def test_digital_human_config_is_base64_json(api: ZegoApi) -> None:
    """CreateDigitalHumanAgentInstance returns a DigitalHumanConfig that decodes to the streams."""
    body = instance_body(DigitalHuman={"DigitalHumanId": "dh-1", "ConfigId": "mobile"})
    data = api.post("CreateDigitalHumanAgentInstance", body)["Data"]
    assert len(data["AgentInstanceId"]) == 19
    decoded = json.loads(base64.b64decode(data["DigitalHumanConfig"]))
    assert decoded == {
        "DigitalHumanId": "dh-1",
        "Streams": [
            {"RoomId": "room_1", "StreamId": "agent_stream_1", "EncodeCode": "H264", "ConfigId": "mobile"}
        ],
    }


@pytest.mark.parametrize(
    ("digital_human", "field"),
    [({}, "DigitalHuman.DigitalHumanId"), ({"DigitalHumanId": "d", "ConfigId": "tv"}, "DigitalHuman.ConfigId"),
     ({"DigitalHumanId": "d", "EncodeCode": "AV1"}, "DigitalHuman.EncodeCode")],
)  # fmt: skip
def test_digital_human_fields(api: ZegoApi, digital_human: dict[str, Any], field: str) -> None:
    """DigitalHuman needs a DigitalHumanId and takes only the documented ConfigId and EncodeCode."""
    result = api.post("CreateDigitalHumanAgentInstance", instance_body(DigitalHuman=digital_human))
    assert result["Code"] == 410000003
    assert field in result["Message"]
    missing = api.post("CreateDigitalHumanAgentInstance", instance_body())
    assert missing["Message"].startswith("invalid parameter: DigitalHuman ")


def test_disable_tts_blocks_digital_humans_and_send_tts(api: ZegoApi) -> None:
    """AdvancedConfig.DisableTTS makes CreateDigitalHumanAgentInstance and SendAgentInstanceTTS fail."""
    dh = instance_body(DigitalHuman={"DigitalHumanId": "d"}, AdvancedConfig={"DisableTTS": True})
    result = api.post("CreateDigitalHumanAgentInstance", dh)
    assert result["Code"] == 410000003
    assert "AdvancedConfig.DisableTTS" in result["Message"]
    created = api.post("CreateAgentInstance", instance_body(AdvancedConfig={"DisableTTS": True}))
    instance_id = created["Data"]["AgentInstanceId"]
    tts_result = api.post("SendAgentInstanceTTS", {"AgentInstanceId": instance_id, "Text": "hi"})
    assert tts_result["Code"] == 410000003
    assert "AdvancedConfig.DisableTTS" in tts_result["Message"]


def test_status_is_a_string_and_rounds_rise(api: ZegoApi, emulator: Emulator) -> None:
    """A new instance is IDLE; SendAgentInstanceLLM/TTS return Rounds that rise but skip numbers."""
    instance_id = api.post("CreateAgentInstance", instance_body())["Data"]["AgentInstanceId"]
    status = api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Data"]
    assert status == {"Status": "IDLE"}
    first = api.post("SendAgentInstanceTTS", {"AgentInstanceId": instance_id, "Text": "Hello there."})
    second = api.post("SendAgentInstanceLLM", {"AgentInstanceId": instance_id, "Text": "Tell a joke"})
    assert first["Code"] == second["Code"] == 0
    assert second["Data"]["Round"] > first["Data"]["Round"] + 1
    interrupted = api.post("InterruptAgentInstance", {"AgentInstanceId": instance_id})
    assert interrupted["Code"] == 0
    assert isinstance(interrupted["Data"]["Round"], int)


def test_message_list_is_the_context_window(api: ZegoApi, emulator: Emulator) -> None:
    """GetAgentInstanceMsgList returns the last WindowSize user/assistant messages."""
    history = {"SyncMode": 1, "WindowSize": 3, "Messages": [{"Role": "user", "Content": "earlier"}]}
    instance_id = api.post("CreateAgentInstance", instance_body(MessageHistory=history))["Data"][
        "AgentInstanceId"
    ]
    emulator.control.join("room_1", "user_1")
    emulator.control.say(instance_id, "What's the weather?", ["Sunny.", "Warm."])

    def window() -> Any:
        data = api.post("GetAgentInstanceMsgList", {"AgentInstanceId": instance_id})["Data"]
        return data if data["Total"] == 3 and data["MessageList"][-1]["Role"] == "assistant" else None

    data = wait_for(window, interval=0.15)  # slower than the 10/s rate limit
    assert data["MessageList"] == [
        {"Role": "user", "Content": "earlier"},
        {"Role": "user", "Content": "What's the weather?"},
        {"Role": "assistant", "Content": "Sunny. Warm."},
    ]
    more = {"AgentInstanceId": instance_id, "Messages": [{"Role": "user", "Content": "x"}]}
    assert api.post("AddAgentInstanceMsg", more)["Code"] == 0
    data = api.post("GetAgentInstanceMsgList", {"AgentInstanceId": instance_id})["Data"]
    assert data["Total"] == 3
    assert data["MessageList"][0] == {"Role": "user", "Content": "What's the weather?"}


def test_walkie_talkie_actions(api: ZegoApi) -> None:
    """StartListening needs CommunicationMode 2 (else 410001042); LLM/TTS while LISTENING give 410001013."""
    full_duplex = api.post("CreateAgentInstance", instance_body(1))["Data"]["AgentInstanceId"]
    assert api.post("StartListening", {"AgentInstanceId": full_duplex})["Code"] == 410001042
    assert api.post("StopListening", {"AgentInstanceId": full_duplex})["Code"] == 410001042
    body = instance_body(2, AdvancedConfig={"CommunicationMode": 2})
    walkie = api.post("CreateAgentInstance", body)["Data"]["AgentInstanceId"]
    started = api.post("StartListening", {"AgentInstanceId": walkie, "Sequence": 5})
    assert started["Code"] == 0
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": walkie})["Data"]["Status"] == "LISTENING"
    assert api.post("SendAgentInstanceLLM", {"AgentInstanceId": walkie, "Text": "hi"})["Code"] == 410001013
    assert api.post("SendAgentInstanceTTS", {"AgentInstanceId": walkie, "Text": "hi"})["Code"] == 410001013
    assert api.post("StopListening", {"AgentInstanceId": walkie, "Sequence": 5})["Code"] == 410001043
    assert api.post("StopListening", {"AgentInstanceId": walkie, "Sequence": 6})["Code"] == 0


def test_update_instance_switches_the_user_stream(api: ZegoApi, emulator: Emulator) -> None:
    """UpdateAgentInstance with RTC.UserStreamId changes which user stream the agent pulls."""
    instance_id = api.post("CreateAgentInstance", instance_body())["Data"]["AgentInstanceId"]
    body = {
        "AgentInstanceId": instance_id,
        "RTC": {"UserStreamId": "user_stream_new"},
        "LLM": llm(Model="m9"),
    }
    assert api.post("UpdateAgentInstance", body)["Code"] == 0
    (described,) = emulator.control.state()["instances"]
    assert described["UserStreamId"] == "user_stream_new"


def test_api_fault_injection(api: ZegoApi, emulator: Emulator) -> None:
    """An injected fault makes the next N calls of that action fail with the chosen code, then it clears."""
    emulator.control.api_fault("CreateAgentInstance", 410000010, count=2)
    codes = [api.post("CreateAgentInstance", instance_body(n))["Code"] for n in range(3)]
    assert codes == [410000010, 410000010, 0]
    emulator.control.api_fault("QueryAgents", 410000001, message="boom")
    result = api.post("QueryAgents", {"AgentIds": ["agent_1"]})
    assert (result["Code"], result["Message"]) == (410000001, "boom")
    emulator.control.api_fault("ListAgents", 410000010, count=3)
    emulator.control.clear_api_faults()
    assert api.post("ListAgents", {})["Code"] == 0
    assert emulator.control.state()["api_faults"] == {}


def test_unknown_fields_are_ignored(api: ZegoApi) -> None:
    """Unknown fields are ignored, like the vendor's JSON decoder does."""
    body = instance_body(Extra={"x": 1}, RTC={**instance_body()["RTC"], "Unknown": "y"})
    assert api.post("CreateAgentInstance", body)["Code"] == 0
