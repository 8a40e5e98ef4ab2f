"""The Coze emulator over raw HTTP: auth, envelope, validation, room rules, conversations, voices.

These talk to the emulator with plain httpx (not roomwarden's client), so that the emulator is
held to the vendor facts on its own.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.worker.vendors.coze.support import BOT, FULL, CozeServer

LOGID = re.compile(r"^\d{14}[0-9A-F]{18}$")
ID19 = re.compile(r"^\d{19}$")


def call(
    server: CozeServer,
    method: str,
    path: str,
    *,
    token: str | None = FULL,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, server.url + path, headers=headers, json=json, params=params, timeout=10)


def ok(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["code"] == 0, body
    return body


def create_room(server: CozeServer, **body: Any) -> dict[str, Any]:
    data: dict[str, Any] = ok(call(server, "POST", "/v1/audio/rooms", json={"bot_id": BOT, **body}))["data"]
    return data


# -- auth and envelope ------------------------------------------------------------------------


def test_missing_token_is_4100(coze: CozeServer) -> None:
    """A request without a bearer token is told "authentication is invalid" (4100, HTTP 200)."""
    response = call(coze, "POST", "/v1/audio/rooms", token=None, json={"bot_id": BOT})
    assert response.status_code == 200
    assert response.json()["code"] == 4100 and response.json()["msg"] == "authentication is invalid"


def test_unknown_token_is_4100(coze: CozeServer) -> None:
    """A token Coze does not know is told "authentication is invalid" (4100)."""
    body = call(coze, "GET", "/v1/audio/voices", token="pat_nope").json()
    assert body["code"] == 4100


ENDPOINTS = [
    ("POST", "/v1/audio/rooms", "createRoom"),
    ("GET", "/v1/audio/voices", "listVoice"),
    ("POST", "/v1/conversation/create", "createConversation"),
    ("GET", "/v1/conversation/retrieve", "retrieveConversation"),
    ("GET", "/v1/conversations", "listConversation"),
    ("POST", "/v1/conversation/message/list", "listMessage"),
]


@pytest.mark.parametrize(("method", "path", "permission"), ENDPOINTS, ids=[p for _, _, p in ENDPOINTS])
def test_token_without_permission_point_is_4101(
    coze: CozeServer,
    method: str,
    path: str,
    permission: str,
) -> None:
    """A token lacking an endpoint's permission point gets 4101 naming that permission."""
    body = call(coze, method, path, token="pat_nothing", json={"bot_id": BOT}).json()
    assert body["code"] == 4101 and permission in body["msg"]


def test_message_list_also_needs_chat_permission(coze: CozeServer) -> None:
    """Reading messages needs both chat and listMessage: a token without chat gets 4101 naming it."""
    body = call(coze, "POST", "/v1/conversation/message/list", token="pat_voices_only").json()
    assert body["code"] == 4101 and "chat" in body["msg"]


def test_every_answer_carries_the_same_logid_in_header_and_body(coze: CozeServer) -> None:
    """Each answer, success or error, has X-Tt-Logid equal to detail.logid, and each call gets a new one."""
    answers = [
        call(coze, "POST", "/v1/audio/rooms", json={"bot_id": BOT}),
        call(coze, "POST", "/v1/audio/rooms", token="bad"),
        call(coze, "POST", "/v1/audio/rooms", json={"bot_id": "1"}),
    ]
    logids = []
    for response in answers:
        header = response.headers["X-Tt-Logid"]
        assert LOGID.match(header), header
        assert response.json()["detail"]["logid"] == header
        logids.append(header)
    assert len(set(logids)) == 3
    assert answers[0].json()["msg"] == ""


# -- create room ------------------------------------------------------------------------------


def test_create_room_returns_ids_in_the_vendor_formats(coze: CozeServer) -> None:
    """A new room has a room_id_<digits> id, the RTC app id, a join token and a generated uid_<digits>."""
    data = create_room(coze)
    assert set(data) == {"room_id", "app_id", "token", "uid"}
    assert re.match(r"^room_id_\d+$", data["room_id"])
    assert re.match(r"^uid_\d+$", data["uid"])
    assert re.match(r"^[0-9a-f]{24}$", data["app_id"])
    assert data["token"].startswith("001" + data["app_id"])
    room = coze.room(data["room_id"])
    assert ID19.match(room["conversation_id"]) and room["state"] == "open"
    assert create_room(coze, uid="alice")["uid"] == "alice"


BAD_ROOMS = [
    ({"bot_id": None}, "bot_id"),
    ({"bot_id": 17}, "bot_id"),
    ({"conversation_id": 17}, "conversation_id"),
    ({"uid": ""}, "uid"),
    ({"config": "default"}, "config"),
    ({"config": {"room_mode": "karaoke"}}, "config.room_mode"),
    ({"config": {"audio_config": {"codec": "MP3"}}}, "config.audio_config.codec"),
    ({"config": {"video_config": {"codec": "VP9"}}}, "config.video_config.codec"),
    ({"config": {"video_config": {"stream_video_type": "side"}}}, "config.video_config.stream_video_type"),
    ({"config": {"video_config": {"video_frame_rate": 0}}}, "config.video_config.video_frame_rate"),
    ({"config": {"video_config": {"video_frame_rate": 25}}}, "config.video_config.video_frame_rate"),
    ({"config": {"video_config": {"video_frame_rate": 1.5}}}, "config.video_config.video_frame_rate"),
    (
        {"config": {"video_config": {"video_frame_expire_duration": 11}}},
        "config.video_config.video_frame_expire_duration",
    ),
    ({"config": {"turn_detection": {"type": "vad"}}}, "config.turn_detection.type"),
    ({"config": {"prologue_content": 1}}, "config.prologue_content"),
    ({"config": {"prologue_delay_duration_ms": 5001}}, "config.prologue_delay_duration_ms"),
    ({"config": {"prologue_delay_duration_ms": -1}}, "config.prologue_delay_duration_ms"),
    ({"voice_id": "123"}, "voice_id"),
]


@pytest.mark.parametrize(
    ("change", "field"), BAD_ROOMS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_ROOMS)]
)
def test_create_room_violation_is_4000_naming_the_field(
    coze: CozeServer,
    change: dict[str, Any],
    field: str,
) -> None:
    """A create-room body breaking a documented constraint gets 4000 naming the field, and no room."""
    body = {"bot_id": BOT, **change}
    answer = call(coze, "POST", "/v1/audio/rooms", json=body).json()
    assert answer["code"] == 4000 and field in answer["msg"], answer
    assert coze.state()["rooms"] == {}


def test_create_room_accepts_every_documented_option(coze: CozeServer) -> None:
    """Every seed field at its documented limits (and the SDK's s2s/translate modes) is accepted."""
    for mode in ("default", "podcast", "s2s", "translate"):
        create_room(
            coze,
            config={
                "room_mode": mode,
                "audio_config": {"codec": "AACLC"},
                "video_config": {
                    "codec": "H264",
                    "stream_video_type": "main",
                    "video_frame_rate": 1,
                    "video_frame_expire_duration": 1,
                },
                "turn_detection": {"type": "semantic_vad"},
                "prologue_content": "hi",
                "prologue_delay_duration_ms": 0,
                "translate_config": {"from": "zh", "to": "en"},
            },
        )


def test_create_room_body_must_be_json(coze: CozeServer) -> None:
    """A body that is not JSON is refused with 4000."""
    response = httpx.post(
        coze.url + "/v1/audio/rooms", content=b"bot_id=1", headers={"Authorization": f"Bearer {FULL}"}
    )
    assert response.json()["code"] == 4000


def test_unknown_bot_and_conversation(coze: CozeServer) -> None:
    """An unknown bot gets 4006 and an unknown (or someone else's) conversation 4002."""
    assert call(coze, "POST", "/v1/audio/rooms", json={"bot_id": "99"}).json()["code"] == 4006
    answer = call(
        coze, "POST", "/v1/audio/rooms", json={"bot_id": BOT, "conversation_id": "7400000000000000001"}
    )
    assert answer.json()["code"] == 4002
    theirs = ok(call(coze, "POST", "/v1/conversation/create", token="pat_noroom", json={"bot_id": BOT}))[
        "data"
    ]["id"]
    assert (
        call(coze, "POST", "/v1/audio/rooms", json={"bot_id": BOT, "conversation_id": theirs}).json()["code"]
        == 4002
    )


def test_there_is_no_teardown_endpoint(coze: CozeServer) -> None:
    """As at the vendor, a room cannot be ended through the API."""
    room = create_room(coze)
    assert call(coze, "DELETE", f"/v1/audio/rooms/{room['room_id']}").status_code == 404
    assert call(coze, "DELETE", "/v1/audio/rooms").status_code == 405


# -- room rules (180 vendor seconds take one real second) ---------------------------------------


def test_room_without_user_closes_after_three_minutes(fast_coze: CozeServer) -> None:
    """If nobody joins, the bot leaves after 3 vendor minutes and the room is kept as closed."""
    started = time.monotonic()
    room = create_room(fast_coze)
    time.sleep(0.6)  # 108 vendor seconds
    assert fast_coze.room(room["room_id"])["state"] == "open"
    closed = fast_coze.wait_closed(room["room_id"], within=2.0)
    assert time.monotonic() - started >= 0.9
    assert closed["close_reason"] == "no_user_joined" and closed["closed_at"] >= int(time.time()) - 5
    assert room["room_id"] in fast_coze.state()["rooms"]


def test_room_closes_after_180_seconds_of_silence(fast_coze: CozeServer) -> None:
    """Once the user has spoken, 180 vendor seconds without speech dissolve the room (in-room 4029)."""
    room = create_room(fast_coze)["room_id"]
    time.sleep(0.6)
    fast_coze.join(room)
    time.sleep(0.6)  # past the no-user deadline: the user is there, so the room stays
    fast_coze.say(room, "hello", "hi")
    spoke = time.monotonic()
    time.sleep(0.6)
    assert fast_coze.room(room)["state"] == "open"
    fast_coze.say(room, "still there?", "yes")  # speech restarts the silence clock
    spoke = time.monotonic()
    time.sleep(0.6)
    assert fast_coze.room(room)["state"] == "open"
    closed = fast_coze.wait_closed(room, within=2.0)
    assert time.monotonic() - spoke >= 0.9
    assert closed["close_reason"] == "silence" and closed["close_code"] == 4029 and closed["users"] == []


def test_silence_rule_still_applies_after_the_user_leaves(fast_coze: CozeServer) -> None:
    """When the last user leaves, the room stays until the silence timeout, then closes."""
    room = create_room(fast_coze, uid="u1")["room_id"]
    fast_coze.join(room, "u1")
    fast_coze.say(room, "bye", "goodbye")
    fast_coze.leave(room, "u1")
    time.sleep(0.4)
    assert fast_coze.room(room)["state"] == "open"
    assert fast_coze.wait_closed(room, within=2.0)["close_reason"] == "silence"


def test_session_update_shortens_the_silence_timeout(fast_coze: CozeServer) -> None:
    """A client that sets longest_silence_ms to 18 s sees the room close after 18 vendor seconds."""
    room = create_room(fast_coze)["room_id"]
    fast_coze.join(room)
    response = fast_coze.control.post(
        f"/_emulator/coze/rooms/{room}/session_update", json={"longest_silence_ms": 18_000}
    )
    assert response.json()["longest_silence_ms"] == 18_000
    started = time.monotonic()
    assert fast_coze.wait_closed(room, within=0.8)["close_reason"] == "silence"
    assert time.monotonic() - started < 0.8


def test_control_refuses_closed_and_unknown_rooms(fast_coze: CozeServer) -> None:
    """Nobody can speak in a room that has closed (409) or never existed (404)."""
    room = create_room(fast_coze)["room_id"]
    fast_coze.wait_closed(room, within=2.0)
    assert fast_coze.control.post(f"/_emulator/coze/rooms/{room}/join", json={}).status_code == 409
    assert (
        fast_coze.control.post("/_emulator/coze/rooms/room_id_1/say", json={"text": "x"}).status_code == 404
    )


# -- conversations and messages ---------------------------------------------------------------


def test_conversation_create_retrieve_and_list(coze: CozeServer) -> None:
    """Conversations are created with name and metadata, retrieved by id, and listed page by page."""
    created = ok(
        call(
            coze,
            "POST",
            "/v1/conversation/create",
            json={"bot_id": BOT, "name": "n", "meta_data": {"k": "v"}},
        )
    )["data"]
    assert ID19.match(created["id"]) and created["name"] == "n" and created["meta_data"] == {"k": "v"}
    assert ID19.match(created["last_section_id"]) and created["connector_id"] == "1024"
    assert 1_700_000_000 < created["created_at"] < 10_000_000_000
    fetched = ok(call(coze, "GET", "/v1/conversation/retrieve", params={"conversation_id": created["id"]}))[
        "data"
    ]
    assert fetched == created
    for _ in range(2):
        ok(call(coze, "POST", "/v1/conversation/create", json={"bot_id": BOT}))
    page = ok(call(coze, "GET", "/v1/conversations", params={"bot_id": BOT, "page_size": 2}))["data"]
    assert len(page["conversations"]) == 2 and page["has_more"]
    last = ok(call(coze, "GET", "/v1/conversations", params={"bot_id": BOT, "page_size": 2, "page_num": 2}))[
        "data"
    ]
    assert len(last["conversations"]) == 1 and not last["has_more"]
    ascending = ok(call(coze, "GET", "/v1/conversations", params={"bot_id": BOT, "sort_order": "ASC"}))[
        "data"
    ]
    assert ascending["conversations"][0]["id"] == created["id"]


@pytest.mark.parametrize(
    ("path", "method", "kwargs", "code"),
    [
        ("/v1/conversations", "GET", {"params": {"bot_id": BOT, "page_size": 51}}, 4000),
        ("/v1/conversations", "GET", {"params": {"bot_id": "99"}}, 4006),
        ("/v1/conversation/create", "POST", {"json": {"name": "n" * 101}}, 4000),
        ("/v1/conversation/create", "POST", {"json": {"messages": [{"role": "user"}] * 17}}, 4000),
        ("/v1/conversation/create", "POST", {"json": {"meta_data": {f"k{i}": "v" for i in range(17)}}}, 4003),
        ("/v1/conversation/retrieve", "GET", {"params": {"conversation_id": "7400000000000000001"}}, 4002),
        (
            "/v1/conversation/message/list",
            "POST",
            {"params": {"conversation_id": "7400000000000000001"}},
            4002,
        ),
    ],
)
def test_conversation_limits(
    coze: CozeServer, path: str, method: str, kwargs: dict[str, Any], code: int
) -> None:
    """Conversation calls outside the documented limits, or for unknown ids, get the documented code."""
    assert call(coze, method, path, **kwargs).json()["code"] == code


def test_message_list_shape_order_and_cursors(coze: CozeServer) -> None:
    """Message lists put data, first_id, last_id and has_more at the top level, newest first by default."""
    room = create_room(coze)["room_id"]
    conversation = coze.room(room)["conversation_id"]
    coze.join(room)
    for n in range(3):
        coze.say(room, f"q{n}", f"a{n}")

    def page(**body: Any) -> dict[str, Any]:
        return ok(
            call(
                coze,
                "POST",
                "/v1/conversation/message/list",
                params={"conversation_id": conversation},
                json=body,
            )
        )

    newest = page(limit=2)
    assert [m["content"] for m in newest["data"]] == ["a2", "q2"]
    assert newest["first_id"] == newest["data"][0]["id"] and newest["last_id"] == newest["data"][1]["id"]
    assert newest["has_more"] is True and "data" not in newest["detail"]
    message = newest["data"][0]
    assert set(message) == {
        "id", "conversation_id", "bot_id", "chat_id", "section_id", "role", "type", "content",
        "content_type", "meta_data", "created_at", "updated_at", "reasoning_content",
    }  # fmt: skip
    assert (
        message["role"] == "assistant" and message["type"] == "answer" and message["content_type"] == "text"
    )
    older = page(limit=2, after_id=newest["last_id"])  # the SDK's way to page on in the same order
    assert [m["content"] for m in older["data"]] == ["a1", "q1"]
    assert [m["content"] for m in page(order="asc", limit=2)["data"]] == ["q0", "a0"]
    assert [m["content"] for m in page(order="asc", before_id=older["data"][0]["id"])["data"]] == [
        "q0", "a0", "q1",
    ]  # fmt: skip
    chat = newest["data"][0]["chat_id"]
    assert [m["content"] for m in page(chat_id=chat)["data"]] == ["a2", "q2"]
    for body in ({"limit": 0}, {"limit": 51}, {"order": "new"}, {"before_id": "1", "after_id": "2"}):
        assert (
            call(
                coze,
                "POST",
                "/v1/conversation/message/list",
                params={"conversation_id": conversation},
                json=body,
            ).json()["code"]
            == 4000
        )


# -- voices -----------------------------------------------------------------------------------


def test_voice_list_filters_and_ranges(coze: CozeServer) -> None:
    """Voices come with every documented field; filters work and page_size is limited to 1-100."""
    everything = ok(call(coze, "GET", "/v1/audio/voices", params={"voice_state": "all"}))["data"]
    voices = everything["voice_list"]
    assert everything["has_more"] is False
    for voice in voices:
        assert {
            "voice_id", "name", "state", "model_type", "create_time", "update_time", "preview_text",
            "preview_audio", "language_code", "language_name", "is_system_voice", "available_training_times",
        } <= set(voice)  # fmt: skip
    default = ok(call(coze, "GET", "/v1/audio/voices"))["data"]["voice_list"]
    assert len(default) == len(voices) - 1  # the untrained ("init") voice is not listed by default
    small = ok(call(coze, "GET", "/v1/audio/voices", params={"model_type": "small", "voice_state": "all"}))[
        "data"
    ]
    assert small["voice_list"] and all(v["model_type"] == "small" for v in small["voice_list"])
    for params in (
        {"page_size": 0},
        {"page_size": 101},
        {"page_num": 0},
        {"model_type": "x"},
        {"voice_state": "x"},
    ):
        assert call(coze, "GET", "/v1/audio/voices", params=params).json()["code"] == 4000


# -- faults -----------------------------------------------------------------------------------


def test_injected_faults_hit_the_next_calls_then_stop(coze: CozeServer) -> None:
    """An injected 5000 fails exactly the next N calls of that endpoint, with the chosen HTTP status."""
    coze.fault("list_voices", 5000, count=2, http_status=503)
    first = call(coze, "GET", "/v1/audio/voices")
    assert first.status_code == 503 and first.json()["code"] == 5000 and first.headers["X-Tt-Logid"]
    assert call(coze, "GET", "/v1/audio/voices").json()["code"] == 5000
    assert call(coze, "GET", "/v1/audio/voices").json()["code"] == 0
    coze.fault("create_room", 4009, count=5)
    coze.control.delete("/_emulator/coze/faults").raise_for_status()
    assert call(coze, "POST", "/v1/audio/rooms", json={"bot_id": BOT}).json()["code"] == 0


def test_rate_limit_answers_4020_past_the_peak(coze: CozeServer) -> None:
    """With a create-room limit of 2 per minute, the third call in that minute gets 4020."""
    coze.rate_limit("create_room", 2)
    codes = [call(coze, "POST", "/v1/audio/rooms", json={"bot_id": BOT}).json()["code"] for _ in range(3)]
    assert codes == [0, 0, 4020]
