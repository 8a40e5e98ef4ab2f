"""Sessions started through the API, end to end: receiver, worker and beat as real processes,
Postgres and a private Redis, and the emulator standing in for ZEGO and Coze over real HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine

from emulator import Emulator
from tests.conftest import API_TOKEN
from tests.emulator_fixture import COZE_BOT, COZE_FULL_TOKEN, COZE_NOROOM_TOKEN, SERVER_SECRET
from tests.processes import RedisServer, Stack, free_port, stack_env, wait_until

pytestmark = pytest.mark.slow

API_KEY = "sk-live-do-not-leak-4242"
COZE_SILENCE = 2.0  # roomwarden's view of Coze's 180 s rule, at the emulator's time scale below
TIME_SCALE = 180 / COZE_SILENCE


def zego_request(room: str, user: str = "user_1", n: int = 1) -> dict[str, Any]:
    return {
        "provider": "zego",
        "agent": {"AgentId": "concierge", "Name": "Concierge"},
        "params": {
            "AgentId": "concierge",
            "UserId": user,
            "RTC": {
                "RoomId": room,
                "AgentUserId": f"agent_{n}",
                "AgentStreamId": f"agent_stream_{n}",
                "UserStreamId": f"user_stream_{n}",
            },
            "LLM": {"Url": "https://llm.example/v1/chat/completions", "ApiKey": API_KEY, "Model": "m"},
            "CallbackConfig": {"ASRResult": 1, "LLMResult": 1, "Interrupted": 1, "AgentInstanceStatus": 1},
        },
    }


class Deployment:
    def __init__(self, stack: Stack, emulator: Emulator) -> None:
        self.stack, self.emulator, self.control = stack, emulator, emulator.control
        self.api = httpx.Client(
            base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    def start(self, body: dict[str, Any]) -> str:
        response = self.api.post("/v1/sessions", json=body)
        assert response.status_code == 202, response.text
        assert response.json()["state"] == "starting"
        return str(response.json()["id"])

    def session(self, session_id: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/sessions/{session_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_state(self, session_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
        wait_until(
            lambda: self.session(session_id)["state"] == state,
            timeout,
            f"session {session_id} to be {state}; it is {self.session(session_id)}\n{self.stack.logs()}",
        )
        return self.session(session_id)

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        return list(self.api.get(f"/v1/sessions/{session_id}/transcript").json()["turns"])


@pytest.fixture
def deploy(
    tmp_path: Path, database_url: str, clean_engine: Engine, private_redis: RedisServer,
    emulator_factory: Callable[..., Emulator],
) -> Iterator[Callable[..., Deployment]]:  # fmt: skip
    """Start roomwarden against an emulator made with the given config changes and env overrides."""
    if not database_url.startswith("postgresql"):
        pytest.skip("runs the production shape (Postgres, Redis); the embedded one is the CLI demo test")
    made: list[Deployment] = []

    def make(coze_token: str = COZE_FULL_TOKEN, **emulator_changes: Any) -> Deployment:
        port = free_port()
        emu = emulator_factory(
            callback_url=f"http://127.0.0.1:{port}/callbacks/zego", time_scale=TIME_SCALE, **emulator_changes
        )
        env = {
            **stack_env(database_url, private_redis.url),
            "ROOMWARDEN_ZEGO_SERVER_SECRET": SERVER_SECRET,
            "ROOMWARDEN_SECRET_KEY": Fernet.generate_key().decode(),
            "ROOMWARDEN_ZEGO_API_URL": emu.zego_agent_url,
            "ROOMWARDEN_ZEGO_RTC_URL": emu.zego_rtc_url,
            "ROOMWARDEN_COZE_API_URL": emu.coze_url,
            "ROOMWARDEN_COZE_TOKEN": coze_token,
            "ROOMWARDEN_COZE_SILENCE_SECONDS": str(COZE_SILENCE),
            "ROOMWARDEN_COZE_POLL_INTERVAL_SECONDS": "0.5",
            "ROOMWARDEN_START_RETRY_BASE_SECONDS": "0.2",
        }
        stack = Stack(tmp_path / f"stack{len(made)}", env, port=port)
        stack.start_receiver()
        stack.worker.start()
        stack.beat.start()
        deployment = Deployment(stack, emu)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.api.close()
        deployment.stack.stop()


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


def test_the_eleventh_instance_over_quota_fails_with_the_vendors_code(
    deploy: Callable[..., Deployment],
) -> None:
    """ZEGO's concurrency quota reached: the session shows failed with 410000011, not a silent hang."""
    d = deploy(voice_quota=2)
    ok = [d.start(zego_request(f"room_q{n}", f"user_{n}", n)) for n in range(2)]
    for session_id in ok:
        d.wait_state(session_id, "active")
    over = d.start(zego_request("room_q9", "user_9", 9))
    failed = d.wait_state(over, "failed")
    assert failed["end_code"] == 410000011
    assert failed["end_reason"] == "vendor_error"
    assert "410000011" in failed["failure_message"]


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
