"""ZEGO AI Agent callbacks as the vendor sends them: signed, sequenced, retried, sometimes faulty.

Every callback carries the full top level (vendor facts 2): ``AppId, AgentId, Name,
AgentInstanceId, AgentUserId, RoomId, Event, Nonce, Timestamp`` (ms, real wall clock, so a
receiver's freshness window applies), ``Signature`` (sha1 of the sorted, concatenated
``[callback_secret, str(Timestamp), Nonce]``), ``Sequence`` (ascending per instance, with gaps)
and ``Data``. The body is serialised once, when the callback is built, so a retry re-sends the
very same bytes, signature included.

Delivery, per instance:

- First attempts go out one at a time in the order the callbacks were built; any 2xx is success.
- A non-2xx answer or a connection error starts that callback's retries at +2, +4, +8, +16 and
  +32 vendor seconds after the previous attempt (five retries), then it is dropped. Retries run
  beside the instance's later callbacks rather than holding them back, so a receiver that failed
  once sees that callback again *after* newer ones: it has to order by Sequence, not by arrival.
- Faults set through the control endpoints bend this on purpose: ``drop`` (built and logged,
  never sent), ``duplicate`` (sent twice in a row, identical), ``reorder`` (held back until the
  instance's next callback has gone out) and ``delay`` (held for ``delay_seconds`` vendor seconds
  while later callbacks go ahead). A fault may name one event and one instance, and affects
  ``count`` callbacks.

``CallbackConfig`` gates the chatty events (``ASRResult``, ``LLMResult``, ``Interrupted``,
``UserSpeakAction``, ``AgentInstanceStatus``, ``UserAudioData``): each is built only when its flag
is 1. ``AgentInstanceCreated``, ``AgentInstanceDeleted``, ``Exception`` and
``AgentInstanceMetaInfo`` have no flag and are always built (the caller decides whether MetaInfo
applies). After an instance's ``AgentInstanceDeleted`` nothing more is built for it.

``log`` keeps every callback built, with its fault and each delivery attempt, for the control
state endpoint. With no callback URL configured, callbacks are only logged.

The RTC room callbacks (``emulator.zego_room_callbacks`` builds them) travel the same way through
``emit_room``: one lane per room, the same retries, their own faults (``room_faults``, which may
name a room) and their own log (``room_log``), to ``rtc_callback_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import httpx
import structlog

from emulator.clock import Clock
from emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from emulator.zego_world import Instance

log = structlog.get_logger(__name__)

FaultMode = Literal["drop", "duplicate", "reorder", "delay"]
FAULT_MODES: frozenset[str] = frozenset({"drop", "duplicate", "reorder", "delay"})

# Vendor seconds between consecutive attempts after a failed one (vendor facts 5.12).
RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)
# A callback held back by a ``reorder`` fault goes out on its own if nothing follows it this long.
REORDER_HOLD_MAX = 5.0
# Real seconds one HTTP attempt may take before it counts as a connection error.
ATTEMPT_TIMEOUT = 5.0

GATED_EVENTS: frozenset[str] = frozenset(
    {"ASRResult", "LLMResult", "Interrupted", "UserSpeakAction", "AgentInstanceStatus", "UserAudioData"}
)
ROOM_EVENTS: frozenset[str] = frozenset({"room_login", "room_logout", "stream_create", "stream_close"})
ALL_EVENTS: frozenset[str] = GATED_EVENTS | {
    "Exception",
    "AgentInstanceCreated",
    "AgentInstanceDeleted",
    "AgentInstanceMetaInfo",
}


def callback_signature(callback_secret: str, timestamp: int | str, nonce: str) -> str:
    """sha1 over the sorted, concatenated ``[secret, str(timestamp), nonce]``, as ZEGO signs callbacks."""
    parts = sorted([callback_secret, str(timestamp), nonce])
    return hashlib.sha1("".join(parts).encode(), usedforsecurity=False).hexdigest()


@dataclass
class CallbackFault:
    """One injected delivery fault; ``count`` is what is left of it."""

    mode: FaultMode
    event: str | None = None
    count: int = 1
    delay_seconds: float = 0.0
    # One instance's callbacks only: a bench losing one session's deletion among many running.
    agent_instance_id: str | None = None

    # RTC room callbacks: one room's only.
    room_id: str | None = None

    def matches(self, event: str, instance_id: str) -> bool:
        """``instance_id`` is the room's id for a room callback's fault."""
        subject = self.agent_instance_id if self.room_id is None else self.room_id
        return (
            self.count > 0
            and (self.event is None or self.event == event)
            and (subject is None or subject == instance_id)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "event": self.event,
            "count": self.count,
            "delay_seconds": self.delay_seconds,
            "agent_instance_id": self.agent_instance_id,
            "room_id": self.room_id,
        }


@dataclass(eq=False)
class _Outgoing:
    """A built callback on its way out: the log entry it updates and the bytes it sends."""

    entry: dict[str, Any]
    body: bytes
    url: str | None
    fault: FaultMode | None


class CallbackSender:
    """Builds, signs, sequences and delivers callbacks; all of it inside the emulator's event loop."""

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self.faults: list[CallbackFault] = []
        self.log: list[dict[str, Any]] = []
        self.room_faults: list[CallbackFault] = []
        self.room_log: list[dict[str, Any]] = []
        self._sequences: dict[str, int] = {}
        self._deleted: set[str] = set()
        self._lanes: dict[str, asyncio.Queue[_Outgoing | None]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._rng = random.Random()  # noqa: S311 - sequence gaps, not security

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT)

    async def aclose(self) -> None:
        """Stop delivering: pending retries and held callbacks are abandoned, later ones only logged."""
        self._closed = True
        tasks = [*self._lane_tasks.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._lane_tasks.clear()
        self._lanes.clear()
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (real seconds) until every callback built so far is settled: delivered or dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(
            entry["outcome"] in ("pending", "held", "retrying") for entry in [*self.log, *self.room_log]
        ):
            if loop.time() > deadline:
                raise TimeoutError("callbacks still in flight")
            await asyncio.sleep(0.005)

    # -- faults ------------------------------------------------------------------------------

    def add_fault(
        self,
        mode: str,
        *,
        event: str | None = None,
        count: int = 1,
        delay_seconds: float = 0.0,
        agent_instance_id: str | None = None,
        room_id: str | None = None,
        room: bool = False,
    ) -> CallbackFault:
        """A fault on the AI Agent's callbacks, or with ``room`` on the RTC room callbacks."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown callback fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        if event is not None and event not in (ROOM_EVENTS if room else ALL_EVENTS):
            raise ValueError(f"unknown callback event {event!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if delay_seconds < 0:
            raise ValueError("delay_seconds must not be negative")
        fault = CallbackFault(
            mode=cast(FaultMode, mode),
            event=event,
            count=count,
            delay_seconds=delay_seconds,
            agent_instance_id=agent_instance_id,
            room_id=room_id,
        )
        (self.room_faults if room else self.faults).append(fault)
        return fault

    def clear_faults(self, *, room: bool = False) -> None:
        (self.room_faults if room else self.faults).clear()

    def _take_fault(self, event: str, instance_id: str, *, room: bool = False) -> CallbackFault | None:
        faults = self.room_faults if room else self.faults
        for fault in faults:
            if fault.matches(event, instance_id):
                fault.count -= 1
                if fault.count <= 0:
                    faults.remove(fault)
                return fault
        return None

    # -- building ----------------------------------------------------------------------------

    @staticmethod
    def emits_for(instance: Instance, event: str) -> bool:
        """Whether the instance's CallbackConfig lets this event through (ungated events always do)."""
        if event not in GATED_EVENTS:
            return True
        flag = (instance.callback_config or {}).get(event, 0)
        return flag is True or flag == 1

    def callback_url_for(self, instance: Instance) -> str | None:
        """The configured URL, or the one ZEGO support set up for the instance's ``HostTag``."""
        host_tag = (instance.callback_config or {}).get("HostTag")
        by_tag: dict[str, str] | None = getattr(self._config, "callback_urls", None)
        if host_tag and by_tag and host_tag in by_tag:
            return by_tag[host_tag]
        return self._config.callback_url

    def _next_sequence(self, instance_id: str) -> int:
        previous = self._sequences.get(instance_id)
        if previous is None:
            value = self._rng.randint(1, 50)
        else:
            # Ascending, with the occasional gap a receiver must tolerate.
            value = previous + 1 + (self._rng.randint(1, 3) if self._rng.random() < 0.2 else 0)
        self._sequences[instance_id] = value
        return value

    def emit(self, instance: Instance, event: str, data: dict[str, Any]) -> None:
        """Build, sign and queue one callback (its log entry is appended to ``log``).

        Synchronous, so that callers decide the order of callbacks simply by the order of calls.
        """
        if event not in ALL_EVENTS:
            raise ValueError(f"unknown callback event {event!r}")
        instance_id = instance.agent_instance_id
        if instance_id in self._deleted or not self.emits_for(instance, event):
            return
        app = self._config.zego_apps.get(instance.app_id)
        if app is None:
            raise LookupError(f"no callback secret for AppId {instance.app_id}")
        timestamp = self._clock.now_ms()
        nonce = str(secrets.randbelow(9 * 10**18) + 10**18)
        body = {
            "AppId": instance.app_id,
            "AgentId": instance.agent_id,
            "Name": instance.agent_name,
            "AgentInstanceId": instance_id,
            "AgentUserId": instance.agent_user_id,
            "RoomId": instance.room_id,
            "Event": event,
            "Nonce": nonce,
            "Timestamp": timestamp,
            "Signature": callback_signature(app.callback_secret, timestamp, nonce),
            "Sequence": self._next_sequence(instance_id),
            "Data": data,
        }
        fault = self._take_fault(event, instance_id)
        url = self.callback_url_for(instance)
        entry: dict[str, Any] = {
            "event": event,
            "agent_instance_id": instance_id,
            "sequence": body["Sequence"],
            "url": url,
            "fault": fault.mode if fault else None,
            "outcome": "pending",
            "attempts": [],
            "body": body,
        }
        self.log.append(entry)
        if event == "AgentInstanceDeleted":
            self._deleted.add(instance_id)
        self._queue(instance_id, entry, body, url, fault)
        if event == "AgentInstanceDeleted" and instance_id in self._lanes:
            self._lanes[instance_id].put_nowait(None)  # the lane ends once that is delivered

    def emit_room(self, room_id: str, event: str, body: dict[str, Any]) -> None:
        """Queue one built and signed RTC room callback on its room's lane (``room_log`` entry)."""
        fault = self._take_fault(event, room_id, room=True)
        url = self._config.rtc_callback_url
        entry: dict[str, Any] = {
            "event": event,
            "room_id": room_id,
            "agent_instance_id": None,
            "sequence": body.get("user_update_seq") or body.get("stream_seq"),
            "url": url,
            "fault": fault.mode if fault else None,
            "outcome": "pending",
            "attempts": [],
            "body": body,
        }
        self.room_log.append(entry)
        self._queue(f"rtc:{room_id}", entry, body, url, fault)

    def _queue(
        self,
        lane: str,
        entry: dict[str, Any],
        body: dict[str, Any],
        url: str | None,
        fault: CallbackFault | None,
    ) -> None:
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        out = _Outgoing(entry=entry, body=raw, url=url, fault=fault.mode if fault else None)
        if url is None or self._closed:
            entry["outcome"] = "not_sent"
        elif fault is not None and fault.mode == "drop":
            entry["outcome"] = "dropped_by_fault"
        elif fault is not None and fault.mode == "delay":
            entry["outcome"] = "held"
            self._spawn(self._delayed(out, fault.delay_seconds))
        else:
            self._lane(lane).put_nowait(out)

    # -- delivery ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lane(self, instance_id: str) -> asyncio.Queue[_Outgoing | None]:
        lane = self._lanes.get(instance_id)
        if lane is None:
            lane = asyncio.Queue()
            self._lanes[instance_id] = lane
            self._lane_tasks[instance_id] = asyncio.get_running_loop().create_task(
                self._run_lane(instance_id, lane)
            )
        return lane

    async def _run_lane(self, instance_id: str, lane: asyncio.Queue[_Outgoing | None]) -> None:
        held: _Outgoing | None = None
        try:
            while True:
                if held is None:
                    item = await lane.get()
                else:
                    try:
                        item = await asyncio.wait_for(lane.get(), self._clock.seconds(REORDER_HOLD_MAX))
                    except TimeoutError:
                        await self._first_attempt(held)
                        held = None
                        continue
                if item is None:
                    if held is not None:
                        await self._first_attempt(held)
                    return
                if item.fault == "reorder" and held is None:
                    item.entry["outcome"] = "held"
                    held = item
                    continue
                await self._first_attempt(item)
                if item.fault == "duplicate":
                    await self._first_attempt(item, kind="duplicate")
                if held is not None:
                    await self._first_attempt(held)
                    held = None
        finally:
            if self._lanes.get(instance_id) is lane:
                del self._lanes[instance_id]
                self._lane_tasks.pop(instance_id, None)

    async def _delayed(self, out: _Outgoing, delay_seconds: float) -> None:
        await self._clock.sleep(delay_seconds)
        await self._first_attempt(out)

    async def _first_attempt(self, out: _Outgoing, kind: str = "first") -> None:
        if await self._attempt(out, kind):
            if kind == "first":
                out.entry["outcome"] = "delivered"
            return
        if kind == "first":
            out.entry["outcome"] = "retrying"
            self._spawn(self._retry(out))

    async def _retry(self, out: _Outgoing) -> None:
        for delay in RETRY_DELAYS:
            await self._clock.sleep(delay)
            if await self._attempt(out, "retry"):
                out.entry["outcome"] = "delivered"
                return
        out.entry["outcome"] = "dropped"
        log.info(
            "callback_dropped_after_retries",
            callback_event=out.entry["event"],
            agent_instance_id=out.entry["agent_instance_id"],
            sequence=out.entry["sequence"],
        )

    async def _attempt(self, out: _Outgoing, kind: str) -> bool:
        assert out.url is not None
        if self._client is None:
            await self.start()
        assert self._client is not None
        record: dict[str, Any] = {"kind": kind, "at_ms": self._clock.now_ms(), "status": None, "error": None}
        out.entry["attempts"].append(record)
        try:
            response = await self._client.post(
                out.url, content=out.body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            record["error"] = type(exc).__name__
            return False
        record["status"] = response.status_code
        return 200 <= response.status_code < 300
