"""The running-instance rules: quotas, duplicate ids, deleted instances, graceful shutdown, idling."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from tests.emulator_fixture import ZegoApi, instance_body, register_agent, wait_for


def _start(emulator_factory: Callable[..., Emulator], **changes: Any) -> tuple[Emulator, ZegoApi]:
    emu = emulator_factory(**changes)
    api = ZegoApi(emu.zego_agent_url)
    register_agent(api)
    return emu, api


def _create(api: ZegoApi, n: int = 1, **changes: Any) -> str:
    result = api.post("CreateAgentInstance", instance_body(n, **changes))
    assert result["Code"] == 0, result
    instance_id: str = result["Data"]["AgentInstanceId"]
    return instance_id


def _events(emu: Emulator, instance_id: str) -> list[tuple[str, Any]]:
    return [
        (c["event"], c["body"]["Data"].get("Code"))
        for c in emu.control.callbacks()
        if c["agent_instance_id"] == instance_id
    ]


def _deleted_with(emu: Emulator, instance_id: str, code: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
    """Wait for the instance's Exception + AgentInstanceDeleted with ``code``; return its events."""
    wait_for(lambda: ("AgentInstanceDeleted", code) in _events(emu, instance_id), timeout=timeout)
    events = _events(emu, instance_id)
    assert ("Exception", code) in events
    assert events.index(("Exception", code)) < events.index(("AgentInstanceDeleted", code))
    return events


def test_instance_ids_are_19_digits_and_ascending(emulator_factory: Callable[..., Emulator]) -> None:
    """AgentInstanceIds look like the vendor's: 19-digit numeric strings, later ones larger."""
    _, api = _start(emulator_factory)
    ids = [_create(api, n) for n in range(4)]
    assert all(re.fullmatch(r"[1-9]\d{18}", i) for i in ids)
    assert ids == sorted(ids, key=int)
    assert len(set(ids)) == 4


def test_voice_quota(emulator_factory: Callable[..., Emulator]) -> None:
    """Past the voice quota CreateAgentInstance answers 410000011; deleting one frees a slot."""
    _, api = _start(emulator_factory, voice_quota=2)
    first = _create(api, 1)
    _create(api, 2)
    assert api.post("CreateAgentInstance", instance_body(3))["Code"] == 410000011
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": first})["Code"] == 0
    _create(api, 3)


def test_digital_human_quota_is_separate(emulator_factory: Callable[..., Emulator]) -> None:
    """Digital humans have their own quota (410001031) that voice instances do not use up."""
    _, api = _start(emulator_factory, voice_quota=1, digital_human_quota=1)
    _create(api, 1)
    dh = {"DigitalHumanId": "d"}
    assert api.post("CreateDigitalHumanAgentInstance", instance_body(2, DigitalHuman=dh))["Code"] == 0
    assert api.post("CreateDigitalHumanAgentInstance", instance_body(3, DigitalHuman=dh))["Code"] == 410001031
    assert api.post("CreateAgentInstance", instance_body(4))["Code"] == 410000011


def test_default_quota_is_ten(emulator: Emulator) -> None:
    """With the default config the 11th concurrent voice instance is refused."""
    api = ZegoApi(emulator.zego_agent_url)
    register_agent(api)
    for n in range(10):
        _create(api, n)
        time.sleep(0.1)  # the vendor's 10 requests/s
    assert api.post("CreateAgentInstance", instance_body(10))["Code"] == 410000011


def test_reused_agent_user_id_kicks_the_older_instance(emulator_factory: Callable[..., Emulator]) -> None:
    """A second instance with a running AgentUserId kicks the first out: Exception + Deleted 1203."""
    emu, api = _start(emulator_factory)
    older = _create(api, 1)
    body = instance_body(2)
    body["RTC"]["AgentUserId"] = "agent_user_1"
    newer = api.post("CreateAgentInstance", body)["Data"]["AgentInstanceId"]
    _deleted_with(emu, older, 1203)
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": older})["Code"] == 410001002
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": newer})["Code"] == 0


def test_reused_agent_stream_id_fails_the_newer_instance(emulator_factory: Callable[..., Emulator]) -> None:
    """A second instance with a running AgentStreamId fails to push: Exception + Deleted 1206, shortly after."""
    emu, api = _start(emulator_factory, time_scale=10)
    older = _create(api, 1)
    body = instance_body(2)
    body["RTC"]["AgentStreamId"] = "agent_stream_1"
    result = api.post("CreateAgentInstance", body)
    assert result["Code"] == 0, "the API accepts it; the failure comes through callbacks"
    newer = result["Data"]["AgentInstanceId"]
    events = _deleted_with(emu, newer, 1206)
    assert ("AgentInstanceCreated", None) not in events, "it never pushed, so it was never created"
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": older})["Code"] == 0


def test_digital_human_stream_duplicate_is_refused_at_once(emulator_factory: Callable[..., Emulator]) -> None:
    """A digital human reusing a running AgentStreamId is refused synchronously with 410001030."""
    _, api = _start(emulator_factory)
    _create(api, 1)
    body = instance_body(2, DigitalHuman={"DigitalHumanId": "d"})
    body["RTC"]["AgentStreamId"] = "agent_stream_1"
    assert api.post("CreateDigitalHumanAgentInstance", body)["Code"] == 410001030


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("QueryAgentInstanceStatus", {}),
        ("DeleteAgentInstance", {}),
        ("UpdateAgentInstance", {}),
        ("SendAgentInstanceLLM", {"Text": "hi"}),
        ("SendAgentInstanceTTS", {"Text": "hi"}),
        ("InterruptAgentInstance", {}),
        ("GetAgentInstanceMsgList", {}),
    ],
)
def test_deleted_instance_is_not_found(
    emulator_factory: Callable[..., Emulator], action: str, extra: dict[str, Any]
) -> None:
    """Every operation on a deleted instance (deleting it again included) answers 410001002."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})["Code"] == 0
    assert api.post(action, {"AgentInstanceId": instance_id, **extra})["Code"] == 410001002
    assert api.post(action, {"AgentInstanceId": "1912122918452641792", **extra})["Code"] == 410001002
    assert ("AgentInstanceDeleted", 0) in _events(emu, instance_id)


def test_instances_belong_to_their_app(emulator_factory: Callable[..., Emulator]) -> None:
    """Another AppId of the same account cannot see or touch the instance."""
    from emulator import ZegoAppSecrets
    from tests.emulator_fixture import SERVER_SECRET
    from tests.factories import APP_ID, CALLBACK_SECRET

    apps = {APP_ID: ZegoAppSecrets(SERVER_SECRET, CALLBACK_SECRET), 42: ZegoAppSecrets("s42", "c42")}
    emu, api = _start(emulator_factory, zego_apps=apps)
    instance_id = _create(api)
    other = ZegoApi(emu.zego_agent_url, app_id=42, secret="s42")
    assert other.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 410001002


def test_graceful_shutdown_waits_for_idle(emulator_factory: Callable[..., Emulator]) -> None:
    """GracefulShutdown waits until the agent is IDLE; meanwhile operations answer 410001041."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api, CallbackConfig={"AgentInstanceStatus": 1})
    long_text = "This is a long sentence. " * 10
    assert api.post("SendAgentInstanceTTS", {"AgentInstanceId": instance_id, "Text": long_text})["Code"] == 0
    wait_for(
        lambda: (
            api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Data"]["Status"]
            == "SPEAKING"
        ),
        interval=0.15,
    )
    body = {"AgentInstanceId": instance_id, "GracefulShutdown": True, "GracefulShutdownTimeout": 60}
    assert api.post("DeleteAgentInstance", body)["Code"] == 0
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 410001041
    assert (
        api.post("SendAgentInstanceLLM", {"AgentInstanceId": instance_id, "Text": "x"})["Code"] == 410001041
    )
    assert api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})["Code"] == 410001041
    wait_for(lambda: ("AgentInstanceDeleted", 0) in _events(emu, instance_id))
    statuses = [c["body"]["Data"].get("Status") for c in emu.control.callbacks("AgentInstanceStatus")]
    assert statuses[-1] == "IDLE", "the agent finished speaking before it left"
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 410001002


def test_graceful_shutdown_timeout(emulator_factory: Callable[..., Emulator]) -> None:
    """If the agent is still busy after GracefulShutdownTimeout, it is deleted anyway."""
    emu, api = _start(emulator_factory, time_scale=5)
    instance_id = _create(api, CallbackConfig={"AgentInstanceStatus": 1})
    # The agent stops after one sentence, waiting (30 vendor seconds) for the user to barge in.
    emu.control.say(instance_id, "Hello", ["One.", "Two."], interrupt_after=1)
    wait_for(
        lambda: (
            api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Data"]["Status"]
            == "SPEAKING"
        ),
        interval=0.15,
    )
    body = {"AgentInstanceId": instance_id, "GracefulShutdown": True, "GracefulShutdownTimeout": 1}
    started = time.monotonic()
    assert api.post("DeleteAgentInstance", body)["Code"] == 0
    wait_for(lambda: ("AgentInstanceDeleted", 0) in _events(emu, instance_id))
    assert time.monotonic() - started < 1.5, "1 vendor second is 0.2 s here"
    statuses = [c["body"]["Data"]["Status"] for c in emu.control.callbacks("AgentInstanceStatus")]
    assert statuses[-1] == "SPEAKING", "it left mid-sentence"


def test_idle_instance_is_deleted_with_1202(emulator_factory: Callable[..., Emulator]) -> None:
    """If the user never joins, the instance goes after MaxIdleTime: Exception + Deleted 1202."""
    emu, api = _start(emulator_factory, time_scale=120)
    started = time.monotonic()
    instance_id = _create(api)  # default MaxIdleTime 120 s -> about 1 real second
    _deleted_with(emu, instance_id, 1202)
    assert 0.8 < time.monotonic() - started < 3
    assert emu.control.state()["rooms"] == {}, "the agent left and the empty room was destroyed"


def test_present_user_keeps_the_instance(emulator_factory: Callable[..., Emulator]) -> None:
    """While the creating user is in the room the instance stays; leaving starts the idle clock."""
    emu, api = _start(emulator_factory, time_scale=40)
    instance_id = _create(api, AdvancedConfig={"MaxIdleTime": 10})  # 0.25 real seconds
    emu.control.join("room_1", "user_1")
    time.sleep(0.6)
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 0
    emu.control.leave("room_1", "user_1")
    _deleted_with(emu, instance_id, 1202)


def test_lost_heartbeat_drops_the_user_after_100_seconds(emulator_factory: Callable[..., Emulator]) -> None:
    """A user whose connection dies stays in the room for 100 s, then is dropped (and idling starts)."""
    emu, api = _start(emulator_factory, time_scale=200)
    instance_id = _create(api, AdvancedConfig={"MaxIdleTime": 10})
    emu.control.join("room_1", "user_1")
    emu.control.disconnect("room_1", "user_1")
    assert "user_1" in emu.control.state()["rooms"]["room_1"]["users"]
    wait_for(lambda: "user_1" not in emu.control.state()["rooms"].get("room_1", {}).get("users", {}))
    _deleted_with(emu, instance_id, 1202)


def test_rejoining_cancels_the_heartbeat_drop(emulator_factory: Callable[..., Emulator]) -> None:
    """A user who reconnects before 100 s stays in the room."""
    emu, api = _start(emulator_factory, time_scale=200)
    _create(api)
    emu.control.join("room_1", "user_1")
    emu.control.disconnect("room_1", "user_1")
    emu.control.join("room_1", "user_1")
    time.sleep(0.8)
    assert "user_1" in emu.control.state()["rooms"]["room_1"]["users"]


def test_agent_is_a_room_user_while_it_runs(emulator_factory: Callable[..., Emulator]) -> None:
    """The AgentUserId is in the room while the instance runs; the room goes when the last one leaves."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    assert set(emu.control.state()["rooms"]["room_1"]["users"]) == {"agent_user_1"}
    emu.control.join("room_1", "user_1")
    api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})
    assert set(emu.control.state()["rooms"]["room_1"]["users"]) == {"user_1"}
    emu.control.leave("room_1", "user_1")
    assert emu.control.state()["rooms"] == {}


def test_user_with_the_agent_user_id_kicks_the_agent(emulator_factory: Callable[..., Emulator]) -> None:
    """An end user logging in with a running agent's AgentUserId kicks the agent out (1203)."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    emu.control.join("room_9", "agent_user_1")
    _deleted_with(emu, instance_id, 1203)


def test_rtc_fault_control_deletes_the_instance(emulator_factory: Callable[..., Emulator]) -> None:
    """The rtc_fault control makes the agent drop out: Exception + Deleted with that code."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    emu.control.rtc_fault(instance_id, 1205)
    _deleted_with(emu, instance_id, 1205)
    assert api.post("QueryAgentInstanceStatus", {"AgentInstanceId": instance_id})["Code"] == 410001002


def test_deleted_callback_has_latency_data(emulator_factory: Callable[..., Emulator]) -> None:
    """AgentInstanceDeleted after an API delete carries Code 0, DeletedTimestamp and LatencyData."""
    emu, api = _start(emulator_factory)
    instance_id = _create(api)
    before = int(time.time() * 1000)
    api.post("DeleteAgentInstance", {"AgentInstanceId": instance_id})
    (deleted,) = emu.control.callbacks("AgentInstanceDeleted")
    data = deleted["body"]["Data"]
    assert data["Code"] == 0
    assert data["DeletedTimestamp"] >= before
    assert set(data["LatencyData"]) == {"LLMTTFT", "LLMTPS", "TTSAudioFirstFrameTime", "TotalCost"}
    assert not emu.control.callbacks("Exception"), "an API delete is not an exception"
