"""ZEGO RTC room callbacks (``room_login``, ``room_logout``, ``stream_create``, ``stream_close``).

They differ from the AI-agent callbacks in shape, not in trust: lower_snake_case fields, most values
strings, ``timestamp`` in seconds, and the same sha1(sort(secret, timestamp, nonce)) signature
(vendor facts, section 3.1). They name no agent instance, so the inbox orders them per room
(``rtc:<room_id>``) and the presence fold orders them by ZEGO's own sequence numbers, because they
arrive late and reordered.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.inbox.callbacks import Callback
from worker.inbox.signatures import InvalidSignature, verify_callback

EVENTS = ("room_login", "room_logout", "stream_create", "stream_close")
_USER_EVENTS = ("room_login", "room_logout")
PREFIX = "rtc:"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEY_MAX = 128  # inbox.agent_instance_id
_DEDUP_MAX = 320  # inbox.dedup_key


class MalformedRtcCallback(Exception):
    """Signed but unusable: a 4xx, since no retry of the same body will fix it."""


@dataclass(frozen=True, slots=True)
class RtcEvent:
    event: str
    room_id: str
    user_id: str
    # room_login/room_logout: user_update_seq; stream_*: stream_seq. Orders one user's (or stream's) events.
    seq: int
    session_id: str = ""
    login_time_ms: int = 0
    logout_time_ms: int = 0
    reason: str = ""
    stream_id: str = ""
    at_ms: int = 0

    @property
    def ordering_key(self) -> str:
        """The inbox stream (``agent_instance_id`` column) of the room: its callbacks apply in
        order, under one lock. A room id too long for the column is hashed."""
        return ordering_key(self.room_id)

    @property
    def dedup_key(self) -> str:
        """One event of one user (or stream) at one sequence number: ZEGO's retries share it."""
        subject = self.user_id if self.event in _USER_EVENTS else self.stream_id
        return f"rtc:{self.room_id}:{self.event}:{subject}:{self.seq}:{self.session_id}"


def ordering_key(room_id: str) -> str:
    key = PREFIX + room_id
    return key if len(key) <= _KEY_MAX else PREFIX + "#" + hashlib.sha256(room_id.encode()).hexdigest()


def is_room_key(agent_instance_id: str) -> bool:
    """Whether an inbox stream is a room's RTC callbacks rather than an agent instance's.

    AgentInstanceIds are ZEGO's numeric strings, so the prefix cannot collide with one."""
    return agent_instance_id.startswith(PREFIX)


def as_inbox_callback(payload: dict[str, Any], event: RtcEvent) -> Callback:
    """The callback as the inbox stores it: the room as its stream, no Sequence (``apply`` in
    worker/sessions/presence.py orders by ZEGO's seq numbers), the same dedup and replay guards."""
    app_id = int(payload["appid"])
    dedup = f"{app_id}:{event.dedup_key}"
    if len(dedup) > _DEDUP_MAX:
        dedup = f"{app_id}:rtc:#{hashlib.sha256(dedup.encode()).hexdigest()}"
    return Callback(
        app_id=app_id,
        event=event.event,
        agent_instance_id=event.ordering_key,
        sequence=None,
        timestamp_ms=int(payload["timestamp"]) * 1000,
        signature=str(payload["signature"]).lower(),
        payload=payload,
        dedup_key=dedup,
    )


def verify_rtc_callback(
    payload: Mapping[str, Any], *, secret_for: Callable[[int], str | None], now: float, window_seconds: int
) -> None:
    """The agent-callback verifier, fed the RTC field names; raises ``InvalidSignature``."""
    verify_callback(
        {
            "AppId": payload.get("appid"),
            "Timestamp": payload.get("timestamp"),
            "Nonce": payload.get("nonce"),
            "Signature": payload.get("signature"),
        },
        secret_for=secret_for,
        now=now,
        window_seconds=window_seconds,
    )


def _text(payload: Mapping[str, Any], name: str, *, required: bool = True, limit: int = 64) -> str:
    """A field as text, within the column that keeps it (room 128, user 64, stream 128)."""
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise MalformedRtcCallback(f"{name} is required")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedRtcCallback(f"{name} must be a string")
    text = str(value)
    if len(text) > limit or _CONTROL.search(text):
        raise MalformedRtcCallback(f"{name} must be at most {limit} printable characters")
    return text


def _number(payload: Mapping[str, Any], name: str, *, required: bool = True) -> int:
    text = _text(payload, name, required=required)
    if text == "":
        return 0
    try:
        return int(text)
    except ValueError:
        raise MalformedRtcCallback(f"{name} must be an integer") from None


def parse_rtc_event(payload: Mapping[str, Any]) -> RtcEvent:
    """The fields presence needs, checked; anything else in the payload is kept in the inbox only."""
    event = payload.get("event")
    if event not in EVENTS:
        raise MalformedRtcCallback("event must be one of " + ", ".join(EVENTS))
    room_id = _text(payload, "room_id", limit=128)
    if event in _USER_EVENTS:
        return RtcEvent(
            event=str(event),
            room_id=room_id,
            user_id=_text(payload, "user_account"),
            seq=_number(payload, "user_update_seq"),
            session_id=_text(payload, "session_id"),
            login_time_ms=_number(payload, "login_time"),
            logout_time_ms=_number(payload, "logout_time", required=event == "room_logout"),
            reason=_text(payload, "reason", required=False),
            at_ms=_number(payload, "login_time" if event == "room_login" else "logout_time"),
        )
    return RtcEvent(
        event=str(event),
        room_id=room_id,
        user_id=_text(payload, "user_id"),
        seq=_number(payload, "stream_seq"),
        stream_id=_text(payload, "stream_id", limit=128),
        reason=_text(payload, "type", required=False),
        at_ms=_number(payload, "create_time_ms" if event == "stream_create" else "destroy_timemillis"),
    )


__all__ = [
    "EVENTS",
    "InvalidSignature",
    "MalformedRtcCallback",
    "RtcEvent",
    "as_inbox_callback",
    "is_room_key",
    "ordering_key",
    "parse_rtc_event",
]
