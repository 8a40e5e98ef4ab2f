"""CreateLiveDigitalHumanAgentInstance: one spec test per constraint the vendor documents for it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from tests.emulator_fixture import ZegoApi, instance_body, register_agent, tts, wait_for

LIVE = "CreateLiveDigitalHumanAgentInstance"


def live_body(n: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid live digital human: no UserId, no user stream, a CDN push, TTS."""
    body: dict[str, Any] = {
        "AgentId": "agent_1",
        "DigitalHuman": {"DigitalHumanId": "dh-1"},
        "RTC": {"RoomId": f"live_room_{n}", "AgentStreamId": f"live_stream_{n}", "AgentUserId": f"live_{n}"},
        "CDN": {"Url": f"rtmp://push.example.com/live/stream_{n}"},
        "TTS": tts(),
    }
    body.update(changes)
    return body


def _start(emulator_factory: Callable[..., Emulator], **changes: Any) -> tuple[Emulator, ZegoApi]:
    emu = emulator_factory(**changes)
    api = ZegoApi(emu.zego_agent_url)
    register_agent(api)
    return emu, api


def _create(api: ZegoApi, n: int = 1, **changes: Any) -> str:
    result = api.post(LIVE, live_body(n, **changes))
    assert result["Code"] == 0, result
    instance_id: str = result["Data"]["AgentInstanceId"]
    return instance_id


def _described(emu: Emulator, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        i for i in emu.control.state()["instances"] if i["AgentInstanceId"] == instance_id
    )
    return found


def _alive(api: ZegoApi, instance_id: str) -> bool:
    return bool(api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 0)


def test_created_without_a_user_and_answered_like_a_digital_human(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """A live digital human needs no UserId; ZEGO answers its id and a DigitalHumanConfig."""
    emu, api = _start(emulator_factory)
    data = api.post(LIVE, live_body())["Data"]
    decoded = json.loads(base64.b64decode(data["DigitalHumanConfig"]))
    assert decoded["DigitalHumanId"] == "dh-1"
    assert decoded["Streams"][0]["StreamId"] == "live_stream_1"
    described = _described(emu, data["AgentInstanceId"])
    assert described["Live"] is True
    assert described["CdnUrl"] == "rtmp://push.example.com/live/stream_1"


def test_user_stream_id_is_refused(emulator_factory: Callable[..., Emulator]) -> None:
    """RTC.UserStreamId is not taken: a live digital human pulls no user stream (410000003)."""
    _, api = _start(emulator_factory)
    body = live_body()
    body["RTC"]["UserStreamId"] = "user_stream_1"
    result = api.post(LIVE, body)
    assert result["Code"] == 410000003
    assert "RTC.UserStreamId" in result["Message"]


@pytest.mark.parametrize("cdn", [{}, {"Url": ""}, {"Url": 7}])
def test_cdn_url_is_required(emulator_factory: Callable[..., Emulator], cdn: dict[str, Any]) -> None:
    """A CDN push needs its Url: CDN without a string Url is 410000003 naming CDN.Url."""
    _, api = _start(emulator_factory)
    result = api.post(LIVE, live_body(CDN=cdn))
    assert result["Code"] == 410000003
    assert "CDN.Url" in result["Message"]


@pytest.mark.parametrize(("seconds", "code"), [(29, 410000003), (30, 0), (86400, 0), (86401, 410000003)])
def test_max_idle_time_range(emulator_factory: Callable[..., Emulator], seconds: int, code: int) -> None:
    """A live digital human's MaxIdleTime is [30, 86400] s (a voice agent's [10, 1800] does not apply)."""
    _, api = _start(emulator_factory)
    result = api.post(LIVE, live_body(AdvancedConfig={"MaxIdleTime": seconds}))
    assert result["Code"] == code, result
    if code:
        assert "AdvancedConfig.MaxIdleTime" in result["Message"]


def test_max_idle_time_defaults_to_900(emulator_factory: Callable[..., Emulator]) -> None:
    """Without AdvancedConfig.MaxIdleTime a live digital human idles out after 900 s, not 120."""
    emu, api = _start(emulator_factory)
    assert _described(emu, _create(api))["MaxIdleTime"] == 900


def test_digital_human_is_required(emulator_factory: Callable[..., Emulator]) -> None:
    """DigitalHuman.DigitalHumanId is required, as for any digital human."""
    _, api = _start(emulator_factory)
    result = api.post(LIVE, live_body(DigitalHuman={}))
    assert result["Code"] == 410000003
    assert "DigitalHuman.DigitalHumanId" in result["Message"]


def test_idle_is_counted_from_the_last_tts(emulator_factory: Callable[..., Emulator]) -> None:
    """TTS keeps a live digital human alive past its MaxIdleTime; once TTS stops it is deleted with 1202."""
    emu, api = _start(emulator_factory, time_scale=30)
    instance_id = _create(api, AdvancedConfig={"MaxIdleTime": 30})  # about 1 real second
    deadline = time.monotonic() + 3  # three MaxIdleTimes, each a few TTS apart
    while time.monotonic() < deadline:
        said = api.post("SendAgentInstanceTTS", {"AgentInstanceId": instance_id, "Text": "news at ten"})
        assert said["Code"] == 0, said
        time.sleep(0.15)
    assert _alive(api, instance_id), "each TTS restarted its idle clock"
    wait_for(lambda: _described(emu, instance_id)["DeletedCode"] == 1202, timeout=10)
    events = [(c["event"], c["body"]["Data"].get("Code")) for c in emu.control.callbacks()
              if c["agent_instance_id"] == instance_id]  # fmt: skip
    assert ("Exception", 1202) in events
    assert ("AgentInstanceDeleted", 1202) in events


def test_room_users_do_not_keep_it_alive(emulator_factory: Callable[..., Emulator]) -> None:
    """Viewers in its room are not drivers: without TTS the live digital human still idles out."""
    emu, api = _start(emulator_factory, time_scale=30)
    instance_id = _create(api, AdvancedConfig={"MaxIdleTime": 30})
    emu.control.join("live_room_1", "viewer_1")
    wait_for(lambda: _described(emu, instance_id)["DeletedCode"] == 1202, timeout=10)


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("SendAgentInstanceLLM", {"Text": "hi"}),
        ("InterruptAgentInstance", {}),
        ("UpdateAgentInstance", {"TTS": tts()}),
        ("GetAgentInstanceMsgList", {}),
        ("AddAgentInstanceMsg", {"Messages": [{"Role": "user", "Content": "hi"}]}),
        ("ResetAgentInstanceMsgList", {}),
        ("StartListening", {}),
        ("StopListening", {}),
    ],
)
def test_operations_other_than_tts_answer_410001049(
    emulator_factory: Callable[..., Emulator], action: str, extra: dict[str, Any]
) -> None:
    """After creation a live digital human is driven only by TTS: other operations answer 410001049."""
    _, api = _start(emulator_factory)
    instance_id = _create(api)
    result = api.post(action, {"AgentInstanceId": instance_id, **extra})
    assert result["Code"] == 410001049, result
    voice = api.post("CreateAgentInstance", instance_body(2))["Data"]["AgentInstanceId"]
    assert api.post(action, {"AgentInstanceId": voice, **extra})["Code"] != 410001049


def test_tts_and_delete_are_allowed(emulator_factory: Callable[..., Emulator]) -> None:
    """SendAgentInstanceTTS drives it (a Round back) and DeleteAgentInstance ends it (Deleted 0)."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    said = api.post("SendAgentInstanceTTS", {"AgentInstanceId": instance_id, "Text": "hello viewers"})
    assert said["Code"] == 0
    assert said["Data"]["Round"] > 0
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})["Code"] == 0
    assert _described(emu, instance_id)["DeletedCode"] == 0


def test_counts_against_the_digital_human_quota(emulator_factory: Callable[..., Emulator]) -> None:
    """Live digital humans share the digital-human quota (410001031), not the voice one."""
    _, api = _start(emulator_factory, voice_quota=1, digital_human_quota=1)
    _create(api, 1)
    assert api.post(LIVE, live_body(2))["Code"] == 410001031
    dh = instance_body(3, DigitalHuman={"DigitalHumanId": "d"})
    assert api.post("CreateDigitalHumanAgentInstance", dh)["Code"] == 410001031
    assert api.post("CreateAgentInstance", instance_body(4))["Code"] == 0
