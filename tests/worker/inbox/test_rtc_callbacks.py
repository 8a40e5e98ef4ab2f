"""ZEGO RTC room callbacks: signed like agent callbacks with lower-case fields, parsed to presence events."""

from __future__ import annotations

from typing import Any

import pytest

from worker.inbox.rtc_callbacks import MalformedRtcCallback, parse_rtc_event, verify_rtc_callback
from worker.inbox.signatures import InvalidSignature, callback_signature

APP_ID = 1234567
SECRET = "rtc-secret"
NOW = 1_780_000_000.0


def login(**changes: Any) -> dict[str, Any]:
    timestamp = str(int(NOW))
    payload: dict[str, Any] = {
        "event": "room_login",
        "appid": str(APP_ID),
        "timestamp": timestamp,
        "nonce": "77",
        "signature": callback_signature(SECRET, timestamp, "77"),
        "room_id": "room-1",
        "room_seq": "9001",
        "user_account": "user-1",
        "session_id": "s-1",
        "login_time": "1780000000123",
        "user_update_seq": "3",
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


def verify(payload: dict[str, Any]) -> None:
    verify_rtc_callback(payload, secret_for={APP_ID: SECRET}.get, now=NOW, window_seconds=600)


def test_a_signed_rtc_callback_with_seconds_timestamp_verifies() -> None:
    """ZEGO's RTC callback, signed with the app's callback secret and a seconds timestamp, is accepted."""
    verify(login())


def test_a_wrong_signature_or_unknown_app_is_refused() -> None:
    """Anyone can POST the route; a forged signature or another app's id gets a clear refusal."""
    with pytest.raises(InvalidSignature) as forged:
        verify(login(signature="0" * 40))
    assert forged.value.reason == "bad_signature"
    with pytest.raises(InvalidSignature) as unknown:
        verify(login(appid="42"))
    assert unknown.value.reason == "unknown_app"


def test_a_login_parses_to_an_ordered_event_keyed_per_room() -> None:
    """The string values become numbers presence can order by; retries share a dedup key."""
    event = parse_rtc_event(login())
    assert (event.event, event.user_id, event.seq, event.login_time_ms) == (
        "room_login",
        "user-1",
        3,
        1780000000123,
    )
    assert event.ordering_key == "rtc:room-1"
    assert parse_rtc_event(login(nonce="other")).dedup_key == event.dedup_key
    assert parse_rtc_event(login(user_update_seq="5")).dedup_key != event.dedup_key


def test_stream_events_order_by_stream_seq() -> None:
    """A stream_create names the user's stream and carries stream_seq as its order."""
    event = parse_rtc_event(
        {
            "event": "stream_create",
            "room_id": "room-1",
            "user_id": "user-1",
            "stream_id": "st-2",
            "stream_seq": "7",
            "create_time_ms": "1780000000500",
        }
    )
    assert (event.stream_id, event.seq, event.at_ms) == ("st-2", 7, 1780000000500)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event": "room_create"}, "event must be"),
        ({"user_account": None}, "user_account is required"),
        ({"user_update_seq": "x"}, "user_update_seq must be an integer"),
        ({"event": "room_logout"}, "logout_time is required"),
    ],
)
def test_unusable_callbacks_are_malformed(changes: dict[str, Any], message: str) -> None:
    """A signed callback missing what presence needs is a 4xx with the field named, not a silent drop."""
    with pytest.raises(MalformedRtcCallback, match=message):
        parse_rtc_event(login(**changes))
