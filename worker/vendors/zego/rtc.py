"""The ZEGO RTC room API client: CloseRoom, DescribeUserNum, DescribeUsers, KickoutUser.

Same signing, envelope, errors, limiter and logging as the AI Agent client
(:class:`worker.vendors.zego.agent.ZegoHttpClient`), but every action is a GET with all parameters in
the query and arrays written as repeated ``Name[]=`` keys. Rates per AppId are ZEGO's: CloseRoom
1/s, DescribeUsers and DescribeUserNum 10/s, KickoutUser 50/s.

Arguments are checked before sending (room and user counts, lengths), raising the same
:class:`worker.vendors.zego.specs.SpecError` as the agent specs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from worker.vendors.errors import SpecError
from worker.vendors.zego import specs
from worker.vendors.zego.agent import ZegoHttpClient
from worker.vendors.zego.errors import ZegoNotFoundError, ZegoProtocolError

_ROOM_ID = re.compile(r"[0-9A-Za-z_.-]+")


def _room_id(action: str, room_id: str, field: str = "RoomId") -> None:
    if not room_id:
        raise SpecError([(field, "must not be empty")], spec=action)
    if len(room_id.encode("utf-8")) > 128:
        raise SpecError([(field, "must be at most 128 bytes")], spec=action)
    if not _ROOM_ID.fullmatch(room_id):
        raise SpecError([(field, "may only contain digits, letters, '_', '-' and '.'")], spec=action)


def _ids(action: str, field: str, values: Sequence[str], most: int) -> None:
    if isinstance(values, str):
        raise SpecError([(field, "must be a list of ids, not one string")], spec=action)
    if not 1 <= len(values) <= most:
        raise SpecError([(field, f"must hold 1 to {most} ids, got {len(values)}")], spec=action)
    for index, value in enumerate(values):
        if not value or len(value.encode("utf-8")) > 128:
            raise SpecError([(f"{field}[{index}]", "must be 1-128 bytes")], spec=action)


def _reason(action: str, reason: str | None) -> None:
    if reason is not None and len(reason.encode("utf-8")) > 256:
        raise SpecError([("CustomReason", "must be at most 256 bytes")], spec=action)


def _rows(data: Any, name: str, action: str, request_id: str | None) -> list[dict[str, Any]]:
    rows = data.get(name) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ZegoProtocolError(
            None, f"Data.{name} missing from the answer", action=action, request_id=request_id
        )
    return [row for row in rows if isinstance(row, dict)]


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ZegoRtcClient(ZegoHttpClient):
    """Typed RTC room actions against ``https://rtc-api.zego.im`` (or a regional URL)."""

    API: ClassVar[str] = "rtc"
    RATES: ClassVar[dict[str, float]] = {
        "CloseRoom": 1.0,
        "DescribeUserNum": 10.0,
        "DescribeUsers": 10.0,
        "KickoutUser": 50.0,
    }

    def __init__(
        self, base_url: str, app_id: int, server_secret: str, *, is_test: bool | None = None, **kwargs: Any
    ) -> None:
        """``is_test`` sends ``IsTest``, which only projects created before 2021-11-17 need."""
        super().__init__(base_url, app_id, server_secret, **kwargs)
        self._extra: list[tuple[str, str]] = (
            [] if is_test is None else [("IsTest", "true" if is_test else "false")]
        )

    def close_room(
        self, room_id: str, custom_reason: str | None = None, room_close_callback: bool = False
    ) -> None:
        """Close a room: every user leaves, the AI agent included.

        A repeat that finds the room gone (5018/5024/50001) after an attempt ZEGO may have
        carried out counts as done; otherwise a missing room raises ZegoNotFoundError.
        """
        _room_id("CloseRoom", room_id)
        _reason("CloseRoom", custom_reason)
        query = [("RoomId", room_id), ("RoomCloseCallback", "true" if room_close_callback else "false")]
        if custom_reason is not None:
            query.append(("CustomReason", custom_reason))
        self._call(
            "CloseRoom",
            method="GET",
            query=[*self._extra, *query],
            done_if=lambda e: isinstance(e, ZegoNotFoundError),
        )

    def describe_user_num(self, room_ids: Sequence[str]) -> list[specs.UserCount]:
        """User counts of 1-10 rooms (a missing room counts 0)."""
        _ids("DescribeUserNum", "RoomId[]", room_ids, 10)
        data, request_id = self._call(
            "DescribeUserNum", method="GET", query=[*self._extra, *(("RoomId[]", r) for r in room_ids)]
        )
        return [
            specs.UserCount(
                room_id=str(row.get("RoomId", "")),
                user_count=_int(row.get("UserCount")) or 0,
                admin_user_count=_int(row.get("AdminUserCount")) or 0,
            )
            for row in _rows(data, "UserCountList", "DescribeUserNum", request_id)
        ]

    def describe_users(self, room_id: str, user_ids: Sequence[str]) -> list[specs.UserStatus]:
        """Whether each of 1-10 users is in the room (``status`` 1) and since when."""
        _room_id("DescribeUsers", room_id)
        _ids("DescribeUsers", "UserId[]", user_ids, 10)
        data, request_id = self._call(
            "DescribeUsers",
            method="GET",
            query=[*self._extra, ("RoomId", room_id), *(("UserId[]", u) for u in user_ids)],
        )
        return [
            specs.UserStatus(
                user_id=str(row.get("UserId", "")),
                status=_int(row.get("Status")) or 0,
                login_time=_int(row.get("LoginTime")),
                user_role=_int(row.get("UserRole")),
            )
            for row in _rows(data, "UserStatusList", "DescribeUsers", request_id)
        ]

    def kickout_user(self, room_id: str, user_ids: Sequence[str], custom_reason: str | None = None) -> None:
        """Remove 1-5 users from a room (their streams stop; room_logout reason 3)."""
        _room_id("KickoutUser", room_id)
        _ids("KickoutUser", "UserId[]", user_ids, 5)
        _reason("KickoutUser", custom_reason)
        query = [*self._extra, ("RoomId", room_id), *(("UserId[]", u) for u in user_ids)]
        if custom_reason is not None:
            query.append(("CustomReason", custom_reason))
        self._call("KickoutUser", method="GET", query=query)
