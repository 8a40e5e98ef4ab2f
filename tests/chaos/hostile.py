"""Bad input at volume against a live receiver, with valid traffic timed before and during it.

``run_attack`` posts a known set of valid conversations at a fixed rate (each callback retried on
any answer but 2xx after ZEGO's 2/4/8/16/32 s, scaled, re-signed each time as ZEGO does; a
conversation's next callback waits for the one before), first alone for a baseline, then while
attackers send the requests of ``tests.chaos.bad_requests`` as fast as the receiver answers, slow
clients hold connections, and bursts of connections go past the receiver's limit. The attackers run in a process of their own: in the valid sender's event loop
they would delay its requests and the latency measured would be the client's own. (It is started
with ``spawn``: a script calling ``run_attack`` needs the ``if __name__ == "__main__":`` guard.)

It only sends and measures; ``check_stored`` then compares what the receiver and the worker
stored with what the valid conversations must leave, exactly. The test runs it small; a bench
can run it long and wide (``duration_s``, ``attackers``, ``valid_rate``, ``slow_connections``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import queue
import random
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as DbSession

from tests.chaos.bad_requests import (
    ATTACK_INSTANCE_PREFIX,
    OVER_THE_LIMIT,
    Arsenal,
    BadRequest,
    Budgets,
    describe,
    exchange,
)
from tests.factories import APP_ID, CALLBACK_SECRET, Signer
from tests.worker.conversation import EXPECTED_TURNS, R1, R2, R3, conversation
from worker.models import AgentException, AgentInstance, InboxCallback, OutboxEvent, PolicyAction, Session
from worker.sessions import transcripts

# ZEGO's retry schedule after a failed delivery (vendor facts, section 2), in seconds.
RETRY_DELAYS_S = (2, 4, 8, 16, 32)
# Callbacks in one test conversation (tests/worker/conversation.py), Sequence 10, 12, 14...
CALLBACKS_EACH = len(conversation(Signer()))
# How often each kind of bad request is drawn: the cheap refusals often, the megabyte ones less.
WEIGHTS = {
    "bad_signature": 4,
    "stale_timestamp": 3,
    "unknown_app": 2,
    "missing_signature": 2,
    "replayed_other_body": 4,
    "replayed_same_body": 2,
    "truncated_json": 3,
    "oversized_body": 1,
    "oversized_chunked": 1,
    "length_beyond_limit": 2,
    "length_short_of_body": 1,
    "oversized_headers": 1,
    "deeply_nested": 2,
    "non_utf8": 3,
}

# Every kind the attack sends: drawn by weight, held by slow clients, and the bursts.
KINDS = (*WEIGHTS, "slowloris_headers", "slowloris_silent", "slowloris_body", "beyond_connection_limit")


@dataclass(frozen=True, slots=True)
class Latencies:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latencies:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan)
        ms = sorted(s * 1000 for s in seconds)
        p99 = ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)]
        return cls(len(ms), statistics.median(ms), p99, ms[-1])

    def __str__(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms (n={self.count})"
        )


@dataclass
class AttackReport:
    """What was sent and what came back. Latencies are per valid request; ``delivery`` is per
    valid callback, from its first attempt to its acknowledgement, retries included."""

    duration_s: float
    attackers: int
    valid_rate: float
    baseline: Latencies
    under_attack: Latencies
    # The same, leaving out the requests that started while a burst held connections past the
    # limit (answered 503 by design, or queued behind the burst's connections).
    outside_bursts: Latencies
    # Valid requests answered by the connection limit although no burst was holding connections.
    limited_outside_bursts: int
    delivery_under_attack: Latencies
    valid_callbacks: int
    valid_answers: Counter[str]
    undelivered: list[str]
    attack_requests: int
    attack_requests_per_s: float
    slow_connections: int
    bursts: int
    outcomes: dict[str, Counter[str]]
    unexpected: dict[str, Counter[str]]
    attack_cpu_s: float
    conversations: list[str]
    receiver_rss_kb: tuple[int, int] | None = None

    @property
    def unexercised(self) -> list[str]:
        """Kinds that never got an answer of their own (only the limit's 503, or none at all)."""
        return [
            kind
            for kind in KINDS
            if not any(answer != OVER_THE_LIMIT for answer in self.outcomes.get(kind, Counter()))
        ]

    @property
    def valid_5xx(self) -> Counter[str]:
        """Valid requests answered 5xx by anything but the documented connection limit."""
        return Counter({a: n for a, n in self.valid_answers.items() if a[:1] == "5" and a != OVER_THE_LIMIT})


@dataclass
class ValidSender:
    """Delivers callbacks as ZEGO does, recording every attempt."""

    client: httpx.AsyncClient
    signer: Signer
    retry_scale: float
    replays: Any  # a multiprocessing queue: stored callbacks, for the replaying attacker
    # (time.monotonic() at the start, seconds, answer): monotonic is one clock for every process
    attempts: list[tuple[float, float, str]] = field(default_factory=list)
    delivered: list[tuple[float, float]] = field(default_factory=list)  # (first attempt, seconds)
    undelivered: list[str] = field(default_factory=list)

    async def deliver(self, template: dict[str, Any]) -> None:
        first = time.monotonic()
        for delay in (0, *RETRY_DELAYS_S):
            await asyncio.sleep(delay * self.retry_scale)
            payload = self.signer.resign(template)
            started = time.monotonic()
            try:
                response = await self.client.post(
                    "/callbacks/zego",
                    content=orjson.dumps(payload),
                    headers={"content-type": "application/json"},
                )
                answer = describe(response.status_code, response.content)
            except httpx.HTTPError as exc:
                answer = f"error {type(exc).__name__}"
            self.attempts.append((started, time.monotonic() - started, answer))
            if answer == "200 stored":
                self.replays.put(payload)
            if answer[:1] == "2":  # ZEGO stops at any 2xx; a conflict would show in check_stored
                self.delivered.append((first, time.monotonic() - first))
                return
        self.undelivered.append(f"{template['AgentInstanceId']}/{template.get('Sequence')}")

    async def send_at_rate(self, scripts: list[list[dict[str, Any]]], duration_s: float) -> None:
        """The conversations interleaved round-robin over ``duration_s`` (every session in progress
        throughout), each callback at its slot or, if later, once the one before it in its
        conversation is acknowledged. In order within a conversation, every outbound event is
        determined exactly (out of order, a Round is announced with the words it has by then:
        worker/events/turns.py); reordering is the order scenarios' subject."""
        start = time.monotonic()
        interval = duration_s / sum(len(script) for script in scripts)

        async def converse(index: int, script: list[dict[str, Any]]) -> None:
            for step, callback in enumerate(script):
                slot = start + (step * len(scripts) + index) * interval
                await asyncio.sleep(max(0.0, slot - time.monotonic()))
                await self.deliver(callback)

        await asyncio.gather(*(converse(index, script) for index, script in enumerate(scripts)))


def conversations(signer: Signer, count: int) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """``count`` copies of the test conversation on new AgentInstanceIds (the signature does not
    cover the instance)."""
    instances = [f"1{secrets.randbelow(10**18):018d}" for _ in range(count)]
    return instances, [[{**cb, "AgentInstanceId": i} for cb in conversation(signer)] for i in instances]


def _rss_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def run_attack(
    base_url: str,
    *,
    duration_s: float,
    attackers: int,
    valid_rate: float,
    baseline_s: float = 4.0,
    retry_scale: float = 1.0,
    slow_connections: int = 10,
    bursts: int = 1,
    budgets: Budgets | None = None,
    app_id: int = APP_ID,
    callback_secret: str = CALLBACK_SECRET,
    receiver_pid: int | None = None,
) -> AttackReport:
    """Baseline, then attack; ``budgets`` must be the receiver's own settings (the bad requests
    are sized against them, and the slowloris bursts go ``connection_limit`` + 10 wide)."""
    budgets = budgets or Budgets()
    signer = Signer(app_id, callback_secret)
    base_instances, base_scripts = conversations(signer, math.ceil(baseline_s * valid_rate / CALLBACKS_EACH))
    attack_instances, attack_scripts = conversations(
        signer, math.ceil(duration_s * valid_rate / CALLBACKS_EACH)
    )
    url = urlsplit(base_url)
    spawn = multiprocessing.get_context("spawn")
    replays, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    plan = AttackPlan(
        url.hostname or "127.0.0.1",
        url.port or 80,
        duration_s,
        attackers,
        slow_connections,
        bursts,
        budgets,
        app_id,
        callback_secret,
    )
    process = spawn.Process(target=attack_process, args=(plan, replays, go, results), daemon=True)
    process.start()
    rss_before = _rss_kb(receiver_pid, "VmRSS") if receiver_pid else 0
    # A connection per callback, as many webhook senders do: a kept-alive one may be closed by the
    # receiver's header timer just as a request leaves on it, which a loaded machine makes common.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=budgets.patience_s, limits=limits) as client:
            sender = ValidSender(client, signer, retry_scale, replays)
            await sender.send_at_rate(base_scripts, len(base_scripts) * CALLBACKS_EACH / valid_rate)
            baseline_attempts = len(sender.attempts)
            go.set()
            attack_start = time.monotonic()
            await sender.send_at_rate(attack_scripts, duration_s)
        attack = await asyncio.to_thread(_report_of, process, results, budgets.patience_s * 3)
        process.join(budgets.patience_s)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        # Replays the attacker no longer reads must not hold this process at exit (the queue's
        # feeder thread would wait for ever on a full pipe).
        replays.cancel_join_thread()
        replays.close()
    during = [a for a in sender.attempts[baseline_attempts:] if a[0] <= attack_start + duration_s]
    windows = attack["burst_windows"]
    calm = [a for a in during if not any(start <= a[0] <= end for start, end in windows)]
    delivered = [seconds for first, seconds in sender.delivered if first >= attack_start]
    outcomes = {kind: Counter(found) for kind, found in attack["outcomes"].items()}
    return AttackReport(
        duration_s=duration_s,
        attackers=attackers,
        valid_rate=valid_rate,
        baseline=Latencies.of([s for _, s, _ in sender.attempts[:baseline_attempts]]),
        under_attack=Latencies.of([s for _, s, _ in during]),
        outside_bursts=Latencies.of([s for _, s, _ in calm]),
        limited_outside_bursts=sum(1 for _, _, answer in calm if answer == OVER_THE_LIMIT),
        delivery_under_attack=Latencies.of(delivered),
        valid_callbacks=(len(base_scripts) + len(attack_scripts)) * CALLBACKS_EACH,
        valid_answers=Counter(answer for _, _, answer in sender.attempts),
        undelivered=sender.undelivered,
        attack_requests=attack["requests"],
        attack_requests_per_s=attack["requests"] / duration_s,
        slow_connections=attack["slow"],
        bursts=bursts,
        outcomes=outcomes,
        unexpected={kind: Counter(found) for kind, found in attack["unexpected"].items() if found},
        attack_cpu_s=attack["cpu_s"],
        conversations=base_instances + attack_instances,
        receiver_rss_kb=(rss_before, _rss_kb(receiver_pid, "VmHWM")) if receiver_pid else None,
    )


def _report_of(
    process: multiprocessing.process.BaseProcess, results: Any, patience_s: float
) -> dict[str, Any]:
    """The attacking process's figures, or an error as soon as it is gone without them."""
    deadline = time.monotonic() + patience_s
    while True:
        with contextlib.suppress(queue.Empty):
            found: dict[str, Any] = results.get(timeout=0.5)
            return found
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the attacking process gave no figures (exit code {process.exitcode})")


# --- The attacking process. ---


@dataclass(frozen=True, slots=True)
class AttackPlan:
    host: str
    port: int
    duration_s: float
    attackers: int
    slow_connections: int
    bursts: int
    budgets: Budgets
    app_id: int
    callback_secret: str


def attack_process(plan: AttackPlan, replays: Any, go: EventType, results: Any) -> None:
    go.wait()
    started = time.process_time()
    found = asyncio.run(Attack(plan, replays).run())
    results.put({**found, "cpu_s": time.process_time() - started})


class Attack:
    """The attackers of one run, counting every answer per kind of request."""

    def __init__(self, plan: AttackPlan, replays: Any) -> None:
        self.plan = plan
        self.replays = replays
        self.arsenal = Arsenal(Signer(plan.app_id, plan.callback_secret), plan.budgets)
        self.outcomes: dict[str, Counter[str]] = collections.defaultdict(Counter)
        self.unexpected: dict[str, Counter[str]] = collections.defaultdict(Counter)
        self.requests = 0
        self.slow = 0
        self.deadline = 0.0
        self.burst_windows: list[tuple[float, float]] = []

    async def run(self) -> dict[str, Any]:
        self.deadline = time.monotonic() + self.plan.duration_s
        collector = asyncio.create_task(self.collect_replays())
        await asyncio.gather(
            *(self.fire(random.Random(n)) for n in range(self.plan.attackers)),
            *(self.hold(n) for n in range(self.plan.slow_connections)),
            self.bursts(),
        )
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        return {
            "outcomes": {kind: dict(found) for kind, found in self.outcomes.items()},
            "unexpected": {kind: dict(found) for kind, found in self.unexpected.items()},
            "requests": self.requests,
            "slow": self.slow,
            "burst_windows": self.burst_windows,
        }

    async def collect_replays(self) -> None:
        """Stored valid callbacks, as seen going by; the most recent few hundred are kept."""
        while True:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.arsenal.replays.append(self.replays.get_nowait())
            del self.arsenal.replays[:-500]
            await asyncio.sleep(0.05)

    async def send(self, request: BadRequest) -> None:
        outcome = await exchange(self.plan.host, self.plan.port, request, self.plan.budgets.patience_s)
        self.outcomes[request.kind][outcome] += 1
        if outcome not in request.expected and outcome != OVER_THE_LIMIT:
            self.unexpected[request.kind][outcome] += 1

    async def fire(self, rng: random.Random) -> None:
        """Bad requests back to back, each kind drawn by its weight."""
        builders = self.arsenal.builders()
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while time.monotonic() < self.deadline:
            request = builders[rng.choices(kinds, weights)[0]]()
            if request is None:  # nothing stored yet to replay
                await asyncio.sleep(0.01)
                continue
            await self.send(request)
            self.requests += 1

    async def hold(self, n: int) -> None:
        """One slow client after another: dribbled headers, silence, a body that stops coming."""
        kinds = [self.arsenal.slow_headers, self.arsenal.silent, self.arsenal.slow_body]
        turn = n
        while time.monotonic() < self.deadline:
            await self.send(kinds[turn % len(kinds)]())
            self.slow += 1
            turn += 1

    async def bursts(self) -> None:
        """Past the connection limit, now and then: every connection cut off in time, and
        meanwhile every request answered 503 by the limit (the valid sender retries)."""
        for index in range(self.plan.bursts):
            at = self.deadline - self.plan.duration_s * (1 - (index + 1) / (self.plan.bursts + 1))
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            width = self.plan.budgets.connection_limit + 10
            start = time.monotonic()
            await asyncio.gather(*(self.send(self.arsenal.beyond_limit()) for _ in range(width)))
            self.burst_windows.append((start, time.monotonic()))
            self.slow += width


# --- What the valid conversations must leave, exactly. ---


def expected_events(session_id: str) -> Counter[tuple[Any, ...]]:
    """The outbound events one test conversation must cause, by their cause, not their ids."""
    rounds = [R1, R1, R2, R2, R3, R3]
    speakers = ["user", "agent"] * 3
    return Counter(
        [
            ("session.created", session_id, None, None, None, None, None),
            ("session.active", session_id, None, None, None, None, None),
            *(
                ("turn.completed", session_id, r, s, text, None, None)
                for r, s, text in zip(rounds, speakers, EXPECTED_TURNS, strict=True)
            ),
            ("session.ended", session_id, None, None, None, 0, len(EXPECTED_TURNS)),
        ]
    )


def all_applied(engine: Engine, report: AttackReport) -> bool:
    """Whether at least as many callbacks are applied as the valid conversations hold (to wait
    on; ``check_stored`` then says what more or what else)."""
    with DbSession(engine) as db:
        done = db.scalar(select(func.count()).select_from(InboxCallback).where(InboxCallback.state == "done"))
    return (done or 0) >= len(report.conversations) * CALLBACKS_EACH


def check_stored(engine: Engine, report: AttackReport) -> list[str]:
    """Every difference between what is stored and what the valid conversations must leave:
    each callback once and applied, nothing of the attackers', the transcripts, sessions,
    exceptions, policy actions and outbound events exactly."""
    problems: list[str] = []
    expected_rows = {(i, 10 + 2 * step) for i in report.conversations for step in range(CALLBACKS_EACH)}
    with DbSession(engine) as db:
        rows = db.execute(
            select(InboxCallback.agent_instance_id, InboxCallback.sequence, InboxCallback.state)
        ).all()
        stored = Counter((i, s) for i, s, _ in rows)
        doubled = sorted(key for key, n in stored.items() if n > 1)
        missing = sorted(expected_rows - set(stored))
        extra = sorted(set(stored) - expected_rows)
        not_done = sorted((i, s, state) for i, s, state in rows if state != "done")
        for name, found in (
            ("doubled", doubled),
            ("missing", missing),
            ("not ours", extra),
            ("not done", not_done),
        ):
            if found:
                problems.append(f"inbox rows {name}: {len(found)}, e.g. {found[:5]}")
        attackers = [key for key in stored if key[0].startswith(ATTACK_INSTANCE_PREFIX)]
        if attackers:
            problems.append(f"attacker callbacks stored: {attackers[:5]}")
        sessions = {
            instance: session
            for instance, session in db.execute(
                select(AgentInstance.agent_instance_id, Session).join(
                    Session, Session.id == AgentInstance.session_id
                )
            )
        }
        session_count = len(db.scalars(select(Session.id)).all())
        if session_count != len(report.conversations):
            problems.append(f"{session_count} sessions stored, {len(report.conversations)} expected")
        events: Counter[tuple[Any, ...]] = Counter()
        for instance in report.conversations:
            session = sessions.get(instance)
            if session is None:
                problems.append(f"no session for {instance}")
                continue
            if (session.state, session.end_code) != ("ended", 0):
                problems.append(
                    f"session of {instance}: {session.state} code {session.end_code}, not ended 0"
                )
            turns = [t.text for t in transcripts.transcript(db, session.id)]
            if turns != EXPECTED_TURNS:
                problems.append(f"transcript of {instance}: {turns}")
            exceptions = db.scalars(
                select(AgentException.code).where(AgentException.session_id == session.id)
            ).all()
            if list(exceptions) != [2301]:
                problems.append(f"exceptions of {instance}: {list(exceptions)}")
            events += expected_events(session.id)
        actions = db.scalars(select(PolicyAction.kind)).all()
        if actions:
            problems.append(f"policy actions taken: {Counter(actions)}")
        found_events = Counter(
            (e.type, e.session_id, e.data.get("round"), e.data.get("speaker"), e.data.get("text"))
            + (
                (e.data.get("end_code"), e.data.get("turn_count"))
                if e.type == "session.ended"
                else (None, None)
            )
            for e in db.scalars(select(OutboxEvent))
        )
    if found_events != events:
        problems.append(
            f"outbound events: missing {list((events - found_events).items())[:5]}, "
            f"unexpected {list((found_events - events).items())[:5]}"
        )
    return problems


def format_report(report: AttackReport) -> str:
    lines = [
        f"hostile traffic: {report.duration_s:g} s, {report.attackers} attackers, "
        f"valid callbacks {report.valid_rate:g}/s ({report.valid_callbacks} in all, "
        f"{len(report.conversations)} conversations)",
        f"valid requests, baseline:     {report.baseline}",
        f"valid requests, under attack: {report.under_attack}",
        f"  of which outside the bursts: {report.outside_bursts}, "
        f"{report.limited_outside_bursts} answered by the connection limit",
        f"valid delivery under attack (first attempt to acknowledgement): {report.delivery_under_attack}",
        f"attack: {report.attack_requests} requests ({report.attack_requests_per_s:.1f}/s), "
        f"{report.slow_connections} slow connections ({report.bursts} bursts past the limit), "
        f"attacking process CPU {report.attack_cpu_s:.1f} s",
        "valid answers: " + _counts(report.valid_answers),
    ]
    if report.undelivered:
        lines.append(f"UNDELIVERED valid callbacks: {len(report.undelivered)}, e.g. {report.undelivered[:5]}")
    if report.receiver_rss_kb:
        lines.append(
            f"receiver RSS before {report.receiver_rss_kb[0]} kB, peak {report.receiver_rss_kb[1]} kB"
        )
    lines.append("answers per kind of bad request:")
    lines += [f"  {kind:24} {_counts(found)}" for kind, found in sorted(report.outcomes.items())]
    if report.unexpected:
        lines.append(
            "UNDOCUMENTED answers: " + "; ".join(f"{k}: {_counts(v)}" for k, v in report.unexpected.items())
        )
    return "\n".join(lines)


def _counts(found: Counter[str]) -> str:
    return ", ".join(f"{answer} x{n}" for answer, n in found.most_common())
