"""The state behind the Coze stand-in: tokens, bots, conversations, messages, voices and rooms.

Everything here lives in the emulator's one event loop (no locks). Rooms follow the vendor's
rules as the facts give them (vendor-facts 4.4 and 5.14): the bot joins at creation; if no user
joins within 3 vendor minutes the room closes; once a user has joined, ``longest_silence_ms``
(default 180000) without user speech closes it, whether or not users are still in the room. There
is no teardown API, so a closed room stays in state with its reason and time, which is what a
test (or roomwarden's reconciliation) looks at. Durations are vendor seconds scaled by the clock;
timestamps returned by the API (``created_at`` and friends) are the real wall clock in seconds.

This module must not import roomwarden code (``worker``): the emulator checks roomwarden, so a
mistake shared by both would hide.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

NO_USER_TIMEOUT_S = 180.0
"""The bot waits 3 minutes for a user (and bills them) before leaving an empty room."""
DEFAULT_LONGEST_SILENCE_MS = 180_000
RATE_WINDOW_S = 60.0
ROOM_CLOSED_CODE = 4029
"""The in-room error a client receives when the room closes after prolonged inactivity."""


class CozeConfig(Protocol):
    """What the Coze stand-in reads from the emulator's configuration (EmulatorConfig fits)."""

    @property
    def coze_tokens(self) -> Mapping[str, Set[str]]: ...

    @property
    def coze_bots(self) -> Set[str]: ...


class VendorClock(Protocol):
    """The emulator's clock (emulator.clock.Clock fits): vendor seconds to real seconds."""

    def seconds(self, vendor_s: float) -> float: ...

    async def sleep(self, vendor_s: float) -> None: ...


class IdMaker:
    """19-digit numeric ids that rise with every call, like the vendor's snowflake ids."""

    def __init__(self) -> None:
        self._last = random.randrange(7_400_000_000_000_000_000, 7_450_000_000_000_000_000)  # noqa: S311

    def __call__(self) -> str:
        self._last += random.randint(1, 4096)  # noqa: S311
        return str(self._last)


def new_logid() -> str:
    """A log id like the vendor's: UTC ``YYYYmmddHHMMSS`` and 18 upper-case hex digits (32 chars)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(9).upper()


def now_s() -> int:
    return int(time.time())


@dataclass(eq=False)
class Message:
    id: str
    conversation_id: str
    bot_id: str
    chat_id: str
    section_id: str
    role: str
    type: str
    content: str
    content_type: str = "text"
    meta_data: dict[str, str] = field(default_factory=dict)
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    reasoning_content: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "bot_id": self.bot_id,
            "chat_id": self.chat_id,
            "section_id": self.section_id,
            "role": self.role,
            "type": self.type,
            "content": self.content,
            "content_type": self.content_type,
            "meta_data": dict(self.meta_data),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reasoning_content": self.reasoning_content,
        }


@dataclass(eq=False)
class Conversation:
    id: str
    bot_id: str
    creator_token: str = field(repr=False)
    creator_id: str
    name: str
    meta_data: dict[str, str]
    connector_id: str
    last_section_id: str
    created_at: int = field(default_factory=now_s)
    updated_at: int = field(default_factory=now_s)
    messages: list[Message] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "meta_data": dict(self.meta_data),
            "creator_id": self.creator_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_section_id": self.last_section_id,
            "connector_id": self.connector_id,
        }


@dataclass(eq=False)
class Room:
    room_id: str
    app_id: str
    token: str = field(repr=False)
    uid: str
    bot_id: str
    conversation_id: str
    voice_id: str
    config: dict[str, Any]
    created_at: int
    created_v: float
    """Vendor-time (monotonic, scaled) instant of creation; the timers count from these."""
    users: dict[str, float] = field(default_factory=dict)
    ever_joined: bool = False
    last_speech_v: float | None = None
    longest_silence_ms: int = DEFAULT_LONGEST_SILENCE_MS
    state: str = "open"
    close_reason: str | None = None
    close_code: int | None = None
    closed_at: int | None = None
    timer: asyncio.Task[None] | None = field(default=None, repr=False)

    def deadline_v(self) -> float:
        if not self.ever_joined:
            return self.created_v + NO_USER_TIMEOUT_S
        assert self.last_speech_v is not None
        return self.last_speech_v + self.longest_silence_ms / 1000.0

    def as_json(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "app_id": self.app_id,
            "uid": self.uid,
            "bot_id": self.bot_id,
            "conversation_id": self.conversation_id,
            "voice_id": self.voice_id,
            "config": self.config,
            "created_at": self.created_at,
            "users": sorted(self.users),
            "ever_joined": self.ever_joined,
            "longest_silence_ms": self.longest_silence_ms,
            "state": self.state,
            "close_reason": self.close_reason,
            "close_code": self.close_code,
            "closed_at": self.closed_at,
        }


@dataclass
class Fault:
    code: int
    msg: str
    remaining: int
    http_status: int = 200


class ControlError(Exception):
    """A control call that cannot be honoured (unknown room, room closed, user not in room)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _voice(
    voice_id: str, name: str, *, language: tuple[str, str], model_type: str = "big", **extra: Any
) -> dict[str, Any]:
    created = 1_727_000_000
    voice: dict[str, Any] = {
        "voice_id": voice_id,
        "name": name,
        "state": "init",
        "model_type": model_type,
        "create_time": created,
        "update_time": created,
        "preview_text": "你好\uff0c我是你的智能助手。",
        "preview_audio": f"https://lf3-appstore-sign.oceancloudapi.com/ocean-cloud-tos/voice/{voice_id}.mp3",
        "language_code": language[0],
        "language_name": language[1],
        "is_system_voice": True,
        "available_training_times": 0,
    }
    voice.update(extra)
    return voice


ZH = ("zh", "中文")
EN = ("en", "英语")
BUILTIN_VOICES: tuple[dict[str, Any], ...] = (
    _voice("7426720361733046281", "柔美女友", language=ZH),
    _voice("7426720361733062665", "阳光男生", language=ZH),
    _voice("7426720361753903141", "Skye", language=EN),
    _voice(
        "7426725529589661723",
        "多情感女声",
        language=ZH,
        support_emotions=[
            {
                "emotion": "happy",
                "display_name": "开心",
                "emotion_scale_interval": {"min": 1, "max": 5, "default": 4},
            },
            {
                "emotion": "sad",
                "display_name": "悲伤",
                "emotion_scale_interval": {"min": 1, "max": 5, "default": 4},
            },
        ],
    ),
    _voice("7426720361732915209", "小说旁白", language=ZH, model_type="small"),
    _voice(
        "7468512265134932019",
        "my cloned voice",
        language=ZH,
        state="cloned",
        is_system_voice=False,
        available_training_times=9,
    ),
    _voice(
        "7468512265134948403",
        "untrained slot",
        language=ZH,
        model_type="small",
        is_system_voice=False,
        available_training_times=10,
    ),
)
DEFAULT_VOICE_ID = BUILTIN_VOICES[0]["voice_id"]


class CozeWorld:
    """Conversations, rooms, faults and rate limits of one emulated Coze account."""

    def __init__(self, config: CozeConfig, clock: VendorClock) -> None:
        self.config = config
        self.clock = clock
        self.new_id = IdMaker()
        self.app_id = "6705332c79516e01" + secrets.token_hex(4)
        self.conversations: dict[str, Conversation] = {}
        self.rooms: dict[str, Room] = {}
        self.voices: list[dict[str, Any]] = [dict(v) for v in BUILTIN_VOICES]
        self.faults: dict[str, deque[Fault]] = {}
        self.rate_limits: dict[str, int] = {}
        self._rate_calls: dict[str, deque[float]] = {}
        self.calls: list[dict[str, Any]] = []
        self._creator_ids: dict[str, str] = {}

    # -- time ---------------------------------------------------------------------------------
    def vendor_now(self) -> float:
        """Monotonic vendor seconds: real monotonic time divided by real seconds per vendor second."""
        return time.monotonic() / self.clock.seconds(1.0)

    # -- auth ---------------------------------------------------------------------------------
    def permissions(self, token: str) -> Set[str] | None:
        return self.config.coze_tokens.get(token)

    def bot_known(self, bot_id: str) -> bool:
        return bot_id in self.config.coze_bots

    def creator_id(self, token: str) -> str:
        if token not in self._creator_ids:
            self._creator_ids[token] = self.new_id()
        return self._creator_ids[token]

    # -- faults and rate limits ------------------------------------------------------------------
    def add_fault(self, endpoint: str, code: int, msg: str, count: int, http_status: int) -> None:
        self.faults.setdefault(endpoint, deque()).append(Fault(code, msg, count, http_status))

    def take_fault(self, endpoint: str) -> Fault | None:
        queue = self.faults.get(endpoint)
        while queue:
            fault = queue[0]
            if fault.remaining <= 0:
                queue.popleft()
                continue
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.popleft()
            return fault
        return None

    def rate_limited(self, endpoint: str) -> bool:
        """Count this call against the endpoint's per-minute limit (vendor minutes) if one is set."""
        limit = self.rate_limits.get(endpoint)
        if limit is None:
            return False
        calls = self._rate_calls.setdefault(endpoint, deque())
        now = self.vendor_now()
        while calls and now - calls[0] >= RATE_WINDOW_S:
            calls.popleft()
        if len(calls) >= limit:
            return True
        calls.append(now)
        return False

    def clear_faults(self) -> None:
        self.faults.clear()
        self.rate_limits.clear()
        self._rate_calls.clear()

    # -- conversations ------------------------------------------------------------------------
    def create_conversation(
        self,
        *,
        token: str,
        bot_id: str,
        name: str = "",
        meta_data: Mapping[str, str] | None = None,
        connector_id: str = "1024",
        messages: Sequence[Mapping[str, Any]] = (),
    ) -> Conversation:
        conversation = Conversation(
            id=self.new_id(),
            bot_id=bot_id,
            creator_token=token,
            creator_id=self.creator_id(token),
            name=name,
            meta_data=dict(meta_data or {}),
            connector_id=connector_id,
            last_section_id=self.new_id(),
        )
        for message in messages:
            conversation.messages.append(
                Message(
                    id=self.new_id(),
                    conversation_id=conversation.id,
                    bot_id=bot_id,
                    chat_id="",
                    section_id=conversation.last_section_id,
                    role=str(message["role"]),
                    type=str(message.get("type", "question" if message["role"] == "user" else "answer")),
                    content=str(message.get("content", "")),
                    content_type=str(message.get("content_type", "text")),
                    meta_data=dict(message.get("meta_data") or {}),
                )
            )
        self.conversations[conversation.id] = conversation
        return conversation

    def list_messages(
        self,
        conversation: Conversation,
        *,
        order: str,
        chat_id: str | None,
        before_id: str | None,
        after_id: str | None,
        limit: int,
    ) -> tuple[list[Message], bool]:
        """A page of messages in ``order``; ``after_id``/``before_id`` are positions in that order.

        The SDK pages by passing the previous page's ``last_id`` as ``after_id`` whatever the order,
        so "after" means "further along the listing", and ``before_id`` walks back towards its start
        (returning the ``limit`` messages just before the position, in listing order).
        """
        items = [m for m in conversation.messages if chat_id is None or m.chat_id == chat_id]
        items.sort(key=lambda m: int(m.id), reverse=order == "desc")
        if after_id is not None:
            index = _position(items, after_id, order)
            rest = items[index:]
            return rest[:limit], len(rest) > limit
        if before_id is not None:
            index = _position(items, before_id, order, strict_before=True)
            head = items[:index]
            return head[-limit:], len(head) > limit
        return items[:limit], len(items) > limit

    # -- rooms --------------------------------------------------------------------------------
    def create_room(
        self, *, bot_id: str, conversation: Conversation, voice_id: str, uid: str, config: dict[str, Any]
    ) -> Room:
        room = Room(
            room_id="room_id_" + str(random.randrange(10**17, 10**18)),  # noqa: S311
            app_id=self.app_id,
            token="001" + self.app_id + base64.b64encode(secrets.token_bytes(48)).decode(),
            uid=uid,
            bot_id=bot_id,
            conversation_id=conversation.id,
            voice_id=voice_id,
            config=config,
            created_at=now_s(),
            created_v=self.vendor_now(),
        )
        self.rooms[room.room_id] = room
        self._schedule(room)
        return room

    def room(self, room_id: str, *, open_only: bool = True) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise ControlError(404, f"unknown room {room_id}")
        if open_only and room.state != "open":
            raise ControlError(409, f"room {room_id} is closed ({room.close_reason})")
        return room

    def join(self, room_id: str, uid: str | None) -> Room:
        room = self.room(room_id)
        uid = uid or room.uid
        now = self.vendor_now()
        room.users.setdefault(uid, now)
        if not room.ever_joined:
            # Silence is counted from the first user's arrival until someone speaks.
            room.ever_joined = True
            room.last_speech_v = now
        self._schedule(room)
        return room

    def leave(self, room_id: str, uid: str | None) -> Room:
        room = self.room(room_id)
        uid = uid or room.uid
        if uid not in room.users:
            raise ControlError(409, f"user {uid} is not in room {room_id}")
        del room.users[uid]
        # The silence rule keeps running with nobody in the room: the bot stays until it fires.
        return room

    def say(self, room_id: str, uid: str | None, text: str, reply: str) -> dict[str, str]:
        room = self.room(room_id)
        uid = uid or (room.uid if room.uid in room.users else next(iter(room.users), None))
        if uid is None or uid not in room.users:
            raise ControlError(409, f"no user {uid or ''} in room {room_id} to speak")
        conversation = self.conversations[room.conversation_id]
        chat_id = self.new_id()
        made = []
        for role, kind, content in (("user", "question", text), ("assistant", "answer", reply)):
            message = Message(
                id=self.new_id(),
                conversation_id=conversation.id,
                bot_id=room.bot_id,
                chat_id=chat_id,
                section_id=conversation.last_section_id,
                role=role,
                type=kind,
                content=content,
            )
            conversation.messages.append(message)
            made.append(message.id)
        conversation.updated_at = now_s()
        room.last_speech_v = self.vendor_now()
        self._schedule(room)
        return {"chat_id": chat_id, "question_id": made[0], "answer_id": made[1]}

    def set_longest_silence(self, room_id: str, longest_silence_ms: int) -> Room:
        room = self.room(room_id)
        room.longest_silence_ms = longest_silence_ms
        self._schedule(room)
        return room

    def close(self, room: Room, reason: str) -> None:
        room.state = "closed"
        room.close_reason = reason
        room.close_code = ROOM_CLOSED_CODE if reason == "silence" else None
        room.closed_at = now_s()
        room.users.clear()

    def _schedule(self, room: Room) -> None:
        """(Re)arm the room's single timer for its current deadline."""
        if room.timer is not None and not room.timer.done():
            room.timer.cancel()
        room.timer = asyncio.get_running_loop().create_task(self._watch(room))

    async def _watch(self, room: Room) -> None:
        while room.state == "open":
            remaining = room.deadline_v() - self.vendor_now()
            if remaining <= 0:
                self.close(room, "silence" if room.ever_joined else "no_user_joined")
                return
            await self.clock.sleep(remaining)

    async def aclose(self) -> None:
        timers = [room.timer for room in self.rooms.values() if room.timer is not None]
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    # -- views --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "rooms": {room_id: room.as_json() for room_id, room in self.rooms.items()},
            "conversations": {
                cid: {**c.as_json(), "bot_id": c.bot_id, "messages": [m.as_json() for m in c.messages]}
                for cid, c in self.conversations.items()
            },
            "faults": {
                endpoint: [{"code": f.code, "msg": f.msg, "remaining": f.remaining} for f in queue]
                for endpoint, queue in self.faults.items()
            },
            "rate_limits": dict(self.rate_limits),
            "calls": list(self.calls),
        }


def _position(items: list[Message], message_id: str, order: str, *, strict_before: bool = False) -> int:
    """Index of the first item past ``message_id`` in listing order (or of the item itself, for
    ``strict_before``), also when the id is not in the list (ids rise with time)."""
    target = int(message_id)
    for index, item in enumerate(items):
        value = int(item.id)
        further = value < target if order == "desc" else value > target
        if further or (strict_before and value == target):
            return index
    return len(items)
