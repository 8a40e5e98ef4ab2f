"""What an agent instance says and when: Rounds, their callbacks and status, interruptions, scripts.

The order of callbacks follows the vendor's round mechanism (vendor facts 2):

- a user turn in Round N: ``UserSpeakAction SPEAK_BEGIN(N)`` → ``SPEAK_END(N)`` →
  ``UserAudioData(N)`` (utterances of 1 s or more) → ``ASRResult(N)`` → ``THINKING(N)`` →
  ``LLMResult(N)`` once per sentence → ``SPEAKING(N)`` → ``AgentInstanceMetaInfo(N)`` (when
  ``AdvancedConfig.LLMMetaInfo`` is set) → ``IDLE(N)``. The LLM streams ahead of the voice, so
  every sentence's LLMResult comes before SPEAKING.
- the user barging in while Round N runs (``InterruptMode`` 0): ``SPEAK_BEGIN(M)`` →
  ``Interrupted(N, Reason 1, PlayedText)`` → ``IDLE(N)`` → ``SPEAK_END(M)`` → ``ASRResult(M)`` →
  ``THINKING(M)`` … An interrupted Round gets no further callbacks. With ``InterruptMode`` 1 the
  agent finishes Round N before the user's turn starts.
- SendAgentInstanceLLM: a new Round, ``THINKING`` → LLMResults → ``SPEAKING`` → ``IDLE``;
  SendAgentInstanceTTS: a new Round, ``SPEAKING`` → ``IDLE``. A higher priority, or the same
  priority with ``ClearAndInterrupt``, cuts the running Round (Reason 2 or 3) and clears the
  queue; otherwise the request waits in a queue of at most five, and the status stays SPEAKING
  while the Round advances from one queued request to the next.
- InterruptAgentInstance cuts the running Round with Reason 4.

Which of these callbacks are actually sent is the sender's business (``CallbackConfig`` flags);
``instance.status`` walks the same path either way, because QueryAgentInstanceStatus reads it.

Durations are vendor seconds (scaled by the clock) and all live in ``Timings``: short, so that a
test of a whole conversation takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import base64
import re
import struct
import unicodedata
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.clock import Clock

if TYPE_CHECKING:
    from emulator.zego_world import Instance, World

PRIORITIES: dict[str, int] = {"Low": 0, "Medium": 1, "High": 2}
SAME_PRIORITY_OPTIONS: frozenset[str] = frozenset({"ClearAndInterrupt", "Enqueue"})
QUEUE_LIMIT = 5  # SendAgentInstanceLLM/TTS requests waiting behind the running one (vendor facts 1.3)
# Exception codes after which the agent is out of the RTC room, so the instance is deleted.
FATAL_RTC_CODES = range(1201, 1208)

REASON_USER = 1
REASON_LLM = 2
REASON_TTS = 3
REASON_API = 4


@dataclass(frozen=True)
class Timings:
    """Every duration of the emulated conversation, in vendor seconds."""

    created_delay: float = 0.15  # API answer -> AgentInstanceCreated (joining and pushing)
    created_lead_ms: int = 18  # CreatedTimestamp precedes the callback's Timestamp (vendor example)
    user_speech: float = 0.12  # SPEAK_BEGIN -> SPEAK_END
    asr: float = 0.04  # SPEAK_END -> ASRResult
    think: float = 0.15  # THINKING -> first LLMResult
    llm_sentence: float = 0.02  # between LLMResults: the LLM streams faster than it is spoken
    speak_sentence: float = 0.08  # speaking one sentence
    barge_in_wait: float = 30.0  # a Round paused for ``interrupt_after`` resumes if nobody speaks
    # Notional speech rate of the user: an utterance shorter than 1 s gets no UserAudioData.
    speech_chars_per_second: float = 12.0
    audio_max_seconds: float = 1.5


TIMINGS = Timings()


class InstanceNotRunning(LookupError):
    """The instance is deleted (or being deleted): it takes no more turns."""


class QueueFull(RuntimeError):
    """Five requests already wait behind the running Round."""


@dataclass(eq=False)
class _Round:
    number: int
    kind: str  # "user" | "llm" | "tts"
    sentences: list[str]
    priority: int = PRIORITIES["Medium"]
    pause_at: int | None = None  # a user barges in after this many sentences were spoken
    add_answer: bool = True
    meta_info: dict[str, Any] | None = None
    user_text: str = ""
    user_id: str = ""
    played: list[str] = field(default_factory=list)
    # Set when the next user turn may barge in: at the pause point, or when the Round is over.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Lane:
    """One instance's conversation: the running Round, the queue behind it, background tasks."""

    active: _Round | None = None
    queue: deque[_Round] = field(default_factory=deque)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _release(rounds: deque[_Round]) -> None:
    """Rounds that will never run: whoever waits for them stops waiting."""
    while rounds:
        r = rounds.popleft()
        r.ready.set()
        r.done.set()


# . ! ? ; and the CJK full stop, fullwidth ! ? ;
_SENTENCE_END = re.compile("(?<=[.!?;\u3002\uff01\uff1f\uff1b])\\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences as a TTS engine cuts them: after . ! ? and their CJK forms."""
    parts = _SENTENCE_END.split(text.strip())
    return [part for part in parts if part] or [text]


def join_sentences(sentences: list[str]) -> str:
    """Spoken sentences as one text: a space between Latin ones, nothing next to CJK."""
    out = ""
    for sentence in (s.strip() for s in sentences):
        if not sentence:
            continue
        if out and not (_is_wide(out[-1]) or _is_wide(sentence[0])):
            out += " "
        out += sentence
    return out


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _quiet_pcm(seconds: float) -> str:
    """16 kHz 16-bit mono PCM near silence (a faint ±3 buzz), base64 as UserAudioData carries it."""
    samples = int(16_000 * seconds)
    pcm = (struct.pack("<hh", 3, -3) * (samples // 2 + 1))[: samples * 2]
    return base64.b64encode(pcm).decode()


class Conversation:
    """Runs Rounds for every instance inside the emulator's event loop; no locks beyond asyncio's."""

    def __init__(self, world: World, clock: Clock, timings: Timings | None = None) -> None:
        self._world = world
        self._clock = clock
        self.timings = timings or TIMINGS
        self._lanes: dict[str, _Lane] = {}

    # -- plumbing ----------------------------------------------------------------------------

    def _lane(self, instance: Instance) -> _Lane:
        return self._lanes.setdefault(instance.agent_instance_id, _Lane())

    def _require_running(self, instance: Instance) -> _Lane:
        if instance.state != "running":
            raise InstanceNotRunning(instance.agent_instance_id)
        return self._lane(instance)

    def _spawn(self, instance: Instance, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        lane = self._lane(instance)
        task = asyncio.get_running_loop().create_task(coro)
        lane.tasks.add(task)
        task.add_done_callback(lane.tasks.discard)
        return task

    def _emit(self, instance: Instance, event: str, data: dict[str, Any]) -> None:
        self._world.sender.emit(instance, event, data)

    def _status(self, instance: Instance, status: str, round_: int) -> None:
        instance.status = status
        self._emit(instance, "AgentInstanceStatus", {"Status": status, "Round": round_})

    def _remember(self, instance: Instance, role: str, content: str) -> None:
        if content:
            self._world.add_message(instance, role, content)

    # -- lifecycle ---------------------------------------------------------------------------

    def instance_created(self, instance: Instance) -> None:
        """AgentInstanceCreated once the agent has joined the room and pushes: a little later."""

        async def created() -> None:
            await self._clock.sleep(self.timings.created_delay)
            if instance.state == "running":
                created_ms = self._clock.now_ms() - self.timings.created_lead_ms
                self._emit(instance, "AgentInstanceCreated", {"CreatedTimestamp": created_ms})

        self._spawn(instance, created())

    def cancel(self, instance: Instance) -> None:
        """The instance is gone: stop its Rounds and scripts; it says nothing more."""
        lane = self._lanes.pop(instance.agent_instance_id, None)
        if lane is None:
            return
        _release(lane.queue)
        if lane.active is not None:
            _release(deque([lane.active]))
        for task in list(lane.tasks):
            task.cancel()

    def close(self) -> None:
        """The emulator stops: every instance's Rounds and scripts end where they are."""
        for lane in list(self._lanes.values()):
            _release(lane.queue)
            for task in list(lane.tasks):
                task.cancel()
        self._lanes.clear()

    async def wait_idle(self, instance: Instance) -> None:
        """Until the running Round and everything queued behind it is over (graceful shutdown)."""
        lane = self._lanes.get(instance.agent_instance_id)
        while lane is not None and lane.active is not None:
            await lane.active.done.wait()

    def current_round(self, instance: Instance) -> int | None:
        lane = self._lanes.get(instance.agent_instance_id)
        return lane.active.number if lane and lane.active else None

    # -- starting and cutting Rounds ---------------------------------------------------------

    def _begin(self, instance: Instance, r: _Round) -> None:
        lane = self._lane(instance)
        lane.active = r
        r.task = self._spawn(instance, self._run(instance, r))

    async def _run(self, instance: Instance, r: _Round) -> None:
        # The flow's coroutine is made here, not in _begin: a Round cut before its task ever
        # ran then leaves no un-awaited coroutine behind.
        flow = self._user_flow if r.kind == "user" else self._tts_flow if r.kind == "tts" else self._answer
        try:
            await flow(instance, r)
        finally:
            r.ready.set()
            r.done.set()
            lane = self._lanes.get(instance.agent_instance_id)
            if lane is not None and lane.active is r:
                lane.active = None

    def _finish(self, instance: Instance, r: _Round) -> None:
        """A Round ran to its end: the next queued request starts, or the agent goes IDLE."""
        lane = self._lane(instance)
        if r.add_answer:
            self._remember(instance, "assistant", join_sentences(r.played))
        r.ready.set()
        r.done.set()
        if lane.active is r:
            lane.active = None
        if lane.queue:
            self._begin(instance, lane.queue.popleft())  # still SPEAKING; the Round advances
        else:
            self._status(instance, "IDLE", r.number)

    def _cut(self, instance: Instance, r: _Round, reason: int) -> None:
        """Interrupt a running Round now: Interrupted then IDLE for it, nothing more from it."""
        lane = self._lane(instance)
        if r.task is not None:
            r.task.cancel()
        r.ready.set()
        r.done.set()
        if lane.active is r:
            lane.active = None
        _release(lane.queue)
        played = join_sentences(r.played)
        self._emit(instance, "Interrupted", {"Round": r.number, "Reason": reason, "PlayedText": played})
        self._status(instance, "IDLE", r.number)
        if r.add_answer:
            self._remember(instance, "assistant", played)

    def _submit(self, instance: Instance, r: _Round, *, reason: int, same_priority_option: str) -> None:
        lane = self._lane(instance)
        active = lane.active
        if active is None:
            self._begin(instance, r)
        elif r.priority > active.priority or (
            r.priority == active.priority and same_priority_option == "ClearAndInterrupt"
        ):
            self._cut(instance, active, reason)
            self._begin(instance, r)
        elif len(lane.queue) >= QUEUE_LIMIT:
            raise QueueFull(instance.agent_instance_id)
        else:
            lane.queue.append(r)

    # -- the flows ---------------------------------------------------------------------------

    async def _user_flow(self, instance: Instance, r: _Round) -> None:
        t, text, user_id = self.timings, r.user_text, r.user_id
        await self._clock.sleep(t.user_speech)
        self._emit(instance, "UserSpeakAction", {"UserId": user_id, "Action": "SPEAK_END", "Round": r.number})
        spoken_seconds = len(text) / t.speech_chars_per_second
        if spoken_seconds >= 1.0:
            audio = _quiet_pcm(min(spoken_seconds, t.audio_max_seconds))
            self._emit(
                instance,
                "UserAudioData",
                {"UserId": user_id, "Round": r.number, "SampleRate": 16000, "Format": "pcm", "Audio": audio},
            )
        await self._clock.sleep(t.asr)
        self._emit(instance, "ASRResult", {"UserId": user_id, "Round": r.number, "Text": text})
        self._remember(instance, "user", text)
        await self._answer(instance, r)

    async def _answer(self, instance: Instance, r: _Round) -> None:
        t = self.timings
        self._status(instance, "THINKING", r.number)
        await self._clock.sleep(t.think)
        for i, sentence in enumerate(r.sentences):
            if i:
                await self._clock.sleep(t.llm_sentence)
            self._emit(instance, "LLMResult", {"Round": r.number, "Text": sentence})
        self._status(instance, "SPEAKING", r.number)
        await self._speak(r)
        meta = instance.advanced_config.get("LLMMetaInfo") if instance.advanced_config else None
        if meta:
            info = r.meta_info
            if info is None:
                info = {str(key): "" for key in meta.get("SendMetaKeys") or []}
            self._emit(instance, "AgentInstanceMetaInfo", {"Round": r.number, "MetaInfo": info})
        self._finish(instance, r)

    async def _tts_flow(self, instance: Instance, r: _Round) -> None:
        self._status(instance, "SPEAKING", r.number)
        await self._speak(r)
        self._finish(instance, r)

    async def _speak(self, r: _Round) -> None:
        for i, sentence in enumerate(r.sentences):
            if r.pause_at == i:
                r.ready.set()  # the user barges in here
                await self._clock.sleep(self.timings.barge_in_wait)
            await self._clock.sleep(self.timings.speak_sentence)
            r.played.append(sentence)

    # -- what callers start ------------------------------------------------------------------

    async def user_round(
        self,
        instance: Instance,
        *,
        text: str,
        reply: list[str],
        interrupt_after: int | None = None,
        user_id: str | None = None,
        meta_info: dict[str, Any] | None = None,
    ) -> int:
        """The user says ``text`` and the agent answers ``reply`` sentence by sentence; returns the Round.

        Returns once the user has started speaking; the rest runs in the background.
        """
        r = await self._user_round(
            instance,
            text=text,
            reply=reply,
            interrupt_after=interrupt_after,
            user_id=user_id,
            meta_info=meta_info,
        )
        return r.number

    async def _user_round(
        self,
        instance: Instance,
        *,
        text: str,
        reply: list[str],
        interrupt_after: int | None,
        user_id: str | None,
        meta_info: dict[str, Any] | None,
    ) -> _Round:
        lane = self._require_running(instance)
        interrupts = int((instance.advanced_config or {}).get("InterruptMode", 0) or 0) == 0
        async with lane.start_lock:
            if interrupts:
                # A Round told to be interrupted after k sentences is barged into at that point.
                active = lane.active
                if active is not None and active.pause_at is not None:
                    await active.ready.wait()
            else:
                while lane.active is not None:
                    await lane.active.done.wait()
            lane = self._require_running(instance)
            r = _Round(
                number=instance.next_round(),
                kind="user",
                sentences=list(reply),
                pause_at=interrupt_after if interrupts else None,
                meta_info=meta_info,
                user_text=text,
                user_id=user_id or instance.user_id,
            )
            self._emit(
                instance, "UserSpeakAction", {"UserId": r.user_id, "Action": "SPEAK_BEGIN", "Round": r.number}
            )
            if lane.active is not None:
                self._cut(instance, lane.active, REASON_USER)
            self._begin(instance, r)
            return r

    def send_llm(
        self,
        instance: Instance,
        text: str,
        *,
        reply: list[str] | None = None,
        priority: str = "Medium",
        same_priority_option: str = "ClearAndInterrupt",
        add_question_to_history: bool = False,
        add_answer_to_history: bool = True,
        meta_info: dict[str, Any] | None = None,
    ) -> int:
        """SendAgentInstanceLLM: the agent answers ``text`` as if asked; returns the new Round."""
        return self._send_llm(
            instance,
            text,
            reply=reply,
            priority=priority,
            same_priority_option=same_priority_option,
            add_question_to_history=add_question_to_history,
            add_answer_to_history=add_answer_to_history,
            meta_info=meta_info,
        ).number

    def _send_llm(
        self,
        instance: Instance,
        text: str,
        *,
        reply: list[str] | None,
        priority: str,
        same_priority_option: str,
        add_question_to_history: bool,
        add_answer_to_history: bool,
        meta_info: dict[str, Any] | None,
    ) -> _Round:
        self._require_running(instance)
        r = _Round(
            number=instance.next_round(),
            kind="llm",
            sentences=list(reply) if reply else [f"Emulated answer to: {text}"],
            priority=PRIORITIES.get(priority, PRIORITIES["Medium"]),
            add_answer=add_answer_to_history,
            meta_info=meta_info,
        )
        if add_question_to_history:
            self._remember(instance, "user", text)
        self._submit(instance, r, reason=REASON_LLM, same_priority_option=same_priority_option)
        return r

    def send_tts(
        self,
        instance: Instance,
        text: str,
        *,
        priority: str = "Medium",
        same_priority_option: str = "ClearAndInterrupt",
        add_history: bool = True,
    ) -> int:
        """SendAgentInstanceTTS: the agent speaks ``text`` verbatim; returns the new Round."""
        return self._send_tts(
            instance,
            text,
            priority=priority,
            same_priority_option=same_priority_option,
            add_history=add_history,
        ).number

    def _send_tts(
        self, instance: Instance, text: str, *, priority: str, same_priority_option: str, add_history: bool
    ) -> _Round:
        self._require_running(instance)
        r = _Round(
            number=instance.next_round(),
            kind="tts",
            sentences=split_sentences(text),
            priority=PRIORITIES.get(priority, PRIORITIES["Medium"]),
            add_answer=add_history,
        )
        self._submit(instance, r, reason=REASON_TTS, same_priority_option=same_priority_option)
        return r

    def interrupt(self, instance: Instance) -> int:
        """InterruptAgentInstance: cut whatever the agent is doing; returns that Round."""
        lane = self._require_running(instance)
        active = lane.active
        if active is None:
            return instance.round
        self._cut(instance, active, REASON_API)
        return active.number

    # -- scripts -----------------------------------------------------------------------------

    def start_script(self, instance: Instance, turns: list[dict[str, Any]]) -> None:
        """Run scripted turns in the background, each ``after`` vendor seconds after the last settled.

        A turn is one of ``{"say", "reply", "interrupt_after", "user_id"}``, ``{"llm": text,
        "reply"}``, ``{"tts": text}``, ``{"exception": {"code", "message"}}`` or
        ``{"rtc_fault": code}``. A said turn settles when the agent has finished answering, or when
        it reaches its ``interrupt_after`` point, so the next turn is the one that barges in.
        """
        self._require_running(instance)
        checked = [_check_turn(turn) for turn in turns]
        self._spawn(instance, self._script(instance, checked))

    async def _script(self, instance: Instance, turns: list[dict[str, Any]]) -> None:
        for turn in turns:
            await self._clock.sleep(float(turn.get("after", 0) or 0))
            if instance.state != "running":
                return
            if "say" in turn:
                r = await self._user_round(
                    instance,
                    text=str(turn["say"]),
                    reply=[str(s) for s in turn.get("reply") or []],
                    interrupt_after=turn.get("interrupt_after"),
                    user_id=turn.get("user_id"),
                    meta_info=turn.get("meta_info"),
                )
                await r.ready.wait()
            elif "llm" in turn:
                r = self._send_llm(
                    instance,
                    str(turn["llm"]),
                    reply=turn.get("reply"),
                    priority=str(turn.get("priority", "Medium")),
                    same_priority_option=str(turn.get("same_priority_option", "ClearAndInterrupt")),
                    add_question_to_history=False,
                    add_answer_to_history=True,
                    meta_info=turn.get("meta_info"),
                )
                await r.done.wait()
            elif "tts" in turn:
                r = self._send_tts(
                    instance,
                    str(turn["tts"]),
                    priority=str(turn.get("priority", "Medium")),
                    same_priority_option=str(turn.get("same_priority_option", "ClearAndInterrupt")),
                    add_history=True,
                )
                await r.done.wait()
            elif "exception" in turn:
                code = int(turn["exception"]["code"])
                message = str(turn["exception"].get("message") or f"emulated exception {code}")
                if code in FATAL_RTC_CODES:
                    self._world.delete_instance(instance, code, reason_exception=True)
                    return
                round_ = self.current_round(instance) or instance.round
                self._emit(instance, "Exception", {"Code": code, "Message": message, "Round": round_})
            else:
                self._world.delete_instance(instance, int(turn["rtc_fault"]), reason_exception=True)
                return


def _check_turn(turn: Any) -> dict[str, Any]:
    """Refuse a malformed script up front, so the control endpoint can answer 400."""
    if not isinstance(turn, dict):
        raise ValueError("each script turn must be an object")
    kinds = [key for key in ("say", "llm", "tts", "exception", "rtc_fault") if key in turn]
    if len(kinds) != 1:
        raise ValueError("each script turn needs exactly one of say, llm, tts, exception, rtc_fault")
    after = turn.get("after", 0)
    if not isinstance(after, int | float) or after < 0:
        raise ValueError("'after' must be a non-negative number of seconds")
    reply = turn.get("reply")
    if reply is not None and not (isinstance(reply, list) and all(isinstance(s, str) for s in reply)):
        raise ValueError("'reply' must be a list of sentences")
    interrupt_after = turn.get("interrupt_after")
    if interrupt_after is not None and (not isinstance(interrupt_after, int) or interrupt_after < 0):
        raise ValueError("'interrupt_after' must be a non-negative integer")
    if "exception" in turn:
        exc = turn["exception"]
        if not isinstance(exc, dict) or not isinstance(exc.get("code"), int):
            raise ValueError("'exception' must be {code: int, message: str}")
    if "rtc_fault" in turn and not isinstance(turn["rtc_fault"], int):
        raise ValueError("'rtc_fault' must be an exception code")
    return turn
