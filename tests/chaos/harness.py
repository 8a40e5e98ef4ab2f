"""A known set of conversations, the result they must leave, a sender that retries as ZEGO does,
and one exact comparison of what roomwarden stored and told against that result.

The expected result is written down here from the conversations' scripts, not computed by any
roomwarden code: if roomwarden and this module agreed only because they shared a function, a
bug in that function could never show. Comparisons are on what a user reads (rooms, rounds,
speakers, texts, reasons, codes), never on ids or timestamps, which differ from run to run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from tests.factories import APP_ID, CALLBACK_SECRET, Signer
from tests.processes import wait_until
from tests.sinks import Sink
from worker.models import AgentException, AgentInstance, InboxCallback, PolicyAction, Session, Turn

# ZEGO's retry schedule for a callback that was not answered 200 (vendor facts, section 2): the
# first attempt, then one after each of these many seconds.
ZEGO_RETRY_SECONDS = (2.0, 4.0, 8.0, 16.0, 32.0)

# How each AgentInstanceDeleted code reads as an end reason (ZEGO's documented codes).
END_REASONS = {0: "deleted", 1202: "user_absent", 1203: "kicked_out", 1205: "disconnected"}

Key = tuple[int, str]  # (AppId, RoomId): every conversation has a room of its own within its app


@dataclass(frozen=True)
class App:
    app_id: int
    callback_secret: str


APPS = (App(APP_ID, CALLBACK_SECRET), App(7654321, "second-app-callback-secret-91c2"))


@dataclass(frozen=True)
class ExpectedTurn:
    round: int
    speaker: str
    text: str
    interrupted: bool = False
    played_text: str | None = None


@dataclass
class Conversation:
    """One agent instance's whole life as ZEGO reports it, and what it must leave behind."""

    app: App
    instance: str
    room: str
    callbacks: list[dict[str, Any]]
    turns: list[ExpectedTurn]
    exception_codes: list[int]
    end_code: int

    @property
    def key(self) -> Key:
        return (self.app.app_id, self.room)


def conversation(app: App, n: int, *, end_code: int = 0, base_ms: int | None = None) -> Conversation:
    """Three rounds: a plain answer, an interrupted one, a goodbye; one TTS exception; the end.

    Texts carry ``n`` and the app, so a turn filed under the wrong session cannot go unseen.
    """
    base = base_ms if base_ms is not None else int(time.time() * 1000) - 60_000
    instance, room, user = f"{1_900_000_000_000_000_000 + n}", f"chaos_room_{n}", f"user_{n}"
    r1, r2, r3 = (700_000_000 + 10 * n + k for k in (1, 2, 3))
    tag = f"#{n}@{app.app_id}"
    ask1, ask2, ask3 = f"Can you recommend a book {tag}?", f"Something longer {tag}?", f"Thanks, bye {tag}."
    say1 = [f"Sure {tag}.", "Try 'The Left Hand of Darkness'.", "It is short and strange."]
    say2 = [f"Then 'Middlemarch' {tag},", "which follows a whole town over"]
    say3 = ["Goodbye!", f"Take care {tag}."]
    played = f"Then 'Middlemarch' {tag}, which"
    script: list[tuple[str, dict[str, Any]]] = [
        ("AgentInstanceCreated", {"CreatedTimestamp": base}),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_BEGIN", "Round": r1}),
        ("ASRResult", {"UserId": user, "Round": r1, "Text": ask1}),
        ("AgentInstanceStatus", {"Status": "THINKING", "Round": r1}),
        *[("LLMResult", {"Round": r1, "Text": text}) for text in say1],
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": r1}),
        ("AgentInstanceMetaInfo", {"Round": r1, "MetaInfo": {"emotion": "warm"}}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": r1}),
        ("ASRResult", {"UserId": user, "Round": r2, "Text": ask2}),
        *[("LLMResult", {"Round": r2, "Text": text}) for text in say2],
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": r2}),
        ("UserSpeakAction", {"UserId": user, "Action": "SPEAK_BEGIN", "Round": r3}),
        ("Interrupted", {"Round": r2, "Reason": 1, "PlayedText": played}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": r2}),
        ("ASRResult", {"UserId": user, "Round": r3, "Text": ask3}),
        *[("LLMResult", {"Round": r3, "Text": text}) for text in say3],
        ("Exception", {"Code": 2301, "Message": "TTS general error", "Round": r3}),
        ("AgentInstanceDeleted", {"Code": end_code, "DeletedTimestamp": base + 60_000}),
    ]
    signer = Signer(app.app_id, app.callback_secret)
    callbacks = [
        signer.callback(
            event,
            data,
            instance=instance,
            sequence=10 + 2 * i,
            timestamp=base + 1_000 * i,
            AgentUserId=f"agent_{n}",
            RoomId=room,
        )
        for i, (event, data) in enumerate(script)
    ]
    turns = [
        ExpectedTurn(r1, "user", ask1),
        ExpectedTurn(r1, "agent", " ".join(say1)),
        ExpectedTurn(r2, "user", ask2),
        ExpectedTurn(r2, "agent", " ".join(say2), interrupted=True, played_text=played),
        ExpectedTurn(r3, "user", ask3),
        ExpectedTurn(r3, "agent", " ".join(say3)),
    ]
    return Conversation(app, instance, room, callbacks, turns, [2301], end_code)


def conversations(count: int, apps: Sequence[App] = APPS[:1]) -> list[Conversation]:
    """``count`` conversations per app. Apps use the same instance and room ids on purpose: two
    ZEGO apps know nothing of each other's ids, and roomwarden must keep them apart by AppId."""
    return [conversation(app, n) for n in range(count) for app in apps]


def signers(apps: Iterable[App] = APPS) -> dict[int, Signer]:
    return {app.app_id: Signer(app.app_id, app.callback_secret) for app in apps}


# --------------------------------------------------------------------------- the expected result

# An outbound event as compared: (type, AppId, RoomId, *fields that say what happened).
EventKey = tuple[Any, ...]


@dataclass
class Expectation:
    """What the stored tables and the app's endpoint must hold, exactly."""

    sessions: dict[Key, tuple[str, str | None, int | None]]
    turns: dict[Key, list[ExpectedTurn]]
    exceptions: dict[Key, list[int]]
    actions: Counter[tuple[int, str, str, str, str]]
    events: Counter[EventKey]
    callbacks: int | None
    # Event types that must come at most once rather than exactly once. Out of order, roomwarden
    # announces a Round once, when it is over, with what it has by then (worker/events/turns.py):
    # words after that are in the transcript, not in a second event. (``session.ended`` is then
    # compared without its turn count, which is the count at that moment.)
    at_most_once: frozenset[str] = frozenset()

    @property
    def counted(self) -> bool:
        """Whether ``session.ended`` must carry the script's turn count."""
        return "turn.completed" not in self.at_most_once


# Callbacks out of order: a Round is announced once, when it is over, with what it has by then
# (after the deletion is applied, a late Round is over at its first callback); so its identity is
# compared, not its words.
OUT_OF_ORDER = frozenset({"turn.completed"})


def identity(key: EventKey) -> EventKey:
    """What an at-most-once event is about: a turn's (type, app, room, round, speaker)."""
    return key[:5] if key[0] == "turn.completed" else key


def expect(convs: Sequence[Conversation], *, at_most_once: frozenset[str] = frozenset()) -> Expectation:
    events: Counter[EventKey] = Counter()
    for c in convs:
        (app, room), told = c.key, [t for t in c.turns if t.text or t.interrupted]
        events[("session.created", app, room)] += 1
        events[("session.active", app, room, c.instance)] += 1
        for t in told:
            events[
                ("turn.completed", app, room, t.round, t.speaker, t.text, t.interrupted, t.played_text)
            ] += 1
        ended = ("session.ended", app, room, END_REASONS[c.end_code], c.end_code, "callback")
        events[ended if "turn.completed" in at_most_once else (*ended, len(c.turns))] += 1
    return Expectation(
        sessions={c.key: ("ended", END_REASONS[c.end_code], c.end_code) for c in convs},
        turns={c.key: list(c.turns) for c in convs},
        exceptions={c.key: list(c.exception_codes) for c in convs},
        actions=Counter(),
        events=events,
        callbacks=sum(len(c.callbacks) for c in convs),
        at_most_once=at_most_once,
    )


# --------------------------------------------------------------------------- what is there


def event_key(event: Mapping[str, Any], rooms: Mapping[str, Key], *, counted: bool = True) -> EventKey:
    """The event as compared: its conversation is found from its session id (an event filed under
    the wrong session shows as another room), not from its own room_id, which a session first
    heard of through a callback does not have yet when ``session.created`` is written."""
    data, kind = event["data"], event["type"]
    head = (kind, *rooms.get(data.get("session_id") or "", (data.get("app_id"), data.get("room_id"))))
    if kind == "session.active":
        return (*head, data.get("agent_instance_id"))
    if kind == "turn.completed":
        fields = ("round", "speaker", "text", "interrupted", "played_text")
        return (*head, *(data.get(name) for name in fields))
    if kind == "session.ended":
        ended = (*head, data.get("end_reason"), data.get("end_code"), data.get("learned"))
        return (*ended, data.get("turn_count")) if counted else ended
    if kind == "session.created":
        return head
    if kind.startswith("action."):
        return (*head, data.get("action"), data.get("reason"))
    return (*head, tuple(sorted((k, repr(v)) for k, v in data.items())))


@dataclass
class Observed:
    sessions: dict[Key, tuple[str, str | None, int | None]]
    turns: dict[Key, list[ExpectedTurn]]
    exceptions: dict[Key, list[int]]
    actions: Counter[tuple[int, str, str, str, str]]
    events: Counter[EventKey]
    inbox: Counter[str]
    deliveries: int  # requests the endpoint got, retries of one event included

    @property
    def callbacks(self) -> int:
        return sum(self.inbox.values())


def observe(engine: Engine, sink: Sink | None, *, counted: bool = True) -> Observed:
    from sqlalchemy.orm import Session as DbSession

    with DbSession(engine) as db:
        rooms: dict[str, Key] = {}
        sessions: dict[Key, tuple[str, str | None, int | None]] = {}
        for s in db.scalars(select(Session).order_by(Session.created_at)):
            key = (s.app_id, s.room_id or "")
            while key in sessions:  # a second session for one conversation: shown, not merged
                key = (key[0], f"{key[1]} (again)")
            rooms[s.id], sessions[key] = key, (s.state, s.end_reason, s.end_code)
        turns: dict[Key, list[ExpectedTurn]] = {}
        ordered = select(Turn).order_by(Turn.session_id, Turn.round, Turn.speaker.desc())
        for t in db.scalars(ordered):
            turns.setdefault(rooms[t.session_id], []).append(
                ExpectedTurn(t.round, t.speaker, t.text, t.interrupted, t.played_text)
            )
        exceptions: dict[Key, list[int]] = {}
        for e in db.scalars(select(AgentException).order_by(AgentException.code)):
            exceptions.setdefault(rooms[e.session_id], []).append(e.code)
        actions = Counter(
            (*rooms[a.session_id], a.kind, a.reason, a.state) for a in db.scalars(select(PolicyAction))
        )
        inbox = Counter(
            {
                state: int(n)
                for state, n in db.execute(
                    select(InboxCallback.state, func.count()).group_by(InboxCallback.state)
                )
            }
        )
    received = list(sink.received) if sink is not None else []
    once = {r.headers["webhook-id"]: r.event for r in received}  # at least once: a retry may repeat
    events = Counter(event_key(e, rooms, counted=counted) for e in once.values())
    return Observed(sessions, turns, exceptions, actions, events, inbox, len(received))


def instances_of(engine: Engine) -> dict[Key, list[str]]:
    """Each session's agent instance ids, for expectations about sessions the API started."""
    from sqlalchemy.orm import Session as DbSession

    with DbSession(engine) as db:
        found: dict[Key, list[str]] = {}
        query = select(Session.app_id, Session.room_id, AgentInstance.agent_instance_id).join(
            AgentInstance, AgentInstance.session_id == Session.id
        )
        for app_id, room, instance in db.execute(query.order_by(AgentInstance.id)):
            found.setdefault((app_id, room or ""), []).append(instance)
        return found


# --------------------------------------------------------------------------- the comparison


def differences(expected: Expectation, observed: Observed) -> list[str]:
    """Every way ``observed`` departs from ``expected``, one readable line each; [] when equal."""
    out: list[str] = []

    def mapping(name: str, want: Mapping[Any, Any], got: Mapping[Any, Any]) -> None:
        for key in sorted(set(want) | set(got), key=repr):
            if key not in got:
                out.append(f"{name} {key}: missing (expected {want[key]!r})")
            elif key not in want:
                out.append(f"{name} {key}: unexpected {got[key]!r}")
            elif want[key] != got[key]:
                out.append(f"{name} {key}: expected {want[key]!r}\n    got      {got[key]!r}")

    def multiset(name: str, want: Counter[Any], got: Counter[Any]) -> None:
        for item, n in sorted((want - got).items(), key=repr):
            out.append(f"{name}: missing {n}x {item!r}")
        for item, n in sorted((got - want).items(), key=repr):
            out.append(f"{name}: unexpected {n}x {item!r}")

    mapping("session", expected.sessions, observed.sessions)
    mapping("transcript", expected.turns, observed.turns)
    mapping("exceptions", expected.exceptions, observed.exceptions)
    multiset("action", expected.actions, observed.actions)
    loose = expected.at_most_once
    exact = Counter({k: n for k, n in expected.events.items() if k[0] not in loose})
    told_raw = Counter({k: n for k, n in observed.events.items() if k[0] in loose})
    multiset("event", exact, observed.events - told_raw)
    allowed: Counter[EventKey] = Counter()
    for k, n in expected.events.items():
        if k[0] in loose:
            allowed[identity(k)] += n
    told: Counter[EventKey] = Counter()
    for k, n in told_raw.items():
        told[identity(k)] += n
    for item, n in sorted(told.items(), key=repr):
        if item not in allowed:
            out.append(f"event: unexpected {item!r}")
        elif n > allowed[item]:
            out.append(f"event: announced {n}x {item!r}")
    unfinished = {state: n for state, n in observed.inbox.items() if state != "done"}
    if unfinished:
        out.append(f"inbox: callbacks not applied: {unfinished}")
    if expected.callbacks is not None and observed.callbacks != expected.callbacks:
        out.append(f"inbox: {observed.callbacks} callbacks stored, expected {expected.callbacks}")
    return out


def converge(
    expected: Expectation,
    engine: Engine,
    sink: Sink | None,
    *,
    timeout: float,
    settle: float = 1.5,
    context: str = "",
) -> float:
    """Wait until what is stored and told equals ``expected``, then for ``settle`` seconds more,
    long enough for a doubled action or event to show; seconds taken to converge. Raises with
    the differences when it never does, or stops doing so."""
    started, last = time.monotonic(), ["(not looked yet)"]
    tables_at: list[float] = []  # when the tables matched, before the endpoint had every event

    def equal() -> bool:
        last[:] = differences(expected, observe(engine, sink, counted=expected.counted))
        if not tables_at and not [line for line in last if not line.startswith("event")]:
            tables_at.append(time.monotonic() - started)
        return not last

    try:
        wait_until(equal, timeout, "the expected result")
    except AssertionError:
        if tables_at:
            context = f"(the tables matched after {tables_at[0]:.1f} s; the events never did)\n{context}"
        raise AssertionError(report(last, context)) from None
    took = time.monotonic() - started
    time.sleep(settle)
    if not equal():
        raise AssertionError(report(["it matched, then changed:", *last], context))
    return took


def report(lines: list[str], context: str) -> str:
    shown = lines[:40] + ([f"... and {len(lines) - 40} more"] if len(lines) > 40 else [])
    return "stored result differs from the expected one:\n  " + "\n  ".join(shown) + f"\n{context}"


# --------------------------------------------------------------------------- the sender


@dataclass
class SendReport:
    callbacks: int = 0  # distinct callbacks acknowledged
    requests: int = 0
    retries: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    given_up: list[str] = field(default_factory=list)

    def line(self) -> str:
        answers = ", ".join(f"{k} {n}" for k, n in sorted(self.answers.items()))
        return (
            f"{self.callbacks} callbacks acknowledged, {self.requests} requests, {self.retries} retries, "
            f"{len(self.given_up)} given up ({answers})"
        )


class Sender:
    """Posts callbacks as ZEGO does: a callback not answered 200 (any status, a refused or cut
    connection, a timeout) is sent again after 2, 4, 8, 16 and 32 s times ``scale``, each time
    with a new Nonce, Timestamp and Signature; after the last it is given up, and reported.

    Each stream (one agent instance) is sent in its order, a callback once the one before it is
    acknowledged or given up; streams go side by side, ``concurrency`` at a time.
    """

    def __init__(
        self,
        url: str,
        signers: Mapping[int, Signer],
        *,
        scale: float,
        timeout: float = 5.0,
        concurrency: int = 8,
    ) -> None:
        self.url, self.signers, self.scale = f"{url}/callbacks/zego", signers, scale
        self.concurrency = concurrency
        limits = httpx.Limits(max_connections=concurrency * 5 + 4, max_keepalive_connections=concurrency * 5)
        self.client = httpx.Client(timeout=timeout, limits=limits)
        self.stats = SendReport()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def close(self) -> None:
        self.client.close()

    @property
    def acknowledged(self) -> int:
        with self._lock:
            return self.stats.callbacks

    def deliver(self, callback: dict[str, Any]) -> bool:
        """One callback until it is taken or ZEGO would give up; True when it was taken."""
        attempt, answer = callback, ""
        for wait in (0.0, *ZEGO_RETRY_SECONDS):
            if wait:
                time.sleep(wait * self.scale)
                attempt = self.signers[int(callback["AppId"])].resign(callback)
            try:
                response = self.client.post(self.url, json=attempt)
                taken = response.status_code == 200
                answer = f"200 {response.json().get('status', '')}" if taken else str(response.status_code)
            except (httpx.HTTPError, ValueError) as error:
                answer, taken = type(error).__name__, False
            with self._lock:
                self.stats.requests += 1
                self.stats.retries += wait > 0
                self.stats.answers[answer] += 1
            if taken:
                return True
        what = "/".join(str(callback.get(k)) for k in ("AppId", "AgentInstanceId", "Event", "Sequence"))
        with self._lock:
            self.stats.given_up.append(f"{what}: last answer {answer}")
        return False

    def _stream(
        self, callbacks: Sequence[dict[str, Any]], copies: int, pool: ThreadPoolExecutor | None
    ) -> None:
        for callback in callbacks:
            if pool is None:
                taken = self.deliver(callback)
            else:
                # A storm: the same callback ``copies`` times at once, some byte for byte (a
                # proxy repeating it), the rest re-signed (ZEGO's own retries). Counted once.
                variants = [callback, dict(callback)] + [
                    self.signers[int(callback["AppId"])].resign(callback) for _ in range(copies - 2)
                ]
                futures = [pool.submit(self.deliver, v) for v in variants[:copies]]
                taken = any([future.result() for future in futures])
            if taken:
                with self._lock:
                    self.stats.callbacks += 1

    def send(self, streams: Sequence[Sequence[dict[str, Any]]], *, copies: int = 1) -> SendReport:
        """Every stream, each in order, ``concurrency`` streams at a time; waits for all."""
        storm = ThreadPoolExecutor(self.concurrency * copies) if copies > 1 else None
        try:
            with ThreadPoolExecutor(self.concurrency) as streams_pool:
                for future in [streams_pool.submit(self._stream, s, copies, storm) for s in streams]:
                    future.result()
        finally:
            if storm is not None:
                storm.shutdown()
        return self.stats

    def start(self, streams: Sequence[Sequence[dict[str, Any]]], *, copies: int = 1) -> None:
        """``send`` in the background, so that a scenario can break things while it runs."""
        self._thread = threading.Thread(
            target=self.send, args=(streams,), kwargs={"copies": copies}, daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float) -> SendReport:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), (
            f"the sender did not finish within {timeout}s: {self.stats.line()}"
        )
        return self.stats

    def wait_acknowledged(self, n: int, timeout: float) -> None:
        wait_until(
            lambda: self.acknowledged >= n, timeout, f"{n} callbacks acknowledged ({self.stats.line()})"
        )


def streams_of(convs: Sequence[Conversation]) -> list[list[dict[str, Any]]]:
    return [list(c.callbacks) for c in convs]


def interleaved(convs: Sequence[Conversation]) -> list[dict[str, Any]]:
    """Every conversation's callbacks merged one from each in turn, as a busy ZEGO sends them."""
    merged = itertools.zip_longest(*(c.callbacks for c in convs))
    return [cb for group in merged for cb in group if cb is not None]
