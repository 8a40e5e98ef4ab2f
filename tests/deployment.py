"""A whole roomwarden deployment for end-to-end tests: receiver, worker and beat as real processes,
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
from tests.emulator_fixture import COZE_FULL_TOKEN, SERVER_SECRET
from tests.processes import RedisServer, Stack, free_port, stack_env, wait_until

API_KEY = "sk-live-do-not-leak-4242"
COZE_SILENCE = 2.0  # roomwarden's view of Coze's 180 s rule, at the emulator's time scale below
TIME_SCALE = 180 / COZE_SILENCE  # ZEGO's 120 s MaxIdleTime runs in about 1.3 s


def zego_request(room: str, user: str = "user_1", n: int = 1, **params: Any) -> dict[str, Any]:
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
            **params,
        },
    }


class Deployment:
    def __init__(self, stack: Stack, emulator: Emulator) -> None:
        from tests.conftest import API_TOKEN  # conftest imports this module: not at import time

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

    def actions(self, session_id: str) -> list[dict[str, Any]]:
        response = self.api.get("/v1/actions", params={"session_id": session_id})
        assert response.status_code == 200, response.text
        return list(response.json()["actions"])


@pytest.fixture
def deploy(
    tmp_path: Path, database_url: str, clean_engine: Engine, private_redis: RedisServer,
    emulator_factory: Callable[..., Emulator],
) -> Iterator[Callable[..., Deployment]]:  # fmt: skip
    """Start roomwarden against an emulator made with the given config changes and env overrides."""
    if not database_url.startswith("postgresql"):
        pytest.skip("runs the production shape (Postgres, Redis); the embedded one is the CLI demo test")
    made: list[Deployment] = []

    def make(
        coze_token: str = COZE_FULL_TOKEN,
        policies: str | None = None,
        env: dict[str, str] | None = None,
        outbound: bool = False,
        **emulator_changes: Any,
    ) -> Deployment:
        """``policies``: the policy file's TOML; ``env``: more ROOMWARDEN_* settings;
        ``outbound``: also run the outbound worker that delivers events to endpoints."""
        port = free_port()
        emu = emulator_factory(
            callback_url=f"http://127.0.0.1:{port}/callbacks/zego",
            rtc_callback_url=f"http://127.0.0.1:{port}/callbacks/zego-rtc",
            time_scale=TIME_SCALE,
            **emulator_changes,
        )
        directory = tmp_path / f"stack{len(made)}"
        directory.mkdir(parents=True)
        extra = dict(env or {})
        if policies is not None:
            (directory / "policies.toml").write_text(policies)
            extra["ROOMWARDEN_POLICIES_FILE"] = str(directory / "policies.toml")
        environment = {
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
            **extra,
        }
        stack = Stack(directory, environment, port=port)
        stack.start_receiver()
        stack.worker.start()
        stack.beat.start()
        if outbound:
            stack.outbound.start()
        deployment = Deployment(stack, emu)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.api.close()
        deployment.stack.stop()
