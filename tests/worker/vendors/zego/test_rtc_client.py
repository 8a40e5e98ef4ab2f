"""The ZEGO RTC room client against the emulator, over real HTTP (GET, ``X[]=`` arrays)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from tests.worker.vendors.zego.support import CountingTransport, agent_client, rtc_client, started
from worker.vendors.errors import SpecError
from worker.vendors.ratelimit import LocalLimiter
from worker.vendors.zego.errors import ZegoNotFoundError


def test_describe_users_reports_who_is_in_the_room(emulator: Emulator) -> None:
    """DescribeUsers says which of the listed users are in the room (status 1) and since when."""
    emulator.control.join("room_a", "alice")
    emulator.control.join("room_a", "bob")
    rows = rtc_client(emulator.zego_rtc_url).describe_users("room_a", ["alice", "bob", "carol"])
    by_user = {row.user_id: row for row in rows}
    assert by_user["alice"].in_room and by_user["bob"].in_room
    assert not by_user["carol"].in_room
    assert by_user["alice"].login_time and by_user["alice"].login_time > 0


def test_describe_users_in_a_missing_room_is_not_found(emulator: Emulator) -> None:
    """Asking about a room that does not exist fails with ZegoNotFoundError (50001)."""
    with pytest.raises(ZegoNotFoundError) as caught:
        rtc_client(emulator.zego_rtc_url).describe_users("room_none", ["alice"])
    assert caught.value.code == 50001


def test_describe_user_num_counts_each_room(emulator: Emulator) -> None:
    """DescribeUserNum returns a count per room; a missing room counts zero."""
    emulator.control.join("room_a", "alice")
    emulator.control.join("room_a", "bob")
    counts = {
        c.room_id: c.user_count
        for c in rtc_client(emulator.zego_rtc_url).describe_user_num(["room_a", "room_b"])
    }
    assert counts == {"room_a": 2, "room_b": 0}


def test_kickout_user_removes_them(emulator: Emulator) -> None:
    """KickoutUser takes a user out of the room; the others stay."""
    emulator.control.join("room_a", "alice")
    emulator.control.join("room_a", "bob")
    client = rtc_client(emulator.zego_rtc_url)
    client.kickout_user("room_a", ["alice"], custom_reason="bye")
    rows = {r.user_id: r.in_room for r in client.describe_users("room_a", ["alice", "bob"])}
    assert rows == {"alice": False, "bob": True}


def test_close_room_removes_everyone_including_the_agent(emulator: Emulator) -> None:
    """CloseRoom empties the room, and the AI agent in it is deleted (code 1203)."""
    agents = agent_client(emulator.zego_agent_url)
    instance = started(agents)
    emulator.control.join("room_1", "user_1")
    client = rtc_client(emulator.zego_rtc_url)
    client.close_room("room_1", custom_reason="session over", room_close_callback=True)
    state = emulator.control.state()
    assert not state["rooms"].get("room_1", {}).get("users")
    deleted = [i for i in state["instances"] if i["AgentInstanceId"] == instance]
    assert deleted[0]["State"] == "deleted" and deleted[0]["DeletedCode"] == 1203
    with pytest.raises(ZegoNotFoundError):
        client.close_room("room_1")


def test_close_room_is_limited_to_one_per_second(emulator: Emulator) -> None:
    """Two CloseRoom calls are spaced by one second, so ZEGO never answers 206 (QPS limited)."""
    transport = CountingTransport()
    client = rtc_client(emulator.zego_rtc_url, transport, limiter=LocalLimiter())
    started_at = time.monotonic()
    for room in ("room_a", "room_b"):
        emulator.control.join(room, "alice")
        client.close_room(room)
    assert time.monotonic() - started_at >= 0.95
    assert transport.actions == ["CloseRoom", "CloseRoom"]  # no retry after a 206


ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("close_room", {"room_id": ""}, "RoomId"),
    ("close_room", {"room_id": "r" * 129}, "RoomId"),
    ("close_room", {"room_id": "room 1"}, "RoomId"),
    ("close_room", {"room_id": "room_1", "custom_reason": "x" * 257}, "CustomReason"),
    ("describe_user_num", {"room_ids": []}, "RoomId[]"),
    ("describe_user_num", {"room_ids": [f"r{i}" for i in range(11)]}, "RoomId[]"),
    ("describe_users", {"room_id": "room_1", "user_ids": []}, "UserId[]"),
    ("describe_users", {"room_id": "room_1", "user_ids": [f"u{i}" for i in range(11)]}, "UserId[]"),
    ("describe_users", {"room_id": "room_1", "user_ids": "alice"}, "UserId[]"),
    ("kickout_user", {"room_id": "room_1", "user_ids": [f"u{i}" for i in range(6)]}, "UserId[]"),
    ("kickout_user", {"room_id": "room_1", "user_ids": ["u1", ""]}, "UserId[][1]"),
    ("kickout_user", {"room_id": "room_1", "user_ids": ["u1"], "custom_reason": "é" * 129}, "CustomReason"),
]


@pytest.mark.parametrize(("method", "kwargs", "field"), ROWS, ids=[f"{m}:{f}" for m, _, f in ROWS])
def test_rtc_argument_limits(emulator: Emulator, method: str, kwargs: dict[str, Any], field: str) -> None:
    """RTC calls outside ZEGO's documented limits fail naming the parameter, and nothing is sent."""
    transport = CountingTransport()
    client = rtc_client(emulator.zego_rtc_url, transport)
    call: Callable[..., Any] = getattr(client, method)
    with pytest.raises(SpecError) as caught:
        call(**kwargs)
    assert caught.value.field == field
    assert transport.actions == []
