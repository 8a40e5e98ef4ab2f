"""The emulator's RTC room callbacks over real HTTP: what ZEGO's RTC service tells a backend about
who logs in and out and which streams they publish, signed, sequenced, retried, faulty on demand.
Each body is read back with roomwarden's own parser and verifier, as its receiver will.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.emulator.test_callbacks import (
    APP_ID,
    CALLBACK_SECRET,
    Receiver,
    eventually,
    new_instance,
    receiver,
    run,
    running_world,
)
from worker.inbox.rtc_callbacks import parse_rtc_event, verify_rtc_callback

__all__ = ["receiver"]  # the fixture, shared with the AI Agent callbacks' tests

SCALE = 50.0


def room_world(url: str | None) -> Any:
    """A world whose RTC room callbacks go to ``url`` (its AI Agent callbacks nowhere)."""
    return running_world(None, scale=SCALE, rtc_url=url)


def room_bodies(receiver: Receiver, user: str | None = None) -> list[dict[str, Any]]:
    bodies = [a.body for a in receiver.arrivals if "event" in a.body]
    return [b for b in bodies if user is None or user in (b.get("user_account"), b.get("user_id"))]


def checked(body: dict[str, Any]) -> Any:
    """The body as roomwarden's receiver takes it: signature verified, fields parsed."""
    verify_rtc_callback(body, secret_for={APP_ID: CALLBACK_SECRET}.get, now=time.time(), window_seconds=600)
    return parse_rtc_event(body)


def test_a_visit_is_told_as_login_stream_create_stream_close_logout(receiver: Receiver) -> None:
    """A user joins publishing a stream and leaves: four signed callbacks, in that order, with the
    sequence numbers rising and the times in ms (the envelope's timestamp in seconds)."""

    async def scenario() -> None:
        async with room_world(receiver.url) as world:
            world.user_join("room_1", "user_1", "user_stream_1")
            world.user_leave("room_1", "user_1")
            await world.sender.drain(timeout=5)

    run(scenario())
    bodies = room_bodies(receiver, "user_1")
    assert [b["event"] for b in bodies] == ["room_login", "stream_create", "stream_close", "room_logout"]
    events = [checked(b) for b in bodies]
    assert [e.seq for e in events] == [1, 1, 2, 2]  # user_update_seq 1, 2; stream_seq 1, 2
    login, created, closed, logout = bodies
    assert all(isinstance(v, str) for b in bodies for v in b.values())
    assert abs(int(login["timestamp"]) - time.time()) < 5
    assert logout["session_id"] == login["session_id"] and logout["login_time"] == login["login_time"]
    assert int(logout["logout_time"]) >= int(login["login_time"])
    assert (logout["reason"], closed["type"]) == ("0", "0")
    assert created["stream_id"] == closed["stream_id"] == "user_stream_1"
    assert login["appid"] == str(APP_ID) and login["relogin"] == "0"


def test_an_agent_logs_in_too_and_kicked_or_dropped_users_say_why(receiver: Receiver) -> None:
    """The agent's own login is told (a receiver picks its user); a user dropped after the 100 s
    heartbeat logs out with reason 1, one put out by CloseRoom with reason 3."""

    async def scenario() -> None:
        async with room_world(receiver.url) as world:
            new_instance(world, flags={})
            world.user_join("room_1", "user_2")
            world.user_disconnect("room_1", "user_1")
            await eventually(
                lambda: any(b["event"] == "room_logout" for b in room_bodies(receiver, "user_1"))
            )
            world.close_room("room_1")
            await world.sender.drain(timeout=5)

    run(scenario())
    assert "agent_user_1" in [b.get("user_account") for b in room_bodies(receiver)]
    [dropped] = [b for b in room_bodies(receiver, "user_1") if b["event"] == "room_logout"]
    [kicked] = [b for b in room_bodies(receiver, "user_2") if b["event"] == "room_logout"]
    assert (dropped["reason"], kicked["reason"]) == ("1", "3")


def test_joining_again_on_a_new_stream_closes_the_old_one(receiver: Receiver) -> None:
    """A relogin publishing another stream: relogin "1", the old stream closed, the new one created."""

    async def scenario() -> None:
        async with room_world(receiver.url) as world:
            world.user_join("room_1", "user_1", "cam")
            world.user_join("room_1", "user_1", "phone")
            await world.sender.drain(timeout=5)

    run(scenario())
    told = [(b["event"], b.get("stream_id"), b.get("relogin")) for b in room_bodies(receiver, "user_1")]
    assert told == [
        ("room_login", None, "0"),
        ("stream_create", "cam", None),
        ("room_login", None, "1"),
        ("stream_close", "cam", None),
        ("stream_create", "phone", None),
    ]


def test_a_failed_room_callback_is_retried_with_the_same_bytes(receiver: Receiver) -> None:
    """A 500 to the logout: it comes again (same signature) after the later callbacks went ahead."""
    failed: set[str] = set()

    def answer(body: dict[str, Any]) -> int:
        if body.get("event") == "room_logout" and body["signature"] not in failed:
            failed.add(body["signature"])
            return 500
        return 200

    receiver.answer = answer

    async def scenario() -> None:
        async with room_world(receiver.url) as world:
            world.user_join("room_1", "user_1")
            world.user_leave("room_1", "user_1")
            world.user_join("room_1", "user_1")
            await world.sender.drain(timeout=5)
            [entry] = [e for e in world.sender.room_log if e["event"] == "room_logout"]
            assert [a["kind"] for a in entry["attempts"]] == ["first", "retry"]

    run(scenario())
    told = [(a.body["event"], a.status) for a in receiver.arrivals]
    assert told == [("room_login", 200), ("room_logout", 500), ("room_login", 200), ("room_logout", 200)]
    logouts = [a.raw for a in receiver.arrivals if a.body["event"] == "room_logout"]
    assert logouts[0] == logouts[1]


def test_faults_drop_duplicate_reorder_and_delay_room_callbacks(receiver: Receiver) -> None:
    """Each fault bends delivery as asked, in one room only."""

    async def scenario() -> None:
        async with room_world(receiver.url) as world:
            sender = world.sender
            sender.add_fault("reorder", event="room_logout", room_id="room_a", room=True)
            sender.add_fault("duplicate", event="room_login", room_id="room_b", room=True)
            sender.add_fault("drop", event="room_logout", room_id="room_b", room=True)
            sender.add_fault("delay", event="room_login", room_id="room_c", delay_seconds=20.0, room=True)
            for room in ("room_a", "room_b", "room_c"):
                world.user_join(room, "u")
                world.user_leave(room, "u")
                world.user_join(room, "u")
            await sender.drain(timeout=5)

    run(scenario())

    def told(room: str) -> list[tuple[str, str]]:
        bodies = [b for b in room_bodies(receiver) if b["room_id"] == room]
        return [(b["event"], b["user_update_seq"]) for b in bodies]

    assert told("room_a") == [("room_login", "1"), ("room_login", "3"), ("room_logout", "2")]
    assert told("room_b") == [("room_login", "1"), ("room_login", "1"), ("room_login", "3")]
    assert told("room_c") == [("room_logout", "2"), ("room_login", "3"), ("room_login", "1")]


def test_without_a_url_room_callbacks_are_only_logged() -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with room_world(None) as world:
            world.user_join("room_1", "user_1", "s")
            await asyncio.sleep(0.05)
            return list(world.sender.room_log)

    log = run(scenario())
    assert [(e["event"], e["outcome"]) for e in log] == [
        ("room_login", "not_sent"),
        ("stream_create", "not_sent"),
    ]
