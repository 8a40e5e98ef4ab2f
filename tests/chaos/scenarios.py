"""The chaos scenarios, each a plain function: the pytest module runs them small with ZEGO's retry
times scaled down, ``bench/chaos`` runs them big with the real ones.

Each sends a known set of conversations through a fault and returns once the stored sessions,
transcripts, exceptions, policy actions and the app's events equal the expected ones exactly
(``harness.converge`` raises with the differences otherwise).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session as DbSession

from emulator import Emulator
from tests.chaos.deployments import ChaosDeployment
from tests.chaos.harness import (
    APPS,
    OUT_OF_ORDER,
    Conversation,
    Expectation,
    Sender,
    SendReport,
    converge,
    conversations,
    expect,
    instances_of,
    interleaved,
    signers,
    streams_of,
)
from tests.deployment import TIME_SCALE, zego_request
from tests.emulator_fixture import SERVER_SECRET
from tests.processes import PostgresServer, RedisServer, free_port, wait_until
from worker.models import InboxCallback, PolicyAction


@dataclass
class Lab:
    """What a scenario may use and break: an empty migrated database, a Redis of its own."""

    directory: Path
    database_url: str
    redis_url: str
    scale: float  # ZEGO's retry times are multiplied by this
    emulator_factory: Callable[..., Emulator] | None = None
    redis: RedisServer | None = None  # a redis-server of the lab's own, for the outage
    postgres: PostgresServer | None = None  # the database's own cluster, for the restart
    converge_timeout: float = 90.0


@dataclass
class Outcome:
    scenario: str
    sent: SendReport
    converged_seconds: float
    notes: list[str] = field(default_factory=list)


def applied(engine: Engine) -> int:
    with DbSession(engine) as db:
        return int(db.scalar(select(func.count()).where(InboxCallback.state == "done")) or 0)


def _finish(name: str, d: ChaosDeployment, lab: Lab, expected: Expectation, sent: SendReport) -> Outcome:
    context = f"sender: {sent.line()}\n{d.logs()}"
    assert not sent.given_up, f"ZEGO would have given up on callbacks: {sent.given_up[:10]}\n{context}"
    took = converge(expected, d.engine, d.sink, timeout=lab.converge_timeout, context=context)
    dead = {p.name for p in d.processes if p.proc is not None} - set(d.alive())
    assert not dead, f"{sorted(dead)} exited\n{d.logs()}"
    return Outcome(name, sent, took)


def leases_left(engine: Engine) -> str:
    """The job leases still held, with their seconds left: a killed holder's stay until they expire."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT name, extract(epoch FROM expires_at - now()) FROM job_locks"
                " WHERE expires_at > now() ORDER BY name"
            )
        ).all()
    return ", ".join(f"{name} {float(left):.0f} s" for name, left in rows) or "none"


def _deployment(lab: Lab, name: str, **kwargs: Any) -> ChaosDeployment:
    return ChaosDeployment(lab.directory / name, lab.database_url, lab.redis_url, **kwargs)


def worker_killed_mid_drain(lab: Lab, *, sessions: int) -> Outcome:
    """A worker killed (-9, pool processes and all) while its drain holds callbacks uncommitted."""
    convs = conversations(sessions)
    cut = len(convs[0].callbacks) // 2
    d = _deployment(lab, "worker_kill").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sender.send([c.callbacks[:cut] for c in convs])
        first = sessions * cut
        wait_until(lambda: applied(d.engine) == first, lab.converge_timeout, "the first halves applied")
        d.stack.worker.kill()
        held_idle = leases_left(d.engine)
        sender.send([c.callbacks[cut:] for c in convs])  # stored, waiting for a worker
        # Hold the next drain just before it commits (its turns written, its callbacks not yet
        # marked done: the inbox is locked), and kill its worker there.
        with d.engine.connect() as holder:
            holder.execute(text("LOCK TABLE inbox IN SHARE ROW EXCLUSIVE MODE"))
            pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()

            def draining() -> bool:
                with d.engine.connect() as probe:
                    waiting = probe.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                            " AND query ILIKE 'UPDATE inbox%'"
                        ),
                        {"pid": pid},
                    ).scalar_one()
                return bool(waiting)

            d.stack.worker.start()
            wait_until(draining, lab.converge_timeout, f"a drain waiting on the inbox\n{d.logs()}")
            d.stack.worker.kill()
            holder.rollback()
        assert applied(d.engine) == first, "the killed drain committed"
        held = leases_left(d.engine)
        d.stack.worker.start()
        outcome = _finish("worker killed mid-drain", d, lab, expect(convs), sender.stats)
        outcome.notes.append(f"killed with {first} of {first * 2} applied, a drain in flight")
        outcome.notes.append(f"leases held after the first kill: {held_idle}; after the second: {held}")
        return outcome
    finally:
        sender.close()
        d.stop()


def receiver_killed_mid_request(lab: Lab, *, sessions: int) -> Outcome:
    """The receiver killed (-9) with requests in flight; a new one on the same port takes the retries."""
    convs = conversations(sessions)
    total = sum(len(c.callbacks) for c in convs)
    d = _deployment(lab, "receiver_kill").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sender.start(streams_of(convs))
        sender.wait_acknowledged(total // 3, lab.converge_timeout)
        d.stack.receiver.kill()
        at = sender.acknowledged
        d.restart_receiver()
        sent = sender.wait(lab.converge_timeout + 120 * lab.scale)
        outcome = _finish("receiver killed mid-request", d, lab, expect(convs), sent)
        outcome.notes.append(f"killed at {at} of {total} acknowledged")
        return outcome
    finally:
        sender.close()
        d.stop()


IDLE_POLICY = """
[defaults.idle]
after_seconds = {idle}
[defaults.reconcile]
silent_seconds = 600
unconfirmed_seconds = 600
"""


def beat_killed_mid_recycle(lab: Lab, *, sessions: int, idle: float = 3.0) -> Outcome:
    """Beat and the worker killed (-9) while idle recycles are in flight: each agent is deleted once."""
    assert lab.emulator_factory is not None, "this scenario needs the emulator"
    port = free_port()
    emu = lab.emulator_factory(callback_url=f"http://127.0.0.1:{port}/callbacks/zego", time_scale=TIME_SCALE)
    directory = lab.directory / "beat_kill"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.toml").write_text(IDLE_POLICY.format(idle=idle))
    env = {
        "ROOMWARDEN_ZEGO_SERVER_SECRET": SERVER_SECRET,
        "ROOMWARDEN_ZEGO_API_URL": emu.zego_agent_url,
        "ROOMWARDEN_ZEGO_RTC_URL": emu.zego_rtc_url,
        "ROOMWARDEN_POLICIES_FILE": str(directory / "policies.toml"),
        "ROOMWARDEN_POLICY_INTERVAL_SECONDS": "0.5",
        "ROOMWARDEN_START_RETRY_BASE_SECONDS": "0.2",
        "ROOMWARDEN_ACTION_STALE_SECONDS": "5",
    }
    d = _deployment(lab, "beat_kill", env=env, port=port, apps=APPS[:1]).start()
    try:
        rooms = [f"chaos_idle_{n}" for n in range(sessions)]
        for n, room in enumerate(rooms):
            emu.control.join(room, f"user_{n}")
            answer = d.api.post("/v1/sessions", json=zego_request(room, f"user_{n}", n))
            assert answer.status_code == 202, answer.text

        def recycles() -> tuple[int, int]:
            with DbSession(d.engine) as db:
                states = list(db.scalars(select(PolicyAction.state)))
            return len(states), states.count("done")

        wait_until(lambda: recycles()[0] > 0, lab.converge_timeout, f"a recycle decided\n{d.logs()}")
        decided, done = recycles()
        d.stack.beat.kill()
        # The worker runs the actions beat's scans decided: killed too, any it had claimed are
        # taken over once stale (ROOMWARDEN_ACTION_STALE_SECONDS), and must not run twice.
        d.stack.worker.kill()
        time.sleep(1.5)  # three rounds the dead beat does not send
        d.stack.beat.start()
        d.stack.worker.start()
        wait_until(
            lambda: len(instances_of(d.engine)) == sessions,
            lab.converge_timeout,
            f"an agent for every session: {instances_of(d.engine)}\n{d.logs()}",
        )
        instances = instances_of(d.engine)
        app = APPS[0].app_id
        events: Counter[tuple[Any, ...]] = Counter()
        for room in rooms:
            events[("session.created", app, room)] += 1
            for instance in instances.get((app, room), []):
                events[("session.active", app, room, instance)] += 1
            events[("session.ended", app, room, "idle", 0, "policy", 0)] += 1
            events[("action.completed", app, room, "recycle", "idle")] += 1
        expected = Expectation(
            sessions={(app, room): ("ended", "idle", 0) for room in rooms},
            turns={},
            exceptions={},
            actions=Counter((app, room, "recycle", "idle", "done") for room in rooms),
            events=events,
            callbacks=None,  # the emulator's own count: whatever it sent must be applied
        )
        sent = SendReport(callbacks=sessions)
        outcome = _finish("beat and worker killed mid-recycle", d, lab, expected, sent)
        deletes = emu.control.api_calls("DeleteAgentInstance")
        assert deletes == sessions, f"{deletes} DeleteAgentInstance calls for {sessions} idle agents"
        assert all(len(v) == 1 for v in instances.values()), f"more than one agent per session: {instances}"
        outcome.notes.append(f"killed with {decided} recycles decided, {done} done; {deletes} deletions")
        return outcome
    finally:
        d.stop()


def redis_down(lab: Lab, *, sessions: int, outage: float) -> Outcome:
    """The broker gone for ``outage`` seconds while callbacks keep coming: all applied once, after."""
    redis = lab.redis
    assert redis is not None, "this scenario stops a redis-server of its own"
    convs = conversations(sessions)
    third = len(convs[0].callbacks) // 3
    d = ChaosDeployment(lab.directory / "redis_down", lab.database_url, redis.url).start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sender.send([c.callbacks[:third] for c in convs])
        redis.stop()
        down = time.monotonic()
        sender.send([c.callbacks[third : 2 * third] for c in convs])
        during = sender.acknowledged
        time.sleep(max(0.0, outage - (time.monotonic() - down)))
        redis.start()  # same port, empty: every message published before is gone
        sender.send([c.callbacks[2 * third :] for c in convs])
        outcome = _finish(f"Redis down {outage:g} s", d, lab, expect(convs), sender.stats)
        outcome.notes.append(f"{during - sessions * third} callbacks acknowledged while Redis was down")
        return outcome
    finally:
        sender.close()
        d.stop()


def postgres_restarted(lab: Lab, *, sessions: int) -> Outcome:
    """Postgres restarted (fast shutdown) while callbacks arrive and drains run."""
    assert lab.postgres is not None, "this scenario restarts the database's own cluster"
    convs = conversations(sessions)
    total = sum(len(c.callbacks) for c in convs)
    d = _deployment(lab, "postgres_restart").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sender.start(streams_of(convs))
        sender.wait_acknowledged(total // 3, lab.converge_timeout)
        at = sender.acknowledged
        lab.postgres.stop("fast")
        lab.postgres.start()
        sent = sender.wait(lab.converge_timeout + 120 * lab.scale)
        outcome = _finish("Postgres restarted under load", d, lab, expect(convs), sent)
        outcome.notes.append(
            f"restarted at {at} of {total} acknowledged; {sent.answers.get('503', 0)} refused"
        )
        return outcome
    finally:
        sender.close()
        d.stop()


def duplicate_storm(lab: Lab, *, sessions: int, copies: int = 5) -> Outcome:
    """Every callback sent ``copies`` times at once: each applied, acted on and announced once."""
    convs = conversations(sessions)
    d = _deployment(lab, "duplicates").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sent = sender.send(streams_of(convs), copies=copies)
        return _finish(f"duplicate storm {copies}x", d, lab, expect(convs), sent)
    finally:
        sender.close()
        d.stop()


def reversed_order(lab: Lab, *, sessions: int) -> Outcome:
    """Every callback of every conversation sent in exactly the reverse order, one at a time."""
    convs = conversations(sessions)
    d = _deployment(lab, "reversed").start()
    sender = Sender(d.url, signers(), scale=lab.scale, concurrency=1)
    try:
        sent = sender.send([list(reversed(interleaved(convs)))])
        outcome = _finish("fully reversed order", d, lab, expect(convs, at_most_once=OUT_OF_ORDER), sent)
        outcome.notes.append(
            f"{_turn_events(d)} of {_turns(convs)} turns announced (a Round is announced once)"
        )
        return outcome
    finally:
        sender.close()
        d.stop()


def deletion_before_creation(lab: Lab) -> Outcome:
    """One conversation whose AgentInstanceDeleted is applied before everything else, then the rest
    in order: the app must still hear ``session.active`` (worker/events/sessions.py ``live``)."""
    convs = conversations(1)
    d = _deployment(lab, "deletion_first").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        *rest, deletion = convs[0].callbacks
        sender.send([[deletion]])
        wait_until(lambda: applied(d.engine) == 1, lab.converge_timeout, f"the deletion applied\n{d.logs()}")
        sent = sender.send([rest])
        expected = expect(convs, at_most_once=frozenset({"turn.completed"}))
        return _finish("deletion before creation", d, lab, expected, sent)
    finally:
        sender.close()
        d.stop()


def two_apps_interleaved(lab: Lab, *, sessions: int) -> Outcome:
    """Two ZEGO apps, same instance and room ids, callbacks interleaved: each app's data its own."""
    convs = conversations(sessions, APPS)
    d = _deployment(lab, "two_apps").start()
    sender = Sender(d.url, signers(), scale=lab.scale)
    try:
        sent = sender.send(streams_of(convs))  # convs alternate between the apps already
        return _finish("two apps interleaved", d, lab, expect(convs), sent)
    finally:
        sender.close()
        d.stop()


def _turns(convs: list[Conversation]) -> int:
    return sum(len(c.turns) for c in convs)


def _turn_events(d: ChaosDeployment) -> int:
    return len({r.headers["webhook-id"] for r in d.sink.received if r.event["type"] == "turn.completed"})
