"""Sessions started through the API, end to end: receiver, worker and beat as real processes,
Postgres and a private Redis, and the emulator standing in for ZEGO and Coze over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.deployment import API_KEY, COZE_SILENCE, Deployment, zego_request
from tests.emulator_fixture import COZE_BOT, COZE_NOROOM_TOKEN
from tests.processes import wait_until

pytestmark = pytest.mark.slow


def test_a_zego_session_becomes_active_and_its_transcript_fills_from_callbacks(
    deploy: Callable[..., Deployment],
) -> None:
    """POST a session, talk to the agent (cutting it off once), DELETE it: the transcript is all there."""
    d = deploy()
    session_id = d.start(zego_request("room_e2e"))
    session = d.wait_state(session_id, "active")
    instance = session["join"]["agent_instance_id"]
    assert len(instance) == 19 and instance.isdigit()
    assert session["spec"]["params"]["LLM"]["ApiKey"] == "***"

    d.control.join("room_e2e", "user_1")
    said = d.control.say(instance, "Is the pool open?", ["Yes, until ten.", "Towels are at the desk."])
    d.control.wait_status(instance, said, "IDLE")
    said = d.control.say(instance, "And the spa?", ["The spa opens at nine.", "It has a sauna.", "And a steam room."],
                         interrupt_after=1)  # fmt: skip
    d.control.wait_status(instance, said, "SPEAKING")
    said = d.control.say(instance, "Thanks, bye!", ["Goodbye!"])
    d.control.wait_status(instance, said, "IDLE")

    response = d.api.delete(f"/v1/sessions/{session_id}")
    assert response.status_code == 202, response.text
    ended = d.wait_state(session_id, "ended")
    assert ended["end_reason"] == "deleted" and ended["end_code"] == 0

    def complete() -> bool:
        return len(d.turns(session_id)) == 6 and all(t["text"] for t in d.turns(session_id))

    wait_until(complete, 15, f"a six-turn transcript, got {d.turns(session_id)}")
    turns = d.turns(session_id)
    assert [t["speaker"] for t in turns] == ["user", "agent"] * 3
    assert turns[0]["text"] == "Is the pool open?"
    assert turns[1]["text"] == "Yes, until ten. Towels are at the desk."
    assert turns[3]["interrupted"] and turns[3]["played_text"]
    assert turns[4]["text"] == "Thanks, bye!"
    assert all(t["agent_instance_id"] == instance for t in turns)
    assert API_KEY not in d.api.get(f"/v1/sessions/{session_id}").text
    assert API_KEY not in d.stack.logs()


def test_a_session_over_the_vendors_quota_is_queued_and_starts_when_a_slot_frees(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO answers 410000011 (its quota is lower than roomwarden's policy): queued, never failed."""
    d = deploy(voice_quota=2, env={"ROOMWARDEN_POLICY_INTERVAL_SECONDS": "1"})
    for n in (0, 1, 9):  # users in their rooms, so that ZEGO's 120 s absence rule frees no slot
        d.control.join(f"room_q{n}", f"user_{n}")
    ok = [d.start(zego_request(f"room_q{n}", f"user_{n}", n)) for n in range(2)]
    for session_id in ok:
        d.wait_state(session_id, "active")
    over = d.start(zego_request("room_q9", "user_9", 9))
    queued = d.wait_state(over, "queued")
    assert queued["end_reason"] is None
    assert d.api.delete(f"/v1/sessions/{ok[0]}").status_code == 202
    d.wait_state(over, "active", timeout=30)


def test_a_transient_vendor_error_is_retried_and_the_session_still_starts(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO says "insufficient resources" once: roomwarden backs off, tries again, and succeeds."""
    d = deploy()
    d.control.api_fault("CreateAgentInstance", 410000010, count=1)
    session_id = d.start(zego_request("room_retry"))
    d.wait_state(session_id, "active")
    created = [i for i in d.control.state()["instances"] if i["RoomId"] == "room_retry"]
    assert len(created) == 1


def test_a_coze_token_without_create_room_permission_fails_with_4101(
    deploy: Callable[..., Deployment],
) -> None:
    """A PAT missing createRoom: the Coze session fails at once with Coze's 4101, no retries."""
    d = deploy(coze_token=COZE_NOROOM_TOKEN)
    session_id = d.start({"provider": "coze", "params": {"bot_id": COZE_BOT}})
    failed = d.wait_state(session_id, "failed")
    assert failed["end_code"] == 4101


def test_a_coze_session_ends_when_its_room_falls_silent_with_its_transcript_pulled(
    deploy: Callable[..., Deployment],
) -> None:
    """Coze has no end API or callbacks: the room's silence ends the session, messages become turns."""
    d = deploy()
    session_id = d.start({"provider": "coze", "params": {"bot_id": COZE_BOT, "uid": "guest_1"}})
    session = d.wait_state(session_id, "active")
    join = session["join"]
    assert {"room_id", "app_id", "token", "uid"} <= set(join) and join["uid"] == "guest_1"
    d.control.coze_join(join["room_id"], "guest_1")
    d.control.coze_say(join["room_id"], "What's on the menu?", "Soup and bread today.")
    d.control.coze_say(join["room_id"], "Any dessert?", "Apple pie.")
    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 409  # no end-room API
    ended = d.wait_state(session_id, "ended", timeout=COZE_SILENCE + 15)
    assert ended["end_reason"] == "silence"
    said = [(t["speaker"], t["text"]) for t in d.turns(session_id)]
    assert said == [
        ("user", "What's on the menu?"),
        ("agent", "Soup and bread today."),
        ("user", "Any dessert?"),
        ("agent", "Apple pie."),
    ]

    def room_closed() -> bool:  # the emulator's Coze closed the room by the same rule
        return bool(d.control.coze_state()["rooms"][join["room_id"]]["state"] == "closed")

    wait_until(room_closed, 5, "the emulated Coze room to close")
