"""The ZEGO RTC room actions: GET with ``X[]=`` arrays, their codes, and what they do to agents."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from emulator import Emulator
from tests.emulator_fixture import ZegoApi, instance_body, register_agent, wait_for


class World:
    """An emulator with one agent instance in room_1 and the end user user_1 in it."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.agent = ZegoApi(emu.zego_agent_url)
        self.rtc = ZegoApi(emu.zego_rtc_url)
        register_agent(self.agent)
        created = self.agent.post("CreateAgentInstance", instance_body(1))
        self.instance_id: str = created["Data"]["AgentInstanceId"]
        emu.control.join("room_1", "user_1")

    def deleted_code(self) -> Any:
        for callback in self.emu.control.callbacks("AgentInstanceDeleted"):
            if callback["agent_instance_id"] == self.instance_id:
                return callback["body"]["Data"]["Code"]
        return None


@pytest.fixture
def world(emulator: Emulator) -> World:
    return World(emulator)


def test_close_room_removes_everyone_and_deletes_the_agent(world: World) -> None:
    """CloseRoom empties the room, agents included: the instance is deleted with 1203."""
    assert world.rtc.get("CloseRoom", RoomId="room_1")["Code"] == 0
    assert wait_for(world.deleted_code) == 1203
    assert world.emu.control.state()["rooms"] == {}
    status = world.agent.post("QueryAgentInstanceStatus", {"AgentInstanceId": world.instance_id})
    assert status["Code"] == 410001002


def test_close_room_codes_for_missing_rooms(emulator_factory: Callable[..., Emulator]) -> None:
    """Closing a room that never existed gives 5024; one already destroyed gives 5018."""
    world = World(emulator_factory(rate_limits=False))
    assert world.rtc.get("CloseRoom", RoomId="nowhere")["Code"] == 5024
    assert world.rtc.get("CloseRoom", RoomId="room_1")["Code"] == 0
    assert world.rtc.get("CloseRoom", RoomId="room_1")["Code"] == 5018


def test_close_room_is_limited_to_one_per_second(world: World) -> None:
    """A second CloseRoom within a second answers 206 (App QPS limited)."""
    assert world.rtc.get("CloseRoom", RoomId="nowhere")["Code"] == 5024
    assert world.rtc.get("CloseRoom", RoomId="room_1")["Code"] == 206
    assert world.deleted_code() is None


@pytest.mark.parametrize(
    ("params", "code"),
    [([], 2), ([("RoomId", "room_1"), ("CustomReason", "x" * 257)], 3), ([("RoomId", "r" * 129)], 3)],
)
def test_close_room_parameters(world: World, params: list[tuple[str, str]], code: int) -> None:
    """CloseRoom needs a RoomId (2) of at most 128 bytes and a CustomReason of at most 256 (3)."""
    assert world.rtc.get("CloseRoom", params)["Code"] == code
    assert world.deleted_code() is None


def test_describe_user_num(world: World) -> None:
    """DescribeUserNum counts users (agents included) per room; a missing room counts 0."""
    result = world.rtc.get("DescribeUserNum", [("RoomId[]", "room_1"), ("RoomId[]", "nowhere")])
    assert result["Code"] == 0
    assert result["Data"]["UserCountList"] == [
        {"RoomId": "room_1", "UserCount": 2, "AdminUserCount": 0},
        {"RoomId": "nowhere", "UserCount": 0, "AdminUserCount": 0},
    ]


@pytest.mark.parametrize("count", [0, 11])
def test_describe_user_num_takes_one_to_ten_rooms(world: World, count: int) -> None:
    """DescribeUserNum with no room or more than 10 rooms is a bad parameter (2)."""
    rooms = [("RoomId[]", f"r{i}") for i in range(count)]
    assert world.rtc.get("DescribeUserNum", rooms)["Code"] == 2


def test_describe_users(world: World) -> None:
    """DescribeUsers says who is in the room (Status 1, LoginTime) and who is not (Status 0)."""
    users = [
        ("RoomId", "room_1"),
        ("UserId[]", "user_1"),
        ("UserId[]", "agent_user_1"),
        ("UserId[]", "ghost"),
    ]
    result = world.rtc.get("DescribeUsers", users)
    assert result["Code"] == 0
    statuses = {u["UserId"]: u for u in result["Data"]["UserStatusList"]}
    assert statuses["user_1"]["Status"] == 1
    assert statuses["user_1"]["LoginTime"] > 1_600_000_000_000
    assert statuses["agent_user_1"]["Status"] == 1
    assert statuses["ghost"]["Status"] == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([("RoomId", "nowhere"), ("UserId[]", "u")], 50001),
        ([("RoomId", "room_1")], 2),
        ([("RoomId", "room_1")] + [("UserId[]", f"u{i}") for i in range(11)], 2),
        ([("UserId[]", "u")], 2),
    ],
)
def test_describe_users_codes(world: World, params: list[tuple[str, str]], code: int) -> None:
    """DescribeUsers: missing room 50001; no users, more than 10, or no RoomId is a bad parameter (2)."""
    assert world.rtc.get("DescribeUsers", params)["Code"] == code


def test_describe_user_list_pages(emulator: Emulator) -> None:
    """DescribeUserList pages by login time with a Marker; a missing room is an empty list."""
    world = World(emulator)
    for i in range(2, 5):
        emulator.control.join("room_1", f"user_{i}")
    first = world.rtc.get("DescribeUserList", [("RoomId", "room_1"), ("Limit", "3")])["Data"]
    assert [u["UserId"] for u in first["UserList"]] == ["agent_user_1", "user_1", "user_2"]
    time.sleep(1.0)  # 1 request/s per room
    rest = world.rtc.get(
        "DescribeUserList", [("RoomId", "room_1"), ("Limit", "3"), ("Marker", first["Marker"])]
    )
    assert [u["UserId"] for u in rest["Data"]["UserList"]] == ["user_3", "user_4"]
    assert rest["Data"]["Marker"] == ""
    empty = world.rtc.get("DescribeUserList", [("RoomId", "nowhere")])
    assert empty["Code"] == 0
    assert empty["Data"]["UserList"] == []


def test_describe_user_list_is_limited_per_room(world: World) -> None:
    """A second DescribeUserList for one room within a second answers 207 (room QPS limited)."""
    assert world.rtc.get("DescribeUserList", RoomId="room_1")["Code"] == 0
    assert world.rtc.get("DescribeUserList", RoomId="room_1")["Code"] == 207
    assert world.rtc.get("DescribeUserList", RoomId="room_2")["Code"] == 0


def test_kickout_agent_user_deletes_the_instance(world: World) -> None:
    """KickoutUser on the agent's AgentUserId removes it: the instance is deleted with 1203."""
    params = [("RoomId", "room_1"), ("UserId[]", "agent_user_1")]
    assert world.rtc.get("KickoutUser", params)["Code"] == 0
    assert wait_for(world.deleted_code) == 1203
    assert set(world.emu.control.state()["rooms"]["room_1"]["users"]) == {"user_1"}


def test_kickout_end_user_starts_the_idle_clock(emulator_factory: Callable[..., Emulator]) -> None:
    """Kicking the creating user out starts MaxIdleTime; the instance then goes with 1202."""
    world = World(emulator_factory(time_scale=50))
    assert world.rtc.get("KickoutUser", [("RoomId", "room_1"), ("UserId[]", "user_1")])["Code"] == 0
    assert wait_for(world.deleted_code, timeout=5) == 1202


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ([("RoomId", "room_1")] + [("UserId[]", f"u{i}") for i in range(6)], 50011),
        ([("RoomId", "room_1")], 2),
        ([("RoomId", "nowhere"), ("UserId[]", "u")], 50001),
    ],
)
def test_kickout_codes(world: World, params: list[tuple[str, str]], code: int) -> None:
    """KickoutUser takes 1-5 users (more: 50011; none: 2) in an existing room (else 50001)."""
    assert world.rtc.get("KickoutUser", params)["Code"] == code


def test_rtc_actions_are_get_only(emulator: Emulator) -> None:
    """The RTC API serves its actions over GET; the AI Agent actions are unknown there."""
    rtc = ZegoApi(emulator.zego_rtc_url)
    assert rtc.get("QueryAgentInstanceStatus")["Code"] == 100000007
    assert rtc.post_raw("CloseRoom", {"RoomId": "r"}).status_code == 405
