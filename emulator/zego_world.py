"""The state behind the ZEGO emulator: registered agents, running instances, RTC rooms.

Everything here runs in the emulator's one event loop (no locks). The rules are the vendor's
(vendor-facts 1.4, 2.1, 5.3-5.13):

- quotas per AppId: voice instances -> 410000011, digital humans -> 410001031;
- a new instance reusing a running AgentUserId kicks the OLDER one out of its room (Exception
  and AgentInstanceDeleted 1203); reusing a running AgentStreamId makes the NEWER one fail to
  push a little after creation (Exception and AgentInstanceDeleted 1206), except for digital
  humans, which are refused at once with 410001030;
- an instance whose creating user is absent from the room for MaxIdleTime (default 120 s,
  counted from creation if the user never joins) is deleted with 1202;
- a live digital human (CreateLiveDigitalHumanAgentInstance) has no user: it is deleted with 1202
  when no SendAgentInstanceTTS drove it for its MaxIdleTime (default 900 s, counted from creation
  and reset by each accepted TTS), counts against the digital-human quota, and answers 410001049
  to every other operation on it (emulator.zego_agent_api);
- rooms exist while someone (agents included) is in them; a user whose heartbeat is lost is
  dropped after 100 s; a user logging in with a running agent's AgentUserId kicks the agent.

Every login and logout (agents' too) and every stream an end user publishes is told through
``room_callbacks`` (emulator.zego_room_callbacks) as ZEGO's RTC room callbacks.

Callbacks go out through ``sender`` (emulator.zego_callbacks) and a round's events through
``conversation`` (emulator.zego_conversation); this module only decides what happens, and
tells ``ledger`` (emulator.zego_ledger) what ZEGO would bill.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from emulator.clock import Clock
from emulator.config import EmulatorConfig
from emulator.zego_callbacks import CallbackSender
from emulator.zego_conversation import Conversation
from emulator.zego_gateway import IdGenerator, ZegoError
from emulator.zego_ledger import Ledger
from emulator.zego_room_callbacks import HEARTBEAT, KICKED, NORMAL, RoomCallbacks

DEFAULT_MAX_IDLE_S = 120
LIVE_DEFAULT_MAX_IDLE_S = 900
# Not in the facts: the vendor's wording for a live digital human's idle deletion is unknown.
LIVE_IDLE_MESSAGE = "the live digital human was not driven by TTS for the max idle time"
HEARTBEAT_TIMEOUT_S = 100
STREAM_FAILURE_AFTER_S = 0.3  # vendor seconds between a duplicate-stream create and its 1206
EXCEPTION_MESSAGES = {
    1202: "the user has not been in the RTC room for the max idle time",
    1203: "agent instance was kicked out of the RTC room",
    1204: "agent failed to log into the RTC room",
    1205: "agent disconnected from the RTC room",
    1206: "agent failed to publish its stream",
    1207: "agent failed to play the user stream",
}


@dataclass
class Agent:
    agent_id: str
    name: str
    llm: dict[str, Any] | None
    tts: dict[str, Any] | None
    asr: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        return {
            "AgentId": self.agent_id,
            "Name": self.name,
            "LLM": self.llm,
            "TTS": self.tts,
            "ASR": self.asr,
        }


@dataclass(eq=False)
class Instance:
    app_id: int
    agent_instance_id: str
    agent_id: str
    agent_name: str
    user_id: str
    room_id: str
    agent_user_id: str
    agent_stream_id: str
    user_stream_id: str
    callback_config: dict[str, Any]
    advanced_config: dict[str, Any]
    digital_human: dict[str, Any] | None
    created_ms: int
    state: str = "running"  # running | shutting_down | deleted
    status: str = "IDLE"  # IDLE | LISTENING | THINKING | SPEAKING
    round: int = 0
    llm: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    asr: dict[str, Any] | None = None
    window_size: int = 20
    messages: list[dict[str, str]] = field(default_factory=list)
    deleted_code: int | None = None
    listen_sequence: dict[str, int] = field(default_factory=dict)
    live: bool = False  # a live digital human: no user, driven only by TTS
    cdn_url: str | None = None

    def next_round(self) -> int:
        """Rounds rise but are never consecutive, like the vendor's."""
        self.round += 1 + secrets.randbelow(997) + 1
        return self.round

    @property
    def max_idle_s(self) -> int:
        default = LIVE_DEFAULT_MAX_IDLE_S if self.live else DEFAULT_MAX_IDLE_S
        return int(self.advanced_config.get("MaxIdleTime") or default)

    def describe(self) -> dict[str, Any]:
        return {
            "AppId": self.app_id,
            "AgentInstanceId": self.agent_instance_id,
            "AgentId": self.agent_id,
            "UserId": self.user_id,
            "RoomId": self.room_id,
            "AgentUserId": self.agent_user_id,
            "AgentStreamId": self.agent_stream_id,
            "UserStreamId": self.user_stream_id,
            "DigitalHuman": self.digital_human,
            "State": self.state,
            "Status": self.status,
            "Round": self.round,
            "DeletedCode": self.deleted_code,
            "CreatedMs": self.created_ms,
            "MaxIdleTime": self.max_idle_s,
            "Live": self.live,
            "CdnUrl": self.cdn_url,
        }


@dataclass
class Room:
    room_id: str
    users: dict[str, int] = field(default_factory=dict)  # user id -> login time (ms)


class World:
    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.ids = IdGenerator()
        self.agents: dict[int, dict[str, Agent]] = {}
        self.instances: dict[str, Instance] = {}
        self.rooms: dict[str, Room] = {}
        self.destroyed_rooms: set[str] = set()
        self.sender = CallbackSender(config, clock)
        self.room_callbacks = RoomCallbacks(config, clock, self.sender)
        self.ledger = Ledger(clock)
        self.conversation = Conversation(self, clock)
        self._idle: dict[str, asyncio.Task[None]] = {}
        self._drops: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.sender.start()

    async def aclose(self) -> None:
        for instance in self.instances.values():
            self.conversation.cancel(instance)
        for task in [*self._tasks, *self._idle.values(), *self._drops.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.aclose()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A background task the world cancels on shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- agent registry ---------------------------------------------------------------------

    def register_agent(self, app_id: int, body: dict[str, Any]) -> None:
        agents = self.agents.setdefault(app_id, {})
        if body["AgentId"] in agents:
            raise ZegoError(410001008, "agent already exists")
        agents[body["AgentId"]] = Agent(
            body["AgentId"], body.get("Name") or "", body.get("LLM"), body.get("TTS"), body.get("ASR")
        )

    def agent(self, app_id: int, agent_id: str) -> Agent:
        agent = self.agents.get(app_id, {}).get(agent_id)
        if agent is None:
            raise ZegoError(410001009, "agent not found")
        return agent

    def update_agent(self, app_id: int, body: dict[str, Any]) -> None:
        agent = self.agent(app_id, body["AgentId"])
        if body.get("Name") is not None:
            agent.name = body["Name"]
        agent.llm = body.get("LLM", agent.llm)  # each object replaces the stored one wholesale
        agent.tts = body.get("TTS", agent.tts)
        agent.asr = body.get("ASR", agent.asr)

    def unregister_agent(self, app_id: int, agent_id: str) -> None:
        self.agent(app_id, agent_id)
        del self.agents[app_id][agent_id]

    def list_agents(self, app_id: int, limit: int | None, cursor: str | None) -> dict[str, Any]:
        agents = list(self.agents.get(app_id, {}).values())
        limit = limit or 5
        start = _decode_cursor(cursor)
        page = agents[start : start + limit]
        end = start + len(page)
        next_cursor = _encode_cursor(end) if end < len(agents) else ""
        return {"Total": len(agents), "Agents": [a.describe() for a in page], "Cursor": next_cursor}

    def query_agents(self, app_id: int, agent_ids: list[str]) -> dict[str, Any]:
        known = self.agents.get(app_id, {})
        return {"Agents": [known[i].describe() for i in agent_ids if i in known]}

    # --- instances ----------------------------------------------------------------------------

    def running(self, app_id: int) -> list[Instance]:
        return [i for i in self.instances.values() if i.app_id == app_id and i.state != "deleted"]

    def instance(self, app_id: int, instance_id: str) -> Instance:
        """The live instance, or 410001002 (unknown or deleted) / 410001041 (shutting down)."""
        instance = self.instances.get(instance_id)
        if instance is None or instance.app_id != app_id or instance.state == "deleted":
            raise ZegoError(410001002, "agent instance not found")
        if instance.state == "shutting_down":
            raise ZegoError(410001041, "agent instance is being gracefully shut down")
        return instance

    def create_instance(self, app_id: int, body: dict[str, Any], *, live: bool = False) -> Instance:
        agent = self.agent(app_id, body["AgentId"])
        running = self.running(app_id)
        rtc = body["RTC"]
        dh = body.get("DigitalHuman")
        if dh is None and sum(i.digital_human is None for i in running) >= self.config.voice_quota:
            raise ZegoError(410000011, "app online instance concurrency limit reached")
        if dh is not None:
            if sum(i.digital_human is not None for i in running) >= self.config.digital_human_quota:
                raise ZegoError(410001031, "digital human concurrency limit reached")
            if any(i.agent_stream_id == rtc["AgentStreamId"] for i in running):
                raise ZegoError(410001030, "digital human stream id duplicate")
        history = body.get("MessageHistory") or {}
        instance = Instance(
            app_id=app_id,
            agent_instance_id=self.ids.next(),
            agent_id=agent.agent_id,
            agent_name=agent.name,
            user_id="" if live else body["UserId"],
            room_id=rtc["RoomId"],
            agent_user_id=rtc["AgentUserId"],
            agent_stream_id=rtc["AgentStreamId"],
            user_stream_id="" if live else rtc["UserStreamId"],
            callback_config=dict(body.get("CallbackConfig") or {}),
            advanced_config=dict(body.get("AdvancedConfig") or {}),
            digital_human=dh,
            created_ms=self.clock.now_ms(),
            llm=body.get("LLM", agent.llm),
            tts=body.get("TTS", agent.tts),
            asr=body.get("ASR", agent.asr),
            window_size=_or(history.get("WindowSize"), 20),
            messages=[dict(m) for m in history.get("Messages") or []] if history.get("SyncMode") == 1 else [],
            live=live,
            cdn_url=(body.get("CDN") or {}).get("Url"),
        )
        for older in running:
            if older.agent_user_id == instance.agent_user_id:
                self.delete_instance(older, 1203, reason_exception=True)
        self._kick_end_user(instance.agent_user_id)
        stream_taken = any(i.agent_stream_id == instance.agent_stream_id for i in self.running(app_id))
        self.instances[instance.agent_instance_id] = instance
        self.ledger.agent_started(
            app_id,
            instance.agent_instance_id,
            instance.room_id,
            instance.user_id,
            digital_human=dh is not None,
            live=live,
        )
        self._login(instance.room_id, instance.agent_user_id)
        if live or instance.user_id not in self.rooms[instance.room_id].users:
            self._arm_idle(instance)
        if stream_taken:
            self.spawn(self._fail_push(instance))
        else:
            self.conversation.instance_created(instance)
        return instance

    def digital_human_config(self, instance: Instance) -> str:
        dh = instance.digital_human or {}
        stream = {
            "RoomId": instance.room_id,
            "StreamId": instance.agent_stream_id,
            "EncodeCode": dh.get("EncodeCode") or "H264",
            "ConfigId": dh.get("ConfigId") or "web",
        }
        raw = json.dumps(
            {"DigitalHumanId": dh.get("DigitalHumanId"), "Streams": [stream]}, separators=(",", ":")
        )
        return base64.b64encode(raw.encode()).decode()

    async def _fail_push(self, instance: Instance) -> None:
        await self.clock.sleep(STREAM_FAILURE_AFTER_S)
        self.delete_instance(instance, 1206, reason_exception=True)

    def update_instance(self, instance: Instance, body: dict[str, Any]) -> None:
        for key, attr in (("LLM", "llm"), ("TTS", "tts"), ("ASR", "asr")):
            if body.get(key) is not None:
                setattr(instance, attr, body[key])
        stream = (body.get("RTC") or {}).get("UserStreamId")
        if stream:
            instance.user_stream_id = stream

    def request_delete(self, instance: Instance, *, graceful: bool, timeout_s: int) -> None:
        """DeleteAgentInstance: at once, or (graceful) once the agent is IDLE or the timeout passes."""
        if not graceful or instance.status == "IDLE":
            self.delete_instance(instance, 0, reason_exception=False)
            return
        instance.state = "shutting_down"
        self.spawn(self._graceful(instance, timeout_s))

    async def _graceful(self, instance: Instance, timeout_s: int) -> None:
        deadline = asyncio.get_running_loop().time() + self.clock.seconds(timeout_s)
        while instance.status != "IDLE" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        self.delete_instance(instance, 0, reason_exception=False)

    def delete_instance(self, instance: Instance, code: int, *, reason_exception: bool) -> None:
        """Remove a running instance from the world and tell the callback receiver why."""
        if instance.state == "deleted":
            return
        instance.state = "deleted"
        instance.deleted_code = code
        self.ledger.agent_stopped(instance.agent_instance_id, code)
        self._disarm_idle(instance)
        self.conversation.cancel(instance)
        instance.status = "IDLE"
        still_present = any(
            i.agent_user_id == instance.agent_user_id and i.room_id == instance.room_id
            for i in self.running(instance.app_id)
        )
        if not still_present:
            self._logout(instance.room_id, instance.agent_user_id)
        if reason_exception:
            message = EXCEPTION_MESSAGES.get(code, "agent instance error")
            if code == 1202 and instance.live:
                message = LIVE_IDLE_MESSAGE
            self.sender.emit(
                instance, "Exception", {"Code": code, "Message": message, "Round": instance.round}
            )
        self.sender.emit(
            instance,
            "AgentInstanceDeleted",
            {"Code": code, "DeletedTimestamp": self.clock.now_ms(), "LatencyData": _latency(instance)},
        )

    def add_message(self, instance: Instance, role: str, content: str) -> None:
        """Append to the LLM context (GetAgentInstanceMsgList shows the last WindowSize)."""
        instance.messages.append({"Role": role, "Content": content})

    def context_window(self, instance: Instance) -> list[dict[str, str]]:
        return instance.messages[-instance.window_size :] if instance.window_size else []

    # --- rooms ----------------------------------------------------------------------------------

    def _login(self, room_id: str, user_id: str, stream_id: str | None = None) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
            self.destroyed_rooms.discard(room_id)
        room.users[user_id] = self.clock.now_ms()
        self.room_callbacks.login(self._room_app(room_id), room_id, user_id, stream_id)

    def _logout(self, room_id: str, user_id: str, reason: str = NORMAL) -> None:
        room = self.rooms.get(room_id)
        if room is None or room.users.pop(user_id, None) is None:
            return
        self.room_callbacks.logout(self._room_app(room_id), room_id, user_id, reason)
        if not room.users:
            del self.rooms[room_id]
            self.destroyed_rooms.add(room_id)

    def _room_app(self, room_id: str) -> int | None:
        """The app whose room callbacks tell of this room: an agent's in it, newest first."""
        for instance in reversed(list(self.instances.values())):
            if instance.room_id == room_id:
                return instance.app_id
        return None

    def user_join(self, room_id: str, user_id: str, stream_id: str | None = None) -> None:
        """An end user logs in (publishing ``stream_id``, if given); an agent with the same user id
        is kicked (the later login wins)."""
        drop = self._drops.pop((room_id, user_id), None)
        if drop is not None:
            drop.cancel()
        for instance in list(self.instances.values()):
            if instance.state != "deleted" and instance.agent_user_id == user_id:
                self.delete_instance(instance, 1203, reason_exception=True)
        self._login(room_id, user_id, stream_id)
        self.ledger.user_present(room_id, user_id)
        for instance in self._created_by(room_id, user_id):
            self._disarm_idle(instance)

    def user_leave(self, room_id: str, user_id: str, reason: str = NORMAL) -> None:
        """An end user (or, through KickoutUser / CloseRoom, anyone) leaves the room; ``reason``
        is the room_logout's (0 left, 1 heartbeat lost, 3 kicked out)."""
        agents = [i for i in self.instances.values() if i.state != "deleted" and i.room_id == room_id]
        for instance in agents:
            if instance.agent_user_id == user_id:
                self.delete_instance(instance, 1203, reason_exception=True)
        self._logout(room_id, user_id, reason)
        self.ledger.user_gone(room_id, user_id)
        for instance in self._created_by(room_id, user_id):
            self._arm_idle(instance)

    def _kick_end_user(self, user_id: str) -> None:
        """An agent logging in with a present end user's id kicks that user (the later login wins)."""
        for room in list(self.rooms.values()):
            if user_id in room.users:
                self.user_leave(room.room_id, user_id, KICKED)

    def user_disconnect(self, room_id: str, user_id: str) -> None:
        """Heartbeat lost: the user stays in the room for 100 s, then is dropped."""
        if (
            user_id not in (self.rooms.get(room_id) or Room(room_id)).users
            or (room_id, user_id) in self._drops
        ):
            return
        self.ledger.user_gone(room_id, user_id)  # the person is gone; ZEGO notices 100 s later

        async def drop() -> None:
            await self.clock.sleep(HEARTBEAT_TIMEOUT_S)
            self._drops.pop((room_id, user_id), None)
            self.user_leave(room_id, user_id, HEARTBEAT)

        self._drops[(room_id, user_id)] = asyncio.get_running_loop().create_task(drop())

    def close_room(self, room_id: str) -> None:
        room = self.rooms.get(room_id)
        for user_id in list(room.users) if room else []:
            self.user_leave(room_id, user_id, KICKED)

    def _created_by(self, room_id: str, user_id: str) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.state != "deleted" and not i.live and i.room_id == room_id and i.user_id == user_id
        ]

    def driven(self, instance: Instance) -> None:
        """An accepted SendAgentInstanceTTS on a live digital human: its idle clock starts again."""
        if instance.live and instance.state == "running":
            self._disarm_idle(instance)
            self._arm_idle(instance)

    def _arm_idle(self, instance: Instance) -> None:
        if instance.agent_instance_id in self._idle:
            return

        async def expire() -> None:
            await self.clock.sleep(instance.max_idle_s)
            self._idle.pop(instance.agent_instance_id, None)
            self.delete_instance(instance, 1202, reason_exception=True)

        self._idle[instance.agent_instance_id] = asyncio.get_running_loop().create_task(expire())

    def _disarm_idle(self, instance: Instance) -> None:
        task = self._idle.pop(instance.agent_instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def state(self) -> dict[str, Any]:
        return {
            "agents": {
                str(app): [a.describe() for a in agents.values()] for app, agents in self.agents.items()
            },
            "instances": [i.describe() for i in self.instances.values()],
            "rooms": {room_id: {"users": dict(room.users)} for room_id, room in self.rooms.items()},
            "callbacks": list(self.sender.log),
            "rtc_callbacks": list(self.sender.room_log),
        }


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _latency(instance: Instance) -> dict[str, Any]:
    if instance.round == 0:
        return {"LLMTTFT": 0, "LLMTPS": 0.0, "TTSAudioFirstFrameTime": 0, "TotalCost": 0}
    return {"LLMTTFT": 420, "LLMTPS": 38.5, "TTSAudioFirstFrameTime": 310, "TotalCost": 980}


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        prefix, _, value = text.partition(":")
        if prefix != "offset":
            raise ValueError(text)
        return int(value)
    except ValueError:
        raise ZegoError(410000003, "invalid parameter: Cursor is not a cursor this API returned") from None
