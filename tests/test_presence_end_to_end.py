"""Presence end to end: the emulator's RTC room callbacks reach a real receiver, worker and beat,
and roomwarden knows who is in the room, late, retried and reordered callbacks and all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.deployment import TIME_SCALE, Deployment, zego_request
from tests.processes import wait_until
from tests.test_policies_end_to_end import FAST, active_instances, live_instance, policies

pytestmark = pytest.mark.slow

# A 1202 wait that polls DescribeUsers once a minute: a return seen sooner came from room_login.
WAIT = policies('[defaults.on_deleted]\nuser_absent = "wait"\nwait_seconds = 300\nwait_poll_seconds = 60\n')


def start_in_room(d: Deployment, room: str, stream: str = "user_stream_1") -> tuple[str, str]:
    """The user is in the room, publishing the stream the agent is to pull, before the agent comes."""
    d.control.join(room, "user_1", stream_id=stream)
    session_id = d.start(zego_request(room))
    d.wait_state(session_id, "active")
    return session_id, live_instance(d, session_id)


def presence(d: Deployment, session_id: str) -> dict[str, Any]:
    return dict(d.session(session_id)["presence"])


def test_a_user_who_leaves_and_comes_back_gets_a_new_agent_on_room_login_without_polling(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO deletes the agent 120 s (its clock) after the user left (1202); roomwarden waits. The
    user's room_login brings a new agent at once: DescribeUsers was asked once, at the 1202."""
    d = deploy(policies=WAIT, env=FAST)
    session_id, first = start_in_room(d, "room_back")
    d.control.leave("room_back", "user_1")
    wait_until(lambda: presence(d, session_id)["user_present"] is False, 15, "the logout to be applied")

    wait_until(
        lambda: (
            [(a["action"], a["state"]) for a in d.actions(session_id)] == [("await_user", "pending")]
            and "seen" in (d.actions(session_id)[0]["result"] or {})
        ),
        20,
        f"the wait to have polled once: {d.actions(session_id)}",
    )
    polls = d.control.api_calls("DescribeUsers")
    d.control.join("room_back", "user_1", stream_id="user_stream_1")
    returned = time.monotonic()

    wait_until(
        lambda: d.session(session_id)["state"] == "active" and active_instances(d.session(session_id)) != [],
        20,
        f"a new agent for the returning user: {d.session(session_id)}\n{d.stack.logs()}",
    )
    assert time.monotonic() - returned < 30  # the next poll was a minute away
    assert d.control.api_calls("DescribeUsers") == polls
    assert live_instance(d, session_id) != first
    wait = next(a for a in d.actions(session_id) if a["action"] == "await_user")
    assert wait["state"] == "done" and wait["result"]["seen"]["room_login"]["user_update_seq"] >= 3
    assert presence(d, session_id)["user_present"] is True


def test_a_user_back_on_another_stream_is_followed_by_the_agent(deploy: Callable[..., Deployment]) -> None:
    """The user's app comes back publishing a new stream id: UpdateAgentInstance points the agent
    at it, and the emulator's agent now pulls it."""
    d = deploy(policies=policies(), env=FAST)
    session_id, instance = start_in_room(d, "room_stream")
    updates = d.control.api_calls("UpdateAgentInstance")
    d.control.leave("room_stream", "user_1")
    d.control.join("room_stream", "user_1", stream_id="user_stream_phone")

    wait_until(
        lambda: [(a["action"], a["state"]) for a in d.actions(session_id)] == [("follow_stream", "done")],
        20,
        f"the agent to follow the new stream: {d.actions(session_id)}\n{d.stack.logs()}",
    )
    assert d.control.api_calls("UpdateAgentInstance") == updates + 1
    [agent] = [i for i in d.control.state()["instances"] if i["AgentInstanceId"] == instance]
    assert agent["UserStreamId"] == "user_stream_phone"
    assert d.session(session_id)["state"] == "active" and live_instance(d, session_id) == instance


def test_reordered_and_duplicated_room_callbacks_still_give_the_billed_absence(
    deploy: Callable[..., Deployment],
) -> None:
    """The logout comes after the next login, and the login twice: the user ends present, and the
    agent time billed with nobody there matches ZEGO's own ledger."""
    d = deploy(policies=policies(), env=FAST)
    session_id, instance = start_in_room(d, "room_shuffle")
    d.control.rtc_callback_fault("reorder", event="room_logout", room_id="room_shuffle")
    d.control.rtc_callback_fault("duplicate", event="room_login", room_id="room_shuffle")
    d.control.leave("room_shuffle", "user_1")
    time.sleep(0.5)  # 45 s of ZEGO's time: under its 120 s idle rule
    d.control.join("room_shuffle", "user_1", stream_id="user_stream_1")
    sent = d.control.rtc_callbacks()
    assert [c["fault"] for c in sent if c["body"]["event"] in ("room_login", "room_logout")][-2:] == [
        "reorder",
        "duplicate",
    ]
    wait_until(
        lambda: d.session(session_id)["no_user_seconds"] not in (None, 0),
        15,
        f"the absence to be counted: {d.session(session_id)}",
    )
    assert presence(d, session_id)["user_present"] is True
    response = d.api.delete(f"/v1/sessions/{session_id}")
    assert response.status_code in (200, 202), response.text
    ended = d.wait_state(session_id, "ended")

    [billed] = [i for i in d.control.ledger("room_shuffle")["Instances"] if i["AgentInstanceId"] == instance]
    # ZEGO's ledger counts its own (scaled) seconds; roomwarden counts the wall clock's.
    assert ended["no_user_seconds"] == pytest.approx(billed["NoUserS"] / TIME_SCALE, abs=0.25), billed
