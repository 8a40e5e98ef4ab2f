"""The Coze stand-in: audio rooms, conversations, messages and voices, plus its control endpoints.

Held to vendor-facts section 4 and 5.14:

- ``Authorization: Bearer <token>``. A missing or unknown token answers
  ``{"code": 4100, "msg": "authentication is invalid"}``; a token without the endpoint's
  permission point answers 4101 with a message naming the permission.
- Every answer carries the header ``X-Tt-Logid`` and the same value in ``detail.logid``.
- Business errors use **HTTP 200** with ``code > 0``: the vendor's SDK tests mock failures that
  way and whether the real service sends 401 for auth failures is unconfirmed (vendor-facts 6).
  Injected faults may choose another HTTP status (a 502 from a gateway, say).
- Field violations answer 4000 with a message naming the field (``config.video_config.codec``).
- There is no teardown endpoint, as at the vendor: rooms close by the rules in ``coze_world``.

Control endpoints (unauthenticated, for tests and the demo), all JSON:

- ``POST /_emulator/coze/rooms/{room_id}/join`` ``{"uid": optional}``: a user joins.
- ``POST /_emulator/coze/rooms/{room_id}/say`` ``{"text": ..., "reply": str | [str], "uid": optional}``:
  the user speaks and the bot answers; a question and an answer with one ``chat_id`` are appended
  to the room's conversation and the silence clock restarts. Answers ``{chat_id, question_id, answer_id}``.
- ``POST /_emulator/coze/rooms/{room_id}/leave`` ``{"uid": optional}``: a user leaves.
- ``POST /_emulator/coze/rooms/{room_id}/session_update`` ``{"longest_silence_ms": int}``: what a
  client's in-room ``session.update`` would set.
- ``GET /_emulator/coze/rooms/{room_id}`` and ``GET /_emulator/coze/state``: rooms (open and
  closed, with ``close_reason`` ``no_user_joined`` | ``silence`` and ``closed_at``), conversations
  with their messages, faults, and a log of API calls ``{endpoint, code, logid}``.
- ``POST /_emulator/coze/faults`` ``{"endpoint": "create_room", "code": 4009, "msg": optional,
  "count": 1, "http_status": 200}``: the next ``count`` calls of that endpoint fail so.
- ``POST /_emulator/coze/rate_limits`` ``{"endpoint": "create_room", "per_minute": N}``: calls past
  N per vendor minute answer 4020.
- ``DELETE /_emulator/coze/faults``: clears faults and rate limits.

Control errors use plain HTTP statuses (404 unknown room, 409 room closed, 400 bad body).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.coze_world import (
    DEFAULT_VOICE_ID,
    ControlError,
    Conversation,
    CozeConfig,
    CozeWorld,
    VendorClock,
    new_logid,
)

ENDPOINT_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "create_room": ("createRoom",),
    "list_voices": ("listVoice",),
    "create_conversation": ("createConversation",),
    "retrieve_conversation": ("retrieveConversation",),
    "list_conversations": ("listConversation",),
    "list_messages": ("chat", "listMessage"),
}
DEFAULT_MESSAGES = {
    4000: "Request parameter error",
    4009: "The system request limit has been reached. Please try again later.",
    4020: "The number of requests per minute (RPM) has exceeded the peak limit. Please try again later.",
    5000: "internal server error",
}
ROOM_MODES = ("default", "s2s", "podcast", "translate")
AUDIO_CODECS = ("AACLC", "G711A", "OPUS", "G722")
VIDEO_CODECS = ("H264", "BYTEVC1")
STREAM_VIDEO_TYPES = ("main", "screen")
TURN_DETECTION_TYPES = ("server_vad", "client_interrupt", "semantic_vad")


class ApiError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _bad(field: str, reason: str, code: int = 4000) -> ApiError:
    return ApiError(code, f"invalid parameter {field}: {reason}")


# -- field checks (written apart from roomwarden's specs on purpose) --------------------------


def _str(
    obj: dict[str, Any], key: str, path: str, *, required: bool = False, max_len: int | None = None
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _bad(path, "is required")
        return None
    if not isinstance(value, str):
        raise _bad(path, "must be a string")
    if required and not value:
        raise _bad(path, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise _bad(path, f"must be at most {max_len} characters")
    return value


def _enum(obj: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str | None:
    value = _str(obj, key, path)
    if value is not None and value not in allowed:
        raise _bad(path, f"must be one of {', '.join(allowed)}")
    return value


def _int(obj: dict[str, Any], key: str, path: str, low: int, high: int | None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "must be an integer")
    if value < low or (high is not None and value > high):
        raise _bad(path, f"must be between {low} and {high}" if high is not None else f"must be >= {low}")
    return value


def _obj(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    return value


def validate_room_config(config: dict[str, Any]) -> None:
    _enum(config, "room_mode", "config.room_mode", ROOM_MODES)
    audio = _obj(config, "audio_config", "config.audio_config")
    _enum(audio, "codec", "config.audio_config.codec", AUDIO_CODECS)
    video = _obj(config, "video_config", "config.video_config")
    _enum(video, "codec", "config.video_config.codec", VIDEO_CODECS)
    _enum(video, "stream_video_type", "config.video_config.stream_video_type", STREAM_VIDEO_TYPES)
    _int(video, "video_frame_rate", "config.video_config.video_frame_rate", 1, 24)
    _int(video, "video_frame_expire_duration", "config.video_config.video_frame_expire_duration", 1, 10)
    turn = _obj(config, "turn_detection", "config.turn_detection")
    _enum(turn, "type", "config.turn_detection.type", TURN_DETECTION_TYPES)
    _str(config, "prologue_content", "config.prologue_content")
    _int(config, "prologue_delay_duration_ms", "config.prologue_delay_duration_ms", 0, 5000)
    translate = _obj(config, "translate_config", "config.translate_config")
    _str(translate, "from", "config.translate_config.from")
    _str(translate, "to", "config.translate_config.to")


def _meta_data(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(path, "must be an object of string pairs")
    if len(value) > 16:
        raise _bad(path, "at most 16 pairs", code=4003)
    for key, item in value.items():
        if not 1 <= len(key) <= 64:
            raise _bad(path, "keys must be 1-64 characters", code=4003)
        if not isinstance(item, str) or not 1 <= len(item) <= 512:
            raise _bad(f"{path}.{key}", "values must be strings of 1-512 characters", code=4003)
    return dict(value)


# -- the app ----------------------------------------------------------------------------------

Handler = Callable[[Request, CozeWorld, str], Awaitable[dict[str, Any]]]


def create_coze_app(config: CozeConfig, clock: VendorClock) -> Starlette:
    """The Coze API and its control endpoints over one ``CozeWorld`` (``app.state.coze_world``)."""
    world = CozeWorld(config, clock)

    def envelope(logid: str, body: dict[str, Any], status: int = 200) -> JSONResponse:
        body.setdefault("msg", "")
        body["detail"] = {"logid": logid}
        return JSONResponse(body, status_code=status, headers={"X-Tt-Logid": logid})

    def api(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint_view(request: Request) -> Response:
            logid = new_logid()
            status = 200
            try:
                token = _bearer(request)
                permissions = world.permissions(token) if token else None
                if permissions is None:
                    raise ApiError(4100, "authentication is invalid")
                missing = [p for p in ENDPOINT_PERMISSIONS[endpoint] if p not in permissions]
                if missing:
                    raise ApiError(
                        4101,
                        "Your token does not have permission to access this resource: missing permission "
                        + ", ".join(missing)
                        + ". Please check the permission points of the token.",
                    )
                fault = world.take_fault(endpoint)
                if fault is not None:
                    status = fault.http_status
                    raise ApiError(fault.code, fault.msg)
                if world.rate_limited(endpoint):
                    raise ApiError(4020, DEFAULT_MESSAGES[4020])
                body = await handler(request, world, token)
                body.setdefault("code", 0)
            except ApiError as error:
                body = {"code": error.code, "msg": error.msg}
            world.calls.append({"endpoint": endpoint, "code": body["code"], "logid": logid})
            return envelope(logid, body, status)

        return endpoint_view

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await world.aclose()

    routes = [
        Route("/v1/audio/rooms", api("create_room", _create_room), methods=["POST"]),
        Route("/v1/audio/voices", api("list_voices", _list_voices), methods=["GET"]),
        Route("/v1/conversation/create", api("create_conversation", _create_conversation), methods=["POST"]),
        Route(
            "/v1/conversation/retrieve", api("retrieve_conversation", _retrieve_conversation), methods=["GET"]
        ),
        Route("/v1/conversations", api("list_conversations", _list_conversations), methods=["GET"]),
        Route("/v1/conversation/message/list", api("list_messages", _list_messages), methods=["POST"]),
        *_control_routes(world),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.coze_world = world
    return app


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(4000, "invalid parameter: the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(4000, "invalid parameter: the request body must be a JSON object")
    return body


def _query_int(request: Request, key: str, low: int, high: int | None, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(key, "must be an integer") from None
    return value if _int({key: value}, key, key, low, high) is not None else default


def _query_enum(request: Request, key: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(key) or None
    if value is not None and value not in allowed:
        raise _bad(key, f"must be one of {', '.join(allowed)}")
    return value


def _query_bool(request: Request, key: str) -> bool:
    raw = (request.query_params.get(key) or "false").lower()
    if raw not in ("true", "false"):
        raise _bad(key, "must be true or false")
    return raw == "true"


def _conversation_for(world: CozeWorld, conversation_id: str | None, token: str) -> Conversation:
    conversation = world.conversations.get(conversation_id or "")
    if conversation is None or conversation.creator_token != token:
        raise ApiError(4002, f"conversation {conversation_id} not found or not accessible")
    return conversation


async def _create_room(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    body = await _json_object(request)
    bot_id = _str(body, "bot_id", "bot_id", required=True)
    assert bot_id is not None
    conversation_id = _str(body, "conversation_id", "conversation_id")
    voice_id = _str(body, "voice_id", "voice_id")
    uid = _str(body, "uid", "uid")
    _str(body, "workflow_id", "workflow_id")  # deprecated 2025-09-15, still accepted
    config = _obj(body, "config", "config")
    validate_room_config(config)
    if not world.bot_known(bot_id):
        raise ApiError(4006, f"invalid bot_id {bot_id}: the bot does not exist or is not yours")
    if conversation_id is None:
        conversation = world.create_conversation(token=token, bot_id=bot_id)
    else:
        conversation = _conversation_for(world, conversation_id, token)
    if voice_id is not None and all(v["voice_id"] != voice_id for v in world.voices):
        raise _bad("voice_id", f"unknown voice {voice_id}")
    if uid == "":
        raise _bad("uid", "must not be empty")
    room = world.create_room(
        bot_id=bot_id,
        conversation=conversation,
        voice_id=voice_id or DEFAULT_VOICE_ID,
        uid=uid or "uid_" + str(random.randrange(10**16, 10**17)),  # noqa: S311
        config=config,
    )
    return {"data": {"room_id": room.room_id, "app_id": room.app_id, "token": room.token, "uid": room.uid}}


async def _list_voices(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    filter_system = _query_bool(request, "filter_system_voice")
    model_type = _query_enum(request, "model_type", ("big", "small"))
    voice_state = _query_enum(request, "voice_state", ("init", "cloned", "all")) or "cloned"
    page_num = _query_int(request, "page_num", 1, None, 1)
    page_size = _query_int(request, "page_size", 1, 100, 100)
    voices = []
    for voice in world.voices:
        if voice["is_system_voice"]:
            if filter_system:
                continue
        elif voice_state != "all" and voice["state"] != voice_state:
            continue
        if model_type is not None and voice["model_type"] != model_type:
            continue
        voices.append(voice)
    start = (page_num - 1) * page_size
    return {
        "data": {"voice_list": voices[start : start + page_size], "has_more": len(voices) > start + page_size}
    }


async def _create_conversation(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    body = await _json_object(request)
    bot_id = _str(body, "bot_id", "bot_id") or ""
    if bot_id and not world.bot_known(bot_id):
        raise ApiError(4006, f"invalid bot_id {bot_id}: the bot does not exist or is not yours")
    name = _str(body, "name", "name", max_len=100) or ""
    connector_id = _str(body, "connector_id", "connector_id") or "1024"
    meta_data = _meta_data(body.get("meta_data"), "meta_data")
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise _bad("messages", "must be an array")
    if len(messages) > 16:
        raise _bad("messages", "at most 16 messages")
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _bad(path, "must be an object")
        _enum(message, "role", f"{path}.role", ("user", "assistant"))
        if message.get("role") is None:
            raise _bad(f"{path}.role", "is required")
        _enum(message, "type", f"{path}.type", ("question", "answer"))
        _str(message, "content", f"{path}.content")
        _enum(message, "content_type", f"{path}.content_type", ("text", "object_string", "card"))
        _meta_data(message.get("meta_data"), f"{path}.meta_data")
    conversation = world.create_conversation(
        token=token,
        bot_id=bot_id,
        name=name,
        meta_data=meta_data,
        connector_id=connector_id,
        messages=messages,
    )
    return {"data": conversation.as_json()}


async def _retrieve_conversation(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    conversation_id = request.query_params.get("conversation_id")
    if not conversation_id:
        raise _bad("conversation_id", "is required")
    return {"data": _conversation_for(world, conversation_id, token).as_json()}


async def _list_conversations(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    bot_id = request.query_params.get("bot_id")
    if not bot_id:
        raise _bad("bot_id", "is required")
    if not world.bot_known(bot_id):
        raise ApiError(4006, f"invalid bot_id {bot_id}: the bot does not exist or is not yours")
    page_num = _query_int(request, "page_num", 1, None, 1)
    page_size = _query_int(request, "page_size", 1, 50, 50)
    sort_order = _query_enum(request, "sort_order", ("ASC", "DESC")) or "DESC"
    connector_id = request.query_params.get("connector_id") or "1024"
    found = [
        c
        for c in world.conversations.values()
        if c.bot_id == bot_id and c.creator_token == token and c.connector_id == connector_id
    ]
    found.sort(key=lambda c: int(c.id), reverse=sort_order == "DESC")
    start = (page_num - 1) * page_size
    page = found[start : start + page_size]
    return {
        "data": {"conversations": [c.as_json() for c in page], "has_more": len(found) > start + page_size}
    }


async def _list_messages(request: Request, world: CozeWorld, token: str) -> dict[str, Any]:
    conversation_id = request.query_params.get("conversation_id")
    if not conversation_id:
        raise _bad("conversation_id", "is required")
    body = await _json_object(request)
    order = _enum(body, "order", "order", ("asc", "desc")) or "desc"
    chat_id = _str(body, "chat_id", "chat_id")
    before_id = _str(body, "before_id", "before_id")
    after_id = _str(body, "after_id", "after_id")
    for key, value in (("before_id", before_id), ("after_id", after_id)):
        if value is not None and not value.isdigit():
            raise _bad(key, "must be a message id")
    if before_id is not None and after_id is not None:
        raise _bad("before_id", "cannot be combined with after_id")
    limit = _int(body, "limit", "limit", 1, 50) or 50
    conversation = _conversation_for(world, conversation_id, token)
    messages, has_more = world.list_messages(
        conversation, order=order, chat_id=chat_id, before_id=before_id, after_id=after_id, limit=limit
    )
    # The one Coze endpoint whose page sits at the top level, next to code and msg.
    return {
        "data": [m.as_json() for m in messages],
        "first_id": messages[0].id if messages else "",
        "last_id": messages[-1].id if messages else "",
        "has_more": has_more,
    }


# -- control ----------------------------------------------------------------------------------


def _control_routes(world: CozeWorld) -> list[Route]:
    def control(
        handler: Callable[[Request, dict[str, Any]], Any],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def view(request: Request) -> Response:
            try:
                raw = await request.body()
                body = json.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise ControlError(400, "body must be a JSON object")
                result = handler(request, body)
            except ControlError as error:
                return JSONResponse({"error": error.message}, status_code=error.status)
            except (ValueError, KeyError, TypeError) as error:
                return JSONResponse({"error": f"bad control request: {error}"}, status_code=400)
            return JSONResponse(result)

        return view

    def room_id(request: Request) -> str:
        return str(request.path_params["room_id"])

    def join(request: Request, body: dict[str, Any]) -> Any:
        return world.join(room_id(request), body.get("uid")).as_json()

    def leave(request: Request, body: dict[str, Any]) -> Any:
        return world.leave(room_id(request), body.get("uid")).as_json()

    def say(request: Request, body: dict[str, Any]) -> Any:
        reply = body.get("reply", "")
        if isinstance(reply, list):
            reply = " ".join(str(part) for part in reply)
        return world.say(room_id(request), body.get("uid"), str(body["text"]), str(reply))

    def session_update(request: Request, body: dict[str, Any]) -> Any:
        value = body["longest_silence_ms"]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ControlError(400, "longest_silence_ms must be a positive integer")
        return world.set_longest_silence(room_id(request), value).as_json()

    def room_state(request: Request, _body: dict[str, Any]) -> Any:
        return world.room(room_id(request), open_only=False).as_json()

    def state(_request: Request, _body: dict[str, Any]) -> Any:
        return world.state()

    def endpoint_of(body: dict[str, Any]) -> str:
        endpoint = str(body["endpoint"])
        if endpoint not in ENDPOINT_PERMISSIONS:
            raise ControlError(400, f"endpoint must be one of {', '.join(ENDPOINT_PERMISSIONS)}")
        return endpoint

    def add_fault(_request: Request, body: dict[str, Any]) -> Any:
        code = int(body["code"])
        world.add_fault(
            endpoint_of(body),
            code,
            str(body.get("msg") or DEFAULT_MESSAGES.get(code, f"error {code}")),
            int(body.get("count", 1)),
            int(body.get("http_status", 200)),
        )
        return {"faults": world.state()["faults"]}

    def clear_faults(_request: Request, _body: dict[str, Any]) -> Any:
        world.clear_faults()
        return {"faults": {}}

    def rate_limit(_request: Request, body: dict[str, Any]) -> Any:
        world.rate_limits[endpoint_of(body)] = int(body["per_minute"])
        return {"rate_limits": dict(world.rate_limits)}

    prefix = "/_emulator/coze"
    return [
        Route(prefix + "/rooms/{room_id}/join", control(join), methods=["POST"]),
        Route(prefix + "/rooms/{room_id}/leave", control(leave), methods=["POST"]),
        Route(prefix + "/rooms/{room_id}/say", control(say), methods=["POST"]),
        Route(prefix + "/rooms/{room_id}/session_update", control(session_update), methods=["POST"]),
        Route(prefix + "/rooms/{room_id}", control(room_state), methods=["GET"]),
        Route(prefix + "/state", control(state), methods=["GET"]),
        Route(prefix + "/faults", control(add_fault), methods=["POST"]),
        Route(prefix + "/faults", control(clear_faults), methods=["DELETE"]),
        Route(prefix + "/rate_limits", control(rate_limit), methods=["POST"]),
    ]
