"""CozeClient against the Coze emulator over real HTTP: rooms, errors, retries, messages, voices."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from emulator import Emulator
from tests.emulator_fixture import COZE_BOT, COZE_FULL_TOKEN
from tests.worker.vendors.coze.support import BOT, FULL, CountingTransport, CozeServer
from worker.vendors.coze import specs
from worker.vendors.coze.client import CozeClient
from worker.vendors.coze.errors import (
    CozeAuthError,
    CozeNotFoundError,
    CozeQuotaError,
    CozeTransientError,
    CozeValidationError,
    SpecError,
)
from worker.vendors.errors import VendorValidationError
from worker.vendors.ratelimit import LocalLimiter
from worker.vendors.retries import NO_RETRY, RetryPolicy

QUICK_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05, deadline=5.0)


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def client(coze: CozeServer, transport: CountingTransport) -> Iterator[CozeClient]:
    with CozeClient(coze.url, FULL, transport=transport, retry=QUICK_RETRY) as client:
        yield client


def make(coze: CozeServer, token: str, **kwargs: Any) -> CozeClient:
    return CozeClient(coze.url, token, **kwargs)


# -- create room ------------------------------------------------------------------------------


def test_create_room_returns_what_a_user_needs_to_join(client: CozeClient, coze: CozeServer) -> None:
    """Creating a room gives its room id, RTC app id, join token and the user's uid."""
    room = client.create_room({"bot_id": BOT, "uid": "user-42", "config": {"room_mode": "default"}})
    assert room.room_id.startswith("room_id_") and room.room_id[8:].isdigit()
    assert room.app_id and room.token and room.uid == "user-42"
    assert coze.room(room.room_id)["state"] == "open"
    assert room.token not in repr(room)


def test_create_room_with_a_full_spec_is_accepted(client: CozeClient) -> None:
    """Every documented create-room field, at its limits, reaches the vendor and is accepted."""
    spec = specs.CreateRoom.model_validate(
        {
            "bot_id": BOT,
            "voice_id": "7426720361733046281",
            "config": {
                "room_mode": "podcast",
                "audio_config": {"codec": "G722"},
                "video_config": {
                    "codec": "BYTEVC1",
                    "stream_video_type": "screen",
                    "video_frame_rate": 24,
                    "video_frame_expire_duration": 10,
                },
                "turn_detection": {"type": "client_interrupt"},
                "prologue_content": "Hello!",
                "prologue_delay_duration_ms": 5000,
            },
        }
    )
    room = client.create_room(spec)
    assert room.uid.startswith("uid_") and room.uid[4:].isdigit()


def test_token_without_create_room_permission_fails_with_4101(coze: CozeServer) -> None:
    """A token lacking createRoom is refused with 4101 naming the permission, and not retried."""
    transport = CountingTransport()
    with (
        make(coze, "pat_noroom", transport=transport, retry=QUICK_RETRY) as client,
        pytest.raises(CozeAuthError) as caught,
    ):
        client.create_room({"bot_id": BOT})
    assert caught.value.code == 4101
    assert "createRoom" in caught.value.msg
    assert caught.value.logid
    assert len(transport.sent) == 1


def test_bad_token_fails_with_4100(coze: CozeServer) -> None:
    """An unknown token is refused with 4100 "authentication is invalid", and the token is not echoed."""
    with (
        make(coze, "pat_wrong_region_token", retry=QUICK_RETRY) as client,
        pytest.raises(CozeAuthError) as caught,
    ):
        client.create_room({"bot_id": BOT})
    assert caught.value.code == 4100
    assert caught.value.msg == "authentication is invalid"
    assert "pat_wrong_region_token" not in str(caught.value)


def test_unknown_bot_fails_with_4006(client: CozeClient) -> None:
    """A bot id the account does not have is refused with 4006 (not found)."""
    with pytest.raises(CozeNotFoundError) as caught:
        client.create_room({"bot_id": "7000000000000000001"})
    assert caught.value.code == 4006


def test_unknown_conversation_fails_with_4002(client: CozeClient) -> None:
    """A conversation id that does not exist is refused with 4002."""
    with pytest.raises(CozeNotFoundError) as caught:
        client.create_room({"bot_id": BOT, "conversation_id": "7400000000000000001"})
    assert caught.value.code == 4002


def test_unknown_voice_fails_with_4000_naming_voice_id(client: CozeClient) -> None:
    """A voice id that is not in the voice list is refused with 4000 naming voice_id."""
    with pytest.raises(CozeValidationError) as caught:
        client.create_room({"bot_id": BOT, "voice_id": "123"})
    assert caught.value.code == 4000 and "voice_id" in caught.value.msg


BROKEN_ROOMS = [
    ({}, "bot_id"),
    ({"bot_id": ""}, "bot_id"),
    ({"bot_id": 7348293334459310001}, "bot_id"),
    ({"conversation_id": ""}, "conversation_id"),
    ({"voice_id": ""}, "voice_id"),
    ({"uid": ""}, "uid"),
    ({"room_mode": "karaoke"}, "config.room_mode"),
    ({"config": {"room_mod": "default"}}, "config.room_mod"),
    ({"audio_config": {"codec": "MP3"}}, "config.audio_config.codec"),
    ({"video_config": {"codec": "VP9"}}, "config.video_config.codec"),
    ({"video_config": {"stream_video_type": "side"}}, "config.video_config.stream_video_type"),
    ({"video_config": {"video_frame_rate": 0}}, "config.video_config.video_frame_rate"),
    ({"video_config": {"video_frame_rate": 25}}, "config.video_config.video_frame_rate"),
    ({"video_config": {"video_frame_expire_duration": 0}}, "config.video_config.video_frame_expire_duration"),
    (
        {"video_config": {"video_frame_expire_duration": 11}},
        "config.video_config.video_frame_expire_duration",
    ),
    ({"turn_detection": {"type": "vad"}}, "config.turn_detection.type"),
    ({"prologue_content": 5}, "config.prologue_content"),
    ({"prologue_delay_duration_ms": -1}, "config.prologue_delay_duration_ms"),
    ({"prologue_delay_duration_ms": 5001}, "config.prologue_delay_duration_ms"),
    ({"prologue_delay_duration_ms": "500"}, "config.prologue_delay_duration_ms"),
]


def _room_body(change: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"bot_id": BOT}
    config: dict[str, Any] = {}
    for key, value in change.items():
        if key in ("bot_id", "conversation_id", "voice_id", "uid", "config"):
            body[key] = value
        else:
            config[key] = value
    if change == {}:
        del body["bot_id"]
    if config:
        body["config"] = config
    return body


@pytest.mark.parametrize(("change", "field"), BROKEN_ROOMS, ids=[f for _, f in BROKEN_ROOMS])
def test_broken_create_room_constraint_is_refused_before_sending(
    client: CozeClient, transport: CountingTransport, change: dict[str, Any], field: str
) -> None:
    """A create-room request breaking a documented constraint fails naming the field; nothing is sent."""
    with pytest.raises(SpecError) as caught:
        client.create_room(_room_body(change))
    assert caught.value.field == field
    assert field in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, VendorValidationError)
    assert transport.sent == []


BROKEN_LISTS = [
    ({"limit": 0}, "limit"),
    ({"limit": 51}, "limit"),
    ({"order": "newest"}, "order"),
    ({"after_id": "abc"}, "after_id"),
    ({"before_id": "7400000000000000001", "after_id": "7400000000000000002"}, "after_id"),
]


@pytest.mark.parametrize(
    ("change", "field"), BROKEN_LISTS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BROKEN_LISTS)]
)
def test_broken_message_list_constraint_is_refused_before_sending(
    client: CozeClient, transport: CountingTransport, change: dict[str, Any], field: str
) -> None:
    """A message-list request out of range fails naming the field; nothing is sent."""
    with pytest.raises(SpecError) as caught:
        client.list_messages("7400000000000000001", **change)
    assert caught.value.field == field
    assert transport.sent == []


BROKEN_VOICES = [
    ({"page_size": 0}, "page_size"),
    ({"page_size": 101}, "page_size"),
    ({"page_num": 0}, "page_num"),
    ({"model_type": "huge"}, "model_type"),
    ({"voice_state": "trained"}, "voice_state"),
]


@pytest.mark.parametrize(
    ("change", "field"), BROKEN_VOICES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BROKEN_VOICES)]
)
def test_broken_voice_list_constraint_is_refused_before_sending(
    client: CozeClient, transport: CountingTransport, change: dict[str, Any], field: str
) -> None:
    """A voice-list query out of range fails naming the field; nothing is sent."""
    with pytest.raises(SpecError) as caught:
        client.list_voices(**change)
    assert caught.value.field == field
    assert transport.sent == []


BROKEN_CONVERSATIONS = [
    ({"name": "n" * 101}, "name"),
    ({"messages": [{"role": "user", "content": "hi"}] * 17}, "messages"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role"),
    ({"meta_data": {f"k{i}": "v" for i in range(17)}}, "meta_data"),
    ({"meta_data": {"k" * 65: "v"}}, "meta_data"),
    ({"meta_data": {"k": "v" * 513}}, "meta_data"),
]


@pytest.mark.parametrize(
    ("change", "field"),
    BROKEN_CONVERSATIONS,
    ids=[f"{f}-{i}" for i, (_, f) in enumerate(BROKEN_CONVERSATIONS)],
)
def test_broken_conversation_constraint_is_refused_before_sending(
    client: CozeClient, transport: CountingTransport, change: dict[str, Any], field: str
) -> None:
    """A create-conversation request over a documented limit fails naming the field; nothing is sent."""
    with pytest.raises(SpecError) as caught:
        client.create_conversation(BOT, **change)
    assert caught.value.field == field
    assert transport.sent == []


# -- retries, faults, logging -----------------------------------------------------------------


@pytest.mark.parametrize("code", [4009, 4020, 5000])
def test_transient_code_is_retried_until_it_succeeds(
    client: CozeClient,
    transport: CountingTransport,
    coze: CozeServer,
    code: int,
) -> None:
    """When Coze is briefly overloaded (4009/4020/5000) the room is still created after retries."""
    coze.fault("create_room", code, count=2)
    room = client.create_room({"bot_id": BOT})
    assert room.room_id
    assert len(transport.sent) == 3
    codes = [call["code"] for call in coze.state()["calls"]]
    assert codes == [code, code, 0]


def test_transient_http_5xx_is_retried_for_reads(
    client: CozeClient,
    transport: CountingTransport,
    coze: CozeServer,
) -> None:
    """A 502 from the vendor's gateway on a voice listing is retried and the voices arrive."""
    coze.fault("list_voices", 5000, http_status=502)
    page = client.list_voices()
    assert page.voices
    assert len(transport.sent) == 2


def test_transient_failures_give_up_at_the_bound(coze: CozeServer) -> None:
    """If Coze keeps answering 4009, the caller gets a transient error after a bounded number of tries."""
    coze.fault("create_room", 4009, count=10)
    transport = CountingTransport()
    with (
        make(coze, FULL, transport=transport, retry=QUICK_RETRY) as client,
        pytest.raises(CozeTransientError) as caught,
    ):
        client.create_room({"bot_id": BOT})
    assert caught.value.code == 4009 and not caught.value.maybe_processed
    assert len(transport.sent) == QUICK_RETRY.attempts


def test_permanent_code_is_not_retried(
    client: CozeClient, transport: CountingTransport, coze: CozeServer
) -> None:
    """A quota error (4008, daily usage exceeded) is reported at once, without retries."""
    coze.fault("create_room", 4008)
    with pytest.raises(CozeQuotaError) as caught:
        client.create_room({"bot_id": BOT})
    assert caught.value.code == 4008
    assert len(transport.sent) == 1


def test_rate_limited_create_room_surfaces_4020(coze: CozeServer) -> None:
    """Past the vendor's per-minute peak, create-room answers 4020, a transient error."""
    coze.rate_limit("create_room", 1)
    with make(coze, FULL, retry=NO_RETRY) as client:
        client.create_room({"bot_id": BOT})
        with pytest.raises(CozeTransientError) as caught:
            client.create_room({"bot_id": BOT})
    assert caught.value.code == 4020


def test_unreachable_vendor_is_a_transient_error_that_is_retried() -> None:
    """When Coze cannot be reached at all, the client retries and then reports a transient error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = CountingTransport()
    with (
        CozeClient(f"http://127.0.0.1:{port}", FULL, transport=transport, retry=QUICK_RETRY) as client,
        pytest.raises(CozeTransientError) as caught,
    ):
        client.create_room({"bot_id": BOT})
    assert caught.value.code is None and not caught.value.maybe_processed
    assert len(transport.sent) == QUICK_RETRY.attempts


def test_each_call_logs_one_event_without_secrets(client: CozeClient) -> None:
    """Each API call logs endpoint, code, logid and duration; neither token ever appears in the logs."""
    with capture_logs() as logs:
        room = client.create_room({"bot_id": BOT})
        with pytest.raises(CozeNotFoundError):
            client.create_room({"bot_id": "7000000000000000001"})
    events = [e for e in logs if e["event"] == "coze_api_call"]
    assert [(e["endpoint"], e["code"]) for e in events] == [("create_room", 0), ("create_room", 4006)]
    assert all(e["logid"] and e["duration_ms"] >= 0 for e in events)
    text = repr(logs)
    assert FULL not in text and room.token not in text
    assert FULL not in repr(client)


# -- conversations and messages ---------------------------------------------------------------


def test_transcript_pages_through_what_was_said(client: CozeClient, coze: CozeServer) -> None:
    """What the user and the bot said in a room can be read back from its conversation, page by page."""
    conversation_id = client.create_conversation(BOT, name="support call")
    room = client.create_room({"bot_id": BOT, "conversation_id": conversation_id, "uid": "u1"})
    coze.join(room.room_id, "u1")
    said = [("Hi there", "Hello! How can I help?"), ("What time is it?", "Noon."), ("Bye", "Goodbye!")]
    for text, reply in said:
        coze.say(room.room_id, text, reply)

    first = client.list_messages(conversation_id, limit=4)
    assert len(first.messages) == 4 and first.has_more
    assert first.first_id == first.messages[0].id and first.last_id == first.messages[-1].id
    second = client.list_messages(conversation_id, after_id=first.last_id, limit=4)
    assert len(second.messages) == 2 and not second.has_more

    messages = list(client.iter_messages(conversation_id))
    assert messages == [*first.messages, *second.messages]
    assert [(m.role, m.type, m.content) for m in messages] == [
        (role, kind, content)
        for text, reply in said
        for role, kind, content in (("user", "question", text), ("assistant", "answer", reply))
    ]
    assert all(m.conversation_id == conversation_id and m.bot_id == BOT for m in messages)
    assert messages[0].chat_id == messages[1].chat_id != messages[2].chat_id
    assert all(len(m.id) == 19 and m.id.isdigit() and m.created_at > 1_700_000_000 for m in messages)
    assert list(client.iter_messages(conversation_id, after_id=messages[3].id)) == messages[4:]
    newest = client.list_messages(conversation_id, order="desc", limit=1)
    assert newest.messages[0].content == "Goodbye!"


def test_room_without_conversation_gets_its_own(client: CozeClient, coze: CozeServer) -> None:
    """A room created without a conversation still records its talk in a new conversation."""
    room = client.create_room({"bot_id": BOT})
    conversation_id = coze.room(room.room_id)["conversation_id"]
    coze.join(room.room_id)
    coze.say(room.room_id, "ping", "pong")
    assert [m.content for m in client.iter_messages(conversation_id)] == ["ping", "pong"]
    assert client.retrieve_conversation(conversation_id).id == conversation_id


def test_messages_need_list_permission(coze: CozeServer) -> None:
    """A token without listMessage/chat cannot read a transcript: 4101."""
    with make(coze, FULL) as owner:
        conversation_id = owner.create_conversation(BOT)
    with make(coze, "pat_voices_only", retry=NO_RETRY) as client, pytest.raises(CozeAuthError) as caught:
        client.list_messages(conversation_id)
    assert caught.value.code == 4101 and "listMessage" in caught.value.msg


# -- voices -----------------------------------------------------------------------------------


def test_voices_are_listed_with_every_field(client: CozeClient) -> None:
    """Listing voices shows system voices with name, language, preview and model type."""
    page = client.list_voices()
    assert not page.has_more
    names = {v.name for v in page.voices}
    assert "柔美女友" in names
    voice = next(v for v in page.voices if v.name == "柔美女友")
    assert voice.is_system_voice and voice.voice_id.isdigit() and voice.preview_audio.startswith("https://")
    assert voice.language_code and voice.model_type in ("big", "small") and voice.create_time > 0
    assert any(v.support_emotions for v in page.voices)
    small = client.list_voices(page_size=2)
    assert len(small.voices) == 2 and small.has_more
    assert all(not v.is_system_voice for v in client.list_voices(filter_system_voice=True).voices)


def test_emulator_control_drives_a_room_the_client_reads(emulator: Emulator) -> None:
    """Through the shared emulator and its control client, a scripted user's words reach the transcript."""
    with CozeClient(emulator.coze_url, COZE_FULL_TOKEN, retry=NO_RETRY) as client:
        conversation_id = client.create_conversation(COZE_BOT)
        room = client.create_room({"bot_id": COZE_BOT, "conversation_id": conversation_id, "uid": "guest"})
        emulator.control.coze_join(room.room_id, "guest")
        emulator.control.coze_say(room.room_id, "Is it open?", "Yes, until nine.")
        emulator.control.coze_leave(room.room_id, "guest")
        assert [m.content for m in client.iter_messages(conversation_id)] == [
            "Is it open?",
            "Yes, until nine.",
        ]
    state = emulator.control.coze_state()["rooms"][room.room_id]
    assert state["state"] == "open" and state["users"] == []


def test_client_side_rate_limit_spaces_calls(coze: CozeServer) -> None:
    """With a shared limiter at 10 calls/s, five voice listings take at least 0.4 s: Coze is never flooded."""
    with CozeClient(coze.url, FULL, limiter=LocalLimiter(), rate_per_second=10.0) as client:
        started = time.monotonic()
        for _ in range(5):
            client.list_voices(page_size=1)
        assert time.monotonic() - started >= 0.39
