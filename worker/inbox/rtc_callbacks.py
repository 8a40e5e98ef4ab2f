"""ZEGO RTC room callbacks (``room_login``, ``room_logout``, ``stream_create``, ``stream_close``).

They differ from the AI-agent callbacks in shape, not in trust: lower_snake_case fields, most values
strings, ``timestamp`` in seconds, and the same sha1(sort(secret, timestamp, nonce)) signature
(vendor facts, section 3.1). They name no agent instance, so the inbox orders them per room
(``rtc:<room_id>``) and the presence fold orders them by ZEGO's own sequence numbers, because they
arrive late and reordered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.inbox.signatures import InvalidSignature, verify_callback

EVENTS = ("room_login", "room_logout", "stream_create", "stream_close")
_USER_EVENTS = ("room_login", "room_logout")


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
        return f"rtc:{self.room_id}"

    @property
    def dedup_key(self) -> str:
        """One event of one user (or stream) at one sequence number: ZEGO's retries share it."""
        subject = self.user_id if self.event in _USER_EVENTS else self.stream_id
        return f"rtc:{self.room_id}:{self.event}:{subject}:{self.seq}:{self.session_id}"


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


def _text(payload: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise MalformedRtcCallback(f"{name} is required")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedRtcCallback(f"{name} must be a string")
    return str(value)


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
    room_id = _text(payload, "room_id")
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
        stream_id=_text(payload, "stream_id"),
        reason=_text(payload, "type", required=False),
        at_ms=_number(payload, "create_time_ms" if event == "stream_create" else "destroy_timemillis"),
    )


__all__ = ["EVENTS", "InvalidSignature", "MalformedRtcCallback", "RtcEvent", "parse_rtc_event"]
