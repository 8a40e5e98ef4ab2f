"""The Coze emulator for the Coze tests (through ``emulator_factory``), and a counting transport.

The emulator (``tests/emulator_fixture.py``) serves the Coze app on its own port beside the ZEGO
ones; ``CozeServer`` wraps its Coze control endpoints, including the ones ``EmulatorControl``
does not cover (faults, rate limits, session updates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from emulator import Emulator
from tests.emulator_fixture import COZE_ALL, COZE_BOT

BOT = COZE_BOT
OTHER_BOT = "7348293334459310002"
ALL_PERMISSIONS = COZE_ALL
TOKENS = {
    "pat_full": ALL_PERMISSIONS,
    "pat_noroom": ALL_PERMISSIONS - {"createRoom"},
    "pat_voices_only": frozenset({"listVoice"}),
    "pat_nothing": frozenset(),
}
FULL = "pat_full"


@dataclass
class CozeServer:
    url: str
    control: httpx.Client
    scale: float

    def state(self) -> dict[str, Any]:
        return self.control.get("/_emulator/coze/state").raise_for_status().json()

    def room(self, room_id: str) -> dict[str, Any]:
        return self.control.get(f"/_emulator/coze/rooms/{room_id}").raise_for_status().json()

    def join(self, room_id: str, uid: str | None = None) -> None:
        self.control.post(f"/_emulator/coze/rooms/{room_id}/join", json={"uid": uid}).raise_for_status()

    def leave(self, room_id: str, uid: str | None = None) -> None:
        self.control.post(f"/_emulator/coze/rooms/{room_id}/leave", json={"uid": uid}).raise_for_status()

    def say(self, room_id: str, text: str, reply: str) -> dict[str, str]:
        response = self.control.post(
            f"/_emulator/coze/rooms/{room_id}/say", json={"text": text, "reply": reply}
        )
        return response.raise_for_status().json()

    def fault(self, endpoint: str, code: int, *, count: int = 1, http_status: int = 200) -> None:
        body = {"endpoint": endpoint, "code": code, "count": count, "http_status": http_status}
        self.control.post("/_emulator/coze/faults", json=body).raise_for_status()

    def rate_limit(self, endpoint: str, per_minute: int) -> None:
        body = {"endpoint": endpoint, "per_minute": per_minute}
        self.control.post("/_emulator/coze/rate_limits", json=body).raise_for_status()

    def wait_closed(self, room_id: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            room = self.room(room_id)
            if room["state"] == "closed":
                return room
            time.sleep(0.02)
        raise AssertionError(f"room {room_id} still open after {within}s: {self.room(room_id)}")


@contextmanager
def coze_on(emulator_factory: Callable[..., Emulator], time_scale: float = 1.0) -> Iterator[CozeServer]:
    """Start an emulator (from the ``emulator_factory`` fixture) with these tokens and bots."""
    emu = emulator_factory(
        coze_tokens=dict(TOKENS), coze_bots=frozenset({BOT, OTHER_BOT}), time_scale=time_scale
    )
    with httpx.Client(base_url=emu.coze_url, timeout=10) as control:
        yield CozeServer(url=emu.coze_url, control=control, scale=time_scale)


@pytest.fixture
def coze(emulator_factory: Callable[..., Emulator]) -> Iterator[CozeServer]:
    """The Coze emulator at real speed."""
    with coze_on(emulator_factory) as server:
        yield server


@pytest.fixture
def fast_coze(emulator_factory: Callable[..., Emulator]) -> Iterator[CozeServer]:
    """The Coze emulator at 180x: the 3-minute and 180 s rules take one real second."""
    with coze_on(emulator_factory, 180.0) as server:
        yield server


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the requests it sends (nothing is mocked)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)
