"""The client's CreateLiveDigitalHumanAgentInstance: each of the vendor's constraints refused before
sending (a SpecError naming the field, nothing sent), and a valid one created at the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from emulator import Emulator
from tests.worker.vendors.zego.support import (
    CountingTransport,
    agent_client,
    register_body,
    tts,
    with_value,
)
from worker.vendors.errors import SpecError
from worker.vendors.zego.errors import ZegoError


def live_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "AgentId": "agent_1",
        "DigitalHuman": {"DigitalHumanId": "dh_1"},
        "RTC": {"RoomId": "live_room", "AgentStreamId": "live_stream", "AgentUserId": "live_1"},
        "CDN": {"Url": "rtmp://push.example.com/live/1"},
        "TTS": tts(),
    }
    body.update(changes)
    return body


# (path, bad value (``...`` removes it), the field the error names): one row per constraint.
ROWS: list[tuple[str, Any, str]] = [
    ("RTC.UserStreamId", "user_stream_1", "RTC.UserStreamId"),  # no user stream to pull
    ("UserId", "user_1", "UserId"),  # no user at all
    ("CDN.Url", ..., "CDN.Url"),  # a CDN push needs its address
    ("CDN.Url", "", "CDN.Url"),
    ("AdvancedConfig.MaxIdleTime", 29, "AdvancedConfig.MaxIdleTime"),  # [30, 86400]
    ("AdvancedConfig.MaxIdleTime", 86401, "AdvancedConfig.MaxIdleTime"),
    ("AdvancedConfig.DisableTTS", True, "AdvancedConfig.DisableTTS"),  # driven only by TTS
    ("AdvancedConfig.CommunicationMode", 2, "AdvancedConfig.CommunicationMode"),  # no user to listen to
    ("LLM", {"Url": "https://llm.example/v1", "ApiKey": "k", "Model": "m"}, "LLM"),  # TTS only
    ("CallbackConfig.ASRResult", 1, "CallbackConfig.ASRResult"),  # nothing is heard
    ("DigitalHuman", ..., "DigitalHuman"),
    ("RTC.AgentUserId", ..., "RTC.AgentUserId"),
]


@pytest.mark.parametrize(("path", "value", "named"), ROWS)
def test_each_constraint_is_refused_before_sending(
    emulator: Emulator, path: str, value: Any, named: str
) -> None:
    """A request ZEGO would refuse never leaves the process; the error names the field."""
    transport = CountingTransport()
    client = agent_client(emulator.zego_agent_url, transport)
    with pytest.raises(SpecError) as caught:
        client.create_live_digital_human_agent_instance(with_value(live_body(), path, value))
    assert caught.value.field == named, str(caught.value)
    assert transport.actions == []


@pytest.mark.parametrize("seconds", [30, 86400])
def test_max_idle_time_bounds_are_accepted(emulator: Emulator, seconds: int) -> None:
    """The bounds themselves are valid: 30 s and 86400 s both create a live digital human."""
    client = agent_client(emulator.zego_agent_url)
    client.register_agent(register_body())
    created = client.create_live_digital_human_agent_instance(
        live_body(AdvancedConfig={"MaxIdleTime": seconds})
    )
    assert created.decoded_digital_human_config["Streams"][0]["StreamId"] == "live_stream"


def test_only_tts_drives_it(emulator: Emulator) -> None:
    """After creation SendAgentInstanceTTS answers a Round; InterruptAgentInstance is 410001049."""
    client = agent_client(emulator.zego_agent_url)
    client.register_agent(register_body())
    instance = client.create_live_digital_human_agent_instance(live_body()).agent_instance_id
    assert client.send_agent_instance_tts({"AgentInstanceId": instance, "Text": "Good evening."}) > 0
    with pytest.raises(ZegoError) as caught:
        client.interrupt_agent_instance(instance)
    assert caught.value.code == 410001049
