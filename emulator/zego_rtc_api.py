"""The ZEGO RTC server API room actions (``GET /?Action=...``) as a Starlette app.

Every parameter is in the query; arrays repeat ``Name[]=`` (``RoomId[]=a&RoomId[]=b``). Signing
and the envelope are the AI Agent API's (emulator.zego_gateway). Rate limits per AppId are the
documented ones (CloseRoom 1/s, DescribeUserNum and DescribeUsers 10/s, DescribeUserList 200/s
and 1/s per room, KickoutUser 50/s) and answer ``206`` / ``207``. Removing an agent's user from
its room (CloseRoom, KickoutUser) deletes that instance with 1203, as the vendor's agent would be
kicked out of the room. Every answer with a non-zero Code is counted in the world's ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.zego_gateway import RateLimiter, ZegoError, check_request, envelope
from emulator.zego_room_callbacks import KICKED
from emulator.zego_validation import RTC_ID
from emulator.zego_world import World

RATES = {
    "CloseRoom": 1,
    "DescribeUserNum": 10,
    "DescribeUsers": 10,
    "DescribeUserList": 200,
    "KickoutUser": 50,
}
ACTIONS = frozenset(RATES)
BAD_PARAM, TOO_LONG = 2, 3
Handler = Callable[[World, QueryParams], Any]


def _room_id(params: QueryParams) -> str:
    room_id = params.get("RoomId", "")
    if not room_id:
        raise ZegoError(BAD_PARAM, "param error: RoomId is required")
    if len(room_id) > 128:
        raise ZegoError(TOO_LONG, "param too long: RoomId")
    if not RTC_ID.fullmatch(room_id):
        raise ZegoError(BAD_PARAM, "param error: RoomId")
    return room_id


def _reason(params: QueryParams) -> None:
    if len(params.get("CustomReason", "").encode()) > 256:
        raise ZegoError(TOO_LONG, "param too long: CustomReason")


def _user_ids(params: QueryParams, most: int, too_many: int) -> list[str]:
    user_ids = params.getlist("UserId[]")
    if not user_ids or any(not u for u in user_ids):
        raise ZegoError(BAD_PARAM, "param error: UserId[] is required")
    if len(user_ids) > most:
        raise ZegoError(too_many, f"param error: at most {most} UserId[]")
    return user_ids


def _close_room(world: World, params: QueryParams) -> None:
    room_id = _room_id(params)
    _reason(params)
    if room_id not in world.rooms:
        if room_id in world.destroyed_rooms:
            raise ZegoError(5018, "room already destroyed")
        raise ZegoError(5024, "room does not exist")
    world.close_room(room_id)


def _describe_user_num(world: World, params: QueryParams) -> dict[str, Any]:
    room_ids = params.getlist("RoomId[]")
    if not 1 <= len(room_ids) <= 10 or any(not r for r in room_ids):
        raise ZegoError(BAD_PARAM, "param error: RoomId[] takes 1 to 10 rooms")
    counts = []
    for room_id in room_ids:
        room = world.rooms.get(room_id)
        counts.append({"RoomId": room_id, "UserCount": len(room.users) if room else 0, "AdminUserCount": 0})
    return {"UserCountList": counts}


def _describe_users(world: World, params: QueryParams) -> dict[str, Any]:
    room_id = _room_id(params)
    user_ids = _user_ids(params, 10, BAD_PARAM)
    room = world.rooms.get(room_id)
    if room is None:
        raise ZegoError(50001, "room does not exist")
    statuses = []
    for user_id in user_ids:
        login = room.users.get(user_id)
        statuses.append(
            {
                "UserId": user_id,
                "Status": 1 if login is not None else 0,
                "LoginTime": login or 0,
                "UserRole": 1,
            }
        )
    return {"UserStatusList": statuses}


def _describe_user_list(world: World, params: QueryParams) -> dict[str, Any]:
    room_id = _room_id(params)
    mode, limit, marker = params.get("Mode", "0"), params.get("Limit", "0"), params.get("Marker", "")
    if (
        mode not in ("0", "1")
        or not limit.isdigit()
        or int(limit) > 200
        or not (marker == "" or marker.isdigit())
    ):
        raise ZegoError(BAD_PARAM, "param error: Mode, Limit or Marker")
    room = world.rooms.get(room_id)
    users = sorted((room.users if room else {}).items(), key=lambda kv: kv[1], reverse=mode == "1")
    start = int(marker or 0)
    page = users[start : start + (int(limit) or 200)]
    end = start + len(page)
    return {
        "Marker": str(end) if end < len(users) else "",
        "UserList": [{"UserId": u, "UserName": u, "UserRole": 1} for u, _ in page],
    }


def _kickout(world: World, params: QueryParams) -> None:
    room_id = _room_id(params)
    user_ids = _user_ids(params, 5, 50011)
    _reason(params)
    room = world.rooms.get(room_id)
    if room is None:
        raise ZegoError(50001, "room does not exist")
    for user_id in user_ids:
        if user_id in room.users:
            world.user_leave(room_id, user_id, KICKED)


HANDLERS: dict[str, Handler] = {
    "CloseRoom": _close_room,
    "DescribeUserNum": _describe_user_num,
    "DescribeUsers": _describe_users,
    "DescribeUserList": _describe_user_list,
    "KickoutUser": _kickout,
}


def create_rtc_app(world: World) -> Starlette:
    limiter = RateLimiter()
    config = world.config

    async def handle(request: Request) -> Response:
        params = request.query_params
        try:
            action, app_id = check_request(params, ACTIONS, config.zego_apps, world.clock.now_s())
            if config.rate_limits:
                if not limiter.allow((app_id, action), RATES[action]):
                    raise ZegoError(206, "App QPS limited")
                room_key = (app_id, action, params.get("RoomId", ""))
                if action == "DescribeUserList" and not limiter.allow(room_key, 1):
                    raise ZegoError(207, "room QPS limited")
            data = HANDLERS[action](world, params)
        except ZegoError as error:
            world.ledger.refused("rtc", params.get("Action", ""), error.code)
            return envelope(error.code, error.message)
        return envelope(0, "success", data)

    return Starlette(routes=[Route("/", handle, methods=["GET"])])
