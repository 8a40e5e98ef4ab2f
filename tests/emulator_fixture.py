"""The ``emulator`` fixture: a running stand-in for ZEGO (and Coze), plus a tiny signed caller.

``tests/conftest.py`` imports ``emulator`` and ``emulator_factory`` from here. The emulator runs
on free ports in a background thread and stops at the end of the test; starting one takes a few
milliseconds, so every test gets a fresh world. ``ZegoApi`` signs requests with its own md5 (never
roomwarden's client), so a mistake shared by client and emulator cannot hide in these tests.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from emulator import Emulator, EmulatorConfig, ZegoAppSecrets
from tests.factories import APP_ID, CALLBACK_SECRET

SERVER_SECRET = "9193cc662a4c0ec135ec71fb57194b38"
COZE_FULL_TOKEN = "pat_full"
COZE_NOROOM_TOKEN = "pat_noroom"
COZE_BOT = "7348293334459310001"
COZE_ALL = frozenset(
    {
        "createRoom",
        "listVoice",
        "chat",
        "listMessage",
        "createConversation",
        "listConversation",
        "retrieveConversation",
    }
)


def emulator_config(**changes: Any) -> EmulatorConfig:
    """A config with one ZEGO app (tests.factories.APP_ID), callbacks recorded only, two Coze tokens."""
    values: dict[str, Any] = {
        "zego_apps": {APP_ID: ZegoAppSecrets(server_secret=SERVER_SECRET, callback_secret=CALLBACK_SECRET)},
        "callback_url": None,
        "coze_tokens": {COZE_FULL_TOKEN: COZE_ALL, COZE_NOROOM_TOKEN: frozenset({"listVoice"})},
        "coze_bots": frozenset({COZE_BOT}),
    }
    values.update(changes)
    return EmulatorConfig(**values)


@pytest.fixture
def emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with ``emulator_config(**changes)``; all are stopped after the test."""
    started: list[Emulator] = []

    def start(**changes: Any) -> Emulator:
        emu = Emulator(emulator_config(**changes))
        emu.start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory()


def zego_signature(app_id: int | str, nonce: str, secret: str, timestamp: int | str) -> str:
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode(), usedforsecurity=False).hexdigest()


class ZegoApi:
    """Signed calls to the emulator's ZEGO APIs; returns the envelope as a dict."""

    def __init__(self, base_url: str, *, app_id: int = APP_ID, secret: str = SERVER_SECRET) -> None:
        self.base_url = base_url
        self.app_id = app_id
        self.secret = secret

    def params(self, action: str, **overrides: Any) -> dict[str, Any]:
        nonce, ts = secrets.token_hex(8), int(time.time())
        params: dict[str, Any] = {
            "Action": action,
            "AppId": self.app_id,
            "SignatureNonce": nonce,
            "Timestamp": ts,
            "Signature": zego_signature(self.app_id, nonce, self.secret, ts),
            "SignatureVersion": "2.0",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def post(self, action: str, body: Any = None, **overrides: Any) -> dict[str, Any]:
        response = self.post_raw(action, body if body is not None else {}, **overrides)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def post_raw(
        self, action: str, body: Any, *, content: bytes | None = None, **overrides: Any
    ) -> httpx.Response:
        params = self.params(action, **overrides)
        if content is not None:
            return httpx.post(self.base_url, params=params, content=content, timeout=10)
        return httpx.post(self.base_url, params=params, json=body, timeout=10)

    def get(
        self, action: str, extra: list[tuple[str, Any]] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        params = list(self.params(action, **overrides).items()) + (extra or [])
        response = httpx.get(self.base_url, params=params, timeout=10)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def register_agent(api: ZegoApi, agent_id: str = "agent_1") -> None:
    body = {"AgentId": agent_id, "Name": "Test agent", "LLM": llm(), "TTS": tts()}
    assert api.post("RegisterAgent", body)["Code"] == 0


def llm(**changes: Any) -> dict[str, Any]:
    return {
        "Url": "https://api.example.com/v1/chat/completions",
        "ApiKey": "sk-test",
        "Model": "m1",
        **changes,
    }


def tts(**changes: Any) -> dict[str, Any]:
    return {
        "Vendor": "ByteDance",
        "Params": {"app": {"appid": "a", "token": "t", "cluster": "volcano_tts"}},
        **changes,
    }


def instance_body(n: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid CreateAgentInstance body whose ids are unique per ``n``."""
    body: dict[str, Any] = {
        "AgentId": "agent_1",
        "UserId": f"user_{n}",
        "RTC": {
            "RoomId": f"room_{n}",
            "AgentStreamId": f"agent_stream_{n}",
            "AgentUserId": f"agent_user_{n}",
            "UserStreamId": f"user_stream_{n}",
        },
    }
    body.update(changes)
    return body


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy (returning it) or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(interval)
