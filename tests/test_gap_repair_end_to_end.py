"""Gap repair end to end: a reply whose LLMResult callbacks ZEGO never delivered is filled from the
agent's context when the session is deleted. Receiver, worker and beat are real processes; the
emulator stands in for ZEGO over real HTTP and drops the callbacks on purpose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.deployment import Deployment, zego_request
from tests.processes import wait_until

pytestmark = pytest.mark.slow


def rounds_of(d: Deployment, session_id: str) -> dict[int, dict[str, Any]]:
    answer = d.api.get(f"/v1/sessions/{session_id}/transcript")
    assert answer.status_code == 200, answer.text
    return {r["round"]: r for r in answer.json()["rounds"]}


def test_a_reply_whose_llm_results_were_lost_is_repaired_at_deletion(
    deploy: Callable[..., Deployment],
) -> None:
    """Both sentences of the second reply never arrive: the transcript shows that Round partial,
    with the user's question and no answer. DELETE reads the agent's context before deleting it:
    the answer is back, marked repaired, and the Round is complete."""
    d = deploy()
    session_id = d.start(zego_request("room_gap"))
    instance = d.wait_state(session_id, "active")["join"]["agent_instance_id"]
    d.control.join("room_gap", "user_1")

    first = d.control.say(instance, "Is the pool open?", ["Yes, until ten."])
    d.control.wait_status(instance, first, "IDLE")
    d.control.callback_fault("drop", event="LLMResult", count=2, agent_instance_id=instance)
    lost = d.control.say(instance, "And the spa?", ["The spa opens at nine.", "It has a sauna."])
    d.control.wait_status(instance, lost, "IDLE")
    last = d.control.say(instance, "Thanks, bye!", ["Goodbye!"])
    d.control.wait_status(instance, last, "IDLE")

    wait_until(lambda: len(d.turns(session_id)) == 5, 15, "five turns: the lost reply's absent")
    assert rounds_of(d, session_id)[lost]["status"] == "partial"
    assert rounds_of(d, session_id)[first]["status"] == "complete"

    response = d.api.delete(f"/v1/sessions/{session_id}")
    assert response.status_code == 202, response.text
    d.wait_state(session_id, "ended")
    wait_until(lambda: len(d.turns(session_id)) == 6, 15, f"the repaired turn, got {d.turns(session_id)}")

    turns = d.turns(session_id)
    assert [(t["round"], t["speaker"], t["text"], t["source"]) for t in turns] == [
        (first, "user", "Is the pool open?", None),
        (first, "agent", "Yes, until ten.", None),
        (lost, "user", "And the spa?", None),
        (lost, "agent", "The spa opens at nine. It has a sauna.", "repaired"),
        (last, "user", "Thanks, bye!", None),
        (last, "agent", "Goodbye!", None),
    ]
    statuses = rounds_of(d, session_id)
    assert {r: (s["status"], s["repaired"]) for r, s in statuses.items()} == {
        first: ("complete", False),
        lost: ("complete", True),
        last: ("complete", False),
    }
    assert d.control.api_calls("GetAgentInstanceMsgList") == 1
    summary = d.session(session_id)["summary"]
    assert (summary["user_turns"], summary["agent_turns"]) == (3, 3), "the repaired turn is counted"
