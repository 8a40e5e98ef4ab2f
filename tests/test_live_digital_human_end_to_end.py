"""A live digital human end to end: receiver, worker and beat as real processes, the emulator
standing in for ZEGO over real HTTP. Created with POST /v1/sessions, driven only by say."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.deployment import Deployment
from tests.processes import wait_until

pytestmark = pytest.mark.slow

TTS = {"Vendor": "MiniMax", "Params": {"app": {"api_key": "minimax-key-never-logged-31"}}}
CDN_URL = "rtmp://push.example.com/live/evening_news"


def live_request(room: str) -> dict[str, Any]:
    return {
        "provider": "zego_live_digital_human",
        "agent": {"AgentId": "anchor", "Name": "Anchor"},
        "params": {
            "AgentId": "anchor",
            "DigitalHuman": {"DigitalHumanId": "dh-anchor", "ConfigId": "web"},
            "RTC": {"RoomId": room, "AgentStreamId": "anchor_stream", "AgentUserId": "anchor_1"},
            "CDN": {"Url": CDN_URL},
            "TTS": TTS,
            "CallbackConfig": {"Interrupted": 1, "AgentInstanceStatus": 1},
        },
    }


def test_a_live_digital_human_is_created_and_driven_only_by_say(deploy: Callable[..., Deployment]) -> None:
    """An app starts a live digital human and makes it speak with say: each say is a Round, an
    action and a 'say' turn; the operations it does not take are a 409 naming the provider and
    never reach ZEGO; the policy's user-absence limit is not sent as its MaxIdleTime."""
    d = deploy(policies="[defaults.idle]\nuser_absent_seconds = 20\n")
    bad = dict(live_request("news_room"))
    bad["params"] = {**bad["params"], "RTC": {**bad["params"]["RTC"], "UserStreamId": "viewer_stream"}}
    refused = d.api.post("/v1/sessions", json=bad)
    assert refused.status_code == 400 and refused.json()["field"] == "params.RTC.UserStreamId", refused.text

    session_id = d.start(live_request("news_room"))
    joined = d.wait_state(session_id, "active")
    assert joined["provider"] == "zego_live_digital_human"
    instance = joined["join"]["agent_instance_id"]
    assert joined["join"]["digital_human_config"]
    [made] = [i for i in d.control.state()["instances"] if i["AgentInstanceId"] == instance]
    assert made["Live"] and made["CdnUrl"] == CDN_URL and made["UserStreamId"] == ""
    assert made["MaxIdleTime"] == 900, "ZEGO's own default, not the policy's user_absent_seconds"

    rounds = []
    for text in ("Good evening.", "Here is the news."):
        said = d.api.post(f"/v1/sessions/{session_id}/say", json={"text": text})
        assert said.status_code == 200, said.text
        rounds.append(said.json()["round"])
        d.control.wait_status(instance, rounds[-1], "IDLE")

    def said_turns() -> list[dict[str, Any]]:
        return [t for t in d.turns(session_id) if t["round"] in rounds and t["speaker"] == "agent"]

    wait_until(lambda: len(said_turns()) == 2, 10, "both say turns in the transcript")
    assert [(t["source"], t["text"]) for t in said_turns()] == [
        ("say", "Good evening."),
        ("say", "Here is the news."),
    ]

    for answer in (
        d.api.post(f"/v1/sessions/{session_id}/interrupt"),
        d.api.post(f"/v1/sessions/{session_id}/messages", json={"text": "Any questions?"}),
        d.api.get(f"/v1/sessions/{session_id}/context"),
        d.api.patch(f"/v1/sessions/{session_id}", json={"TTS": TTS}),
    ):
        assert answer.status_code == 409 and answer.json()["error"] == "not_supported", answer.text
        assert "zego_live_digital_human" in answer.json()["detail"]
    for action in ("InterruptAgentInstance", "SendAgentInstanceLLM", "GetAgentInstanceMsgList"):
        assert d.control.api_calls(action) == 0
    assert d.control.api_calls("UpdateAgentInstance") == 0
    assert [a["action"] for a in d.actions(session_id)] == ["say", "say"]

    # Nothing drives it any more: ZEGO deletes it with 1202 after 900 vendor seconds (about 10
    # real ones here). Not a user who left: no room closed, no recreation, the session is idle.
    ended = d.wait_state(session_id, "ended", timeout=60)
    assert (ended["end_code"], ended["end_reason"]) == (1202, "idle")
    assert [a["action"] for a in d.actions(session_id)] == ["say", "say"]
    assert "minimax-key-never-logged-31" not in d.stack.logs()


def test_a_live_digital_human_is_ended_through_the_api(deploy: Callable[..., Deployment]) -> None:
    """DELETE /v1/sessions/{id} ends a live digital human like any ZEGO agent."""
    d = deploy()
    body = live_request("talk_show")
    body["params"]["AdvancedConfig"] = {"MaxIdleTime": 86400}
    session_id = d.start(body)
    d.wait_state(session_id, "active")
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    ended = d.wait_state(session_id, "ended")
    assert ended["end_reason"] == "deleted"
