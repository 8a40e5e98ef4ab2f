"""bench/pipeline: callbacks/s from acknowledgement to transcript row, beside a no-op Celery task's rate.

Three measurements in one run, on the same broker (Redis db 13) and with the same worker flags:

1. The no-op task rate: N tasks that only count themselves, published before the worker starts,
   timed from the first completion to the last. This is Celery's own cost per message on this
   machine, the ceiling of any design that enqueues one task per callback.
2. The pipeline: the real receiver and the real worker, conversations of ASRResult, LLMResult and
   AgentInstanceStatus callbacks posted over keep-alive connections, timed from the first
   acknowledgement until every callback is applied (inbox ``done``) and every turn exists.
   Capped by the receiver's ingest rate when the worker keeps up.
3. The backlog apply rate: the tables emptied and Redis flushed, the same kind of load (other
   agent instances) posted to the real receiver with no worker running, so that every callback
   is stored ``pending`` and the receiver's drain messages wait in Redis, as after a worker
   outage; then the real worker is started and timed from the first callback applied to the
   last (and from its start, to show the start-up). This is the worker's capacity to apply,
   which the receiver's ingest rate cannot cap. ``--skip-end-to-end`` runs only 1 and 3.

Target (printed, not enforced): the pipeline, and the backlog apply rate, at >= 5x the no-op
task rate, which is only possible because a drain applies many callbacks per task.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common
import _cpu
import psycopg
import redis
from psycopg import sql

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_pipeline_bench"
BROKER_URL = "redis://127.0.0.1:6379/13"
PATH = "/callbacks/zego"
QUEUE = "roomwarden"  # worker.celery_app.QUEUE: where the receiver's drain messages wait
TARGET_MULTIPLE = 5.0
SENTENCES_PER_REPLY = 6
LOAD_SEED = 13
BACKLOG_SEED = 31  # other AgentInstanceIds (and Nonces) for the backlog phase
# Every table the application writes; emptied (not the alembic stamp) before the backlog phase.
TABLES = (
    "inbox",
    "sessions",
    "agent_instances",
    "turns",
    "agent_sentences",
    "timeline_events",
    "agent_exceptions",
    "user_audio",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pipeline",
        description=(
            "End-to-end callbacks/s (acknowledged -> transcript row visible) with real Celery workers on "
            "Redis and Postgres, then the rate at which a freshly started worker applies a stored backlog,"
            " both beside the rate of a no-op Celery task. Prints figures; no pass/fail."
        ),
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument("--conversations", type=int, default=20, help="agent instances (default 20)")
    parser.add_argument("--callbacks", type=int, default=500, help="callbacks per conversation (default 500)")
    parser.add_argument("--noop-tasks", type=int, default=5000, help="no-op tasks to time (default 5000)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent requests (default 32)")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery prefork processes (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up waiting after this (s)")
    parser.add_argument(
        "--worker-app",
        default="worker.celery_app",
        help="the Celery app the real worker runs (default worker.celery_app), for A/B runs",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the real worker and the receiver, for A/B runs; repeatable",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the worker's pool processes with py-spy (--idle) during the pipeline run and the"
        " backlog run and print where their time goes; those runs' figures are then perturbed",
    )
    parser.add_argument(
        "--skip-end-to-end",
        action="store_true",
        help="run only the no-op tasks and the backlog phase (quicker, for A/B runs of the worker)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- conversations


@dataclass
class Conversation:
    bodies: list[bytes] = field(default_factory=list)
    turns: set[tuple[int, str]] = field(default_factory=set)


def conversation(
    factory: common.CallbackFactory, instance_id: str, count: int, start_ms: int
) -> Conversation:
    """``count`` callbacks of one agent instance, Sequence 1..count, a round every ten callbacks.

    A round: status LISTENING, the user's ASRResult, status THINKING, six LLMResult sentences,
    status SPEAKING. The set of turns it must produce comes along, to know when all are visible.
    """
    conv = Conversation()
    user = f"user_{instance_id[-6:]}"
    for index in range(count):
        sequence, round_, step = index + 1, index // 10 + 1, index % 10
        if step == 1:
            event, data = (
                "ASRResult",
                {"Round": round_, "Text": common.SENTENCES[round_ % len(common.SENTENCES)], "UserId": user},
            )
            conv.turns.add((round_, "user"))
        elif 3 <= step < 3 + SENTENCES_PER_REPLY:
            event, data = "LLMResult", {"Round": round_, "Text": common.sentence(index)}
            conv.turns.add((round_, "agent"))
        else:
            status = {0: "LISTENING", 2: "THINKING"}.get(step, "SPEAKING")
            event, data = "AgentInstanceStatus", {"Round": round_, "Status": status}
        conv.bodies.append(
            factory.body(
                event=event,
                instance_id=instance_id,
                sequence=sequence,
                data=data,
                timestamp_ms=start_ms + 40 * index,
            )
        )
    return conv


def build_load(
    args: argparse.Namespace, secret: str, seed: int = LOAD_SEED
) -> tuple[list[bytes], int, list[str]]:
    """All requests, interleaved across conversations as they would arrive; the turns expected; the instances.

    Another ``seed`` gives other AgentInstanceIds and other Nonces, so nothing collides with a load
    built with the default one.
    """
    if seed == LOAD_SEED:
        factory = common.CallbackFactory(secret)
    else:
        factory = common.CallbackFactory(secret, rng=random.Random(20261121 + seed))
    instances = common.instance_ids(args.conversations, random.Random(seed))
    start_ms = int(time.time() * 1000) - 60_000
    convs = [conversation(factory, instance, args.callbacks, start_ms) for instance in instances]
    requests = [common.http_post(PATH, conv.bodies[step]) for step in range(args.callbacks) for conv in convs]
    return requests, sum(len(conv.turns) for conv in convs), instances


# --------------------------------------------------------------------------- no-op tasks


def worker_argv(app: str, queue: str, concurrency: int) -> list[str]:
    """The worker command, identical for the no-op app and the real one but for the app and queue."""
    return [
        str(common.VENV_BIN / "celery"),
        "-A",
        app,
        "worker",
        "--concurrency",
        str(concurrency),
        "-Q",
        queue,
        "--loglevel",
        "WARNING",
    ]


def wait_for_worker(control_app: Any, server: common.Server, timeout: float = 60.0) -> None:
    """A worker is ready once it answers a broadcast ping; until then it has not begun consuming."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited early:\n{server.log_tail()}")
        if control_app.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"{server.name} did not answer a ping within {timeout:.0f}s:\n{server.log_tail()}")


@dataclass
class NoopResult:
    argv: list[str]
    env_text: str
    tasks: int
    publish_seconds: float
    seconds: float

    @property
    def rate(self) -> float:
        return (self.tasks - 1) / self.seconds


def bench_noop(args: argparse.Namespace, procs: common.Processes, env: dict[str, str]) -> NoopResult:
    """Publish the no-op tasks with no worker running, then start one and time it through them."""
    import noop_app

    client = redis.Redis.from_url(BROKER_URL)
    started = time.monotonic()
    with noop_app.app.producer_or_acquire() as producer:
        for _ in range(args.noop_tasks):
            noop_app.noop.apply_async(args=(args.noop_tasks,), producer=producer)
    publish_seconds = time.monotonic() - started
    argv = worker_argv("bench.noop_app", noop_app.QUEUE, args.concurrency)
    server = procs.start("noop-worker", argv, env)
    try:
        deadline = time.monotonic() + args.timeout
        while client.get(noop_app.LAST) is None:
            if server.process.poll() is not None or time.monotonic() > deadline:
                done = int(client.get(noop_app.COUNTER) or 0)
                raise RuntimeError(f"no-op worker stopped at {done}/{args.noop_tasks}:\n{server.log_tail()}")
            time.sleep(0.05)
        first, last = float(client.get(noop_app.FIRST) or 0), float(client.get(noop_app.LAST) or 0)
    finally:
        procs.stop(server)
    keys = [k for k in env if k.startswith("ROOMWARDEN_")]
    return NoopResult(argv, common.describe_env(env, keys), args.noop_tasks, publish_seconds, last - first)


# --------------------------------------------------------------------------- pipeline


@dataclass
class PipelineResult:
    worker_argv: list[str]
    receiver_argv: list[str]
    worker_env: str
    receiver_env: str
    callbacks: int
    expected_turns: int
    blast: common.BlastResult
    applied_at_last_ack: int = 0
    all_applied: float = 0.0
    done: int = 0
    turns: int = 0
    empty_turns: int = 0
    stored: int = 0
    failed: int = 0
    drain_batches: list[int] = field(default_factory=list)
    drain_transactions: int = 0
    timeline: list[int] = field(default_factory=list)
    cpu: _cpu.CpuMeter | None = None
    profile: list[str] = field(default_factory=list)

    @property
    def end_to_end_seconds(self) -> float:
        return self.all_applied - self.blast.first_ack

    @property
    def rate(self) -> float:
        return self.callbacks / self.end_to_end_seconds

    @property
    def ingest_rate(self) -> float:
        return self.callbacks / max(1e-9, self.blast.last_ack - self.blast.first_ack)


def progress(db: Any) -> tuple[int, int, int]:
    """(callbacks applied, turns visible, callbacks parked as failed)."""
    row = db.execute(
        "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'),"
        " (SELECT count(*) FROM turns) FROM inbox"
    ).fetchone()
    return int(row[0]), int(row[2]), int(row[1])


class Poller(threading.Thread):
    """Watches the database from the first request on, so progress during ingest is seen too.

    It stops by itself once every callback is applied (or parked) and every turn is visible,
    and records when; each poll is one short autocommit query on its own connection.
    """

    def __init__(self, database_url: str, callbacks: int, turns: int, timeout: float) -> None:
        super().__init__(name="poller", daemon=True)
        self._url, self._callbacks, self._turns, self._timeout = database_url, callbacks, turns, timeout
        self.samples: list[tuple[float, int, int, int]] = []  # (perf_counter, done, turns, failed)
        self.finished_at = float("nan")
        self.polls = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.perf_counter() + self._timeout
        with common.connect(self._url) as db:
            while not self._stop_event.is_set():
                now = time.perf_counter()
                done, turns, failed = progress(db)
                self.polls += 1
                self.samples.append((now, done, turns, failed))
                if done + failed >= self._callbacks and turns >= self._turns:
                    self.finished_at = now
                    return
                if now > deadline:
                    return
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop_event.set()

    def at(self, moment: float) -> tuple[float, int, int, int]:
        """The last sample taken at or before ``moment``."""
        before = [sample for sample in self.samples if sample[0] <= moment]
        return before[-1] if before else (moment, 0, 0, 0)


def bench_pipeline(
    args: argparse.Namespace,
    procs: common.Processes,
    secret: str,
    requests: list[bytes],
    expected_turns: int,
) -> PipelineResult:
    import noop_app  # only for its control channel: ping the worker on the shared broker

    database = common.database_name(args.database_url)
    worker_env, receiver_env, extra = pipeline_envs(args, secret)
    port = common.free_port()
    w_argv = worker_argv(args.worker_app, QUEUE, args.concurrency)
    r_argv = common.uvicorn_argv("webhooks.app:app", port)
    worker = procs.start("worker", w_argv, worker_env)
    receiver = procs.start("receiver", r_argv, receiver_env)
    db = common.connect(args.database_url)
    poller = Poller(args.database_url, len(requests), expected_turns, args.timeout)
    spy: Profile | None = None
    try:
        common.wait_for_http(receiver, port, PATH)
        wait_for_worker(noop_app.app, worker)
        postmaster = _cpu.postmaster_pid(db)
        groups: dict[str, Callable[[], Iterable[int]]] = {
            "uvicorn (receiver)": lambda: _cpu.descendants(receiver.pid),
            "celery worker": lambda: _cpu.descendants(worker.pid),
            "postgres backends": lambda: _cpu.postgres_groups(postmaster, database)["postgres backends"],
            "postgres wal/bg": lambda: _cpu.postgres_groups(postmaster, database)["postgres wal/bg"],
        }
        if (redis_pid := _cpu.redis_pid(BROKER_URL)) is not None:
            groups["redis"] = lambda: [redis_pid]
        commits_before = common.xact_commit(db, database)
        if args.profile and (spy := start_profile(worker, procs.log_dir)) is not None:
            spy_pid = spy.process.pid
            groups["py-spy (--profile)"] = lambda: [spy_pid]
        threads = {"uvicorn (receiver)": (receiver.pid, _cpu.thread_names(receiver.pid))}
        meter = _cpu.CpuMeter(groups, threads)
        meter.start()
        poller.start()
        blast = common.blast(port, requests, args.connections)
        poller.join(args.timeout + 5)
        meter.stop()
        result = PipelineResult(
            w_argv,
            r_argv,
            common.describe_env(worker_env, shown_env(worker_env, extra)),
            common.describe_env(receiver_env, shown_env(receiver_env, extra)),
            len(requests),
            expected_turns,
            blast,
            cpu=meter,
        )
        _, result.applied_at_last_ack, _, _ = poller.at(blast.last_ack)
        result.all_applied = poller.finished_at
        result.done, result.turns, result.failed = progress(db)
        last_sample = poller.samples[-1][0] if poller.samples else blast.first_ack
        result.timeline = [
            poller.at(blast.first_ack + step)[1] for step in range(1, int(last_sample - blast.first_ack) + 1)
        ]
        result.stored = int(common.scalar(db, "SELECT count(*) FROM inbox"))
        result.empty_turns = int(common.scalar(db, "SELECT count(*) FROM turns WHERE text = ''"))
        # One drain transaction stamps all it applied with one processed_at: that is its batch.
        result.drain_batches = [
            row[0]
            for row in db.execute(
                "SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL GROUP BY processed_at"
            ).fetchall()
        ]
        writer_batches = int(common.scalar(db, "SELECT count(DISTINCT received_at) FROM inbox"))
        time.sleep(1.5)  # backends report their commit counts at most once a second
        commits = common.xact_commit(db, database) - commits_before
        result.drain_transactions = commits - writer_batches - poller.polls
        if spy is not None:
            result.profile = stop_profile(spy, worker)
    finally:
        poller.stop()
        if spy is not None and spy.process.poll() is None:
            spy.process.kill()
            spy.process.wait()
        db.close()
        procs.stop(receiver)
        procs.stop(worker)
    return result


def pipeline_envs(
    args: argparse.Namespace, secret: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The real worker's environment, the receiver's, and what --worker-env added to both."""
    extra = dict(item.split("=", 1) for item in args.worker_env)
    worker_env = common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=BROKER_URL,
        ROOMWARDEN_LOG_LEVEL="WARNING",
        **extra,
    )
    receiver_env = common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=BROKER_URL,
        ROOMWARDEN_ZEGO_APP_ID=str(common.APP_ID),
        ROOMWARDEN_ZEGO_CALLBACK_SECRET=secret,
        ROOMWARDEN_LOG_LEVEL="WARNING",
        **extra,
    )
    return worker_env, receiver_env, extra


def shown_env(env: dict[str, str], extra: dict[str, str]) -> list[str]:
    """The variables worth printing with a command: ours, and whatever --worker-env added."""
    return [key for key in env if key.startswith("ROOMWARDEN_") or key in extra]


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    argv: list[str]
    output: Path


def start_profile(worker: common.Server, log_dir: Path, name: str = "worker") -> Profile | None:
    """py-spy on the worker and its pool, idle time included: waiting on Postgres locks is the point."""
    py_spy = common.VENV_BIN / "py-spy"
    if not py_spy.exists():
        print("   --profile: py-spy is not installed (.venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    output = log_dir / f"{name}.pyspy.txt"
    argv = [
        str(py_spy), "record", "--pid", str(worker.pid), "--subprocesses", "--idle", "--rate", "100",
        "--nonblocking", "--format", "raw", "--output", str(output),
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches to each process before the load starts
    return Profile(process, argv, output)


def stop_profile(spy: Profile, worker: common.Server) -> list[str]:
    """SIGINT makes py-spy write what it has; then summarise the pool processes, not the idle parent."""
    spy.process.send_signal(signal.SIGINT)
    try:
        spy.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.process.kill()
        spy.process.wait()
    return [
        f"  $ {shlex.join(spy.argv)}",
        *_cpu.summarize_pyspy(
            spy.output,
            what="samples of the pool processes (idle included)",
            by="process",
            skip=lambda owner: owner.startswith(f"process {worker.pid}:"),
        ),
    ]


# --------------------------------------------------------------------------- backlog


@dataclass
class BacklogResult:
    worker_argv: list[str]
    receiver_argv: list[str]
    worker_env: str
    receiver_env: str
    callbacks: int
    expected_turns: int
    blast: common.BlastResult
    stored_after_last_ack: float = 0.0
    pending: int = 0  # inbox rows pending when the worker started
    messages_waiting: int = 0  # drain messages in Redis when the worker started
    messages_left: int = 0  # and when it was stopped, all applied
    worker_started: float = 0.0
    first_applied: float = float("nan")
    applied_at_first: int = 0  # applied at the first poll that saw any applied
    all_applied: float = float("nan")
    done: int = 0
    turns: int = 0
    empty_turns: int = 0
    stored: int = 0
    failed: int = 0
    drain_batches: list[int] = field(default_factory=list)
    drain_transactions: int = 0
    timeline: list[int] = field(default_factory=list)
    cpu: _cpu.CpuMeter | None = None
    profile: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done + self.failed >= self.callbacks and self.turns >= self.expected_turns

    @property
    def seconds(self) -> float:
        """From the first poll that saw a callback applied to the one that saw all applied."""
        return self.all_applied - self.first_applied

    @property
    def rate(self) -> float:
        """Callbacks applied after the first applied was seen, per second; like the no-op rate,
        which counts from its first completion, the work finished before the clock starts is left out."""
        if not self.seconds > 0:
            return float("nan")
        return (self.callbacks - self.applied_at_first) / self.seconds

    @property
    def startup_seconds(self) -> float:
        return self.first_applied - self.worker_started

    @property
    def from_start_seconds(self) -> float:
        return self.all_applied - self.worker_started

    @property
    def from_start_rate(self) -> float:
        return self.callbacks / self.from_start_seconds

    @property
    def ingest_rate(self) -> float:
        return self.callbacks / max(1e-9, self.blast.last_ack - self.blast.first_ack)


def empty_tables(database_url: str) -> None:
    """TRUNCATE every application table (identities restarted): the schema stays at alembic head."""
    statement = sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
        sql.SQL(", ").join(sql.Identifier(table) for table in TABLES)
    )
    with common.connect(database_url) as db:
        db.execute(statement)


def wait_for_stored(
    database_url: str, callbacks: int, receiver: common.Server, timeout: float
) -> tuple[float, int]:
    """Until the inbox holds every callback: (when, how many of them are pending)."""
    deadline = time.monotonic() + timeout
    with common.connect(database_url) as db:
        while True:
            row = db.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'pending') FROM inbox"
            ).fetchone()
            stored, pending = (int(row[0]), int(row[1])) if row else (0, 0)
            if stored >= callbacks:
                return time.perf_counter(), pending
            if receiver.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the receiver stored {stored:,} of {callbacks:,} callbacks:\n{receiver.log_tail()}"
                )
            time.sleep(0.05)


def wait_for_quiet_queue(broker: redis.Redis, quiet: float = 0.5, timeout: float = 30.0) -> int:
    """Until the drain queue has not grown for ``quiet`` seconds: the enqueuer has published all."""
    deadline = time.monotonic() + timeout
    length, since = int(broker.llen(QUEUE)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_length = int(broker.llen(QUEUE))
        if now_length != length:
            length, since = now_length, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return length


def wait_for_no_clients(admin: psycopg.Connection[Any], database: str, timeout: float = 30.0) -> None:
    """Until no client is connected to ``database``: a backend reports its commit count as it exits."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
    while common.scalar(admin, query, database) and time.monotonic() < deadline:
        time.sleep(0.05)


def bench_backlog(
    args: argparse.Namespace,
    procs: common.Processes,
    secret: str,
    avoid_instances: set[str],
) -> BacklogResult:
    """Store a load with no worker running, then start the worker and time it through the backlog.

    The commit count is taken with no client connected to the benchmark database at either end
    (the receiver is stopped once everything is stored and its drain messages are published, and
    the worker once everything is applied), so it holds the worker's transactions and the
    poller's, which are subtracted; read through the ``postgres`` database, it does not count itself.
    """
    database = common.database_name(args.database_url)
    worker_env, receiver_env, extra = pipeline_envs(args, secret)
    common.flush_redis(BROKER_URL)
    empty_tables(args.database_url)
    requests, expected_turns, instances = build_load(args, secret, seed=BACKLOG_SEED)
    if clash := avoid_instances.intersection(instances):
        raise RuntimeError(f"backlog AgentInstanceIds collide with the first phase's: {sorted(clash)}")
    broker = redis.Redis.from_url(BROKER_URL)
    port = common.free_port()
    w_argv = worker_argv(args.worker_app, QUEUE, args.concurrency)
    r_argv = common.uvicorn_argv("webhooks.app:app", port)
    receiver = procs.start("backlog-receiver", r_argv, receiver_env)
    admin = psycopg.connect(common.libpq_url(args.database_url, "postgres"), autocommit=True)
    poller = Poller(args.database_url, len(requests), expected_turns, args.timeout)
    worker: common.Server | None = None
    spy: Profile | None = None
    try:
        common.wait_for_http(receiver, port, PATH)
        blast = common.blast(port, requests, args.connections)
        result = BacklogResult(
            w_argv,
            r_argv,
            common.describe_env(worker_env, shown_env(worker_env, extra)),
            common.describe_env(receiver_env, shown_env(receiver_env, extra)),
            len(requests),
            expected_turns,
            blast,
        )
        stored_at, result.pending = wait_for_stored(args.database_url, len(requests), receiver, args.timeout)
        result.stored_after_last_ack = stored_at - blast.last_ack
        wait_for_quiet_queue(broker)
        procs.stop(receiver)  # it would only idle; stopping it flushes its enqueuer and its commit counts
        wait_for_no_clients(admin, database)
        result.messages_waiting = int(broker.llen(QUEUE))
        postmaster = _cpu.postmaster_pid(admin)
        commits_before = common.xact_commit(admin, database)

        def worker_pids() -> Iterable[int]:
            return _cpu.descendants(worker.pid) if worker is not None else []

        groups: dict[str, Callable[[], Iterable[int]]] = {
            "celery worker": worker_pids,
            "postgres backends": lambda: _cpu.postgres_groups(postmaster, database)["postgres backends"],
            "postgres wal/bg": lambda: _cpu.postgres_groups(postmaster, database)["postgres wal/bg"],
        }
        if (redis_pid := _cpu.redis_pid(BROKER_URL)) is not None:
            groups["redis"] = lambda: [redis_pid]
        meter = _cpu.CpuMeter(groups)
        poller.start()
        meter.start()
        result.worker_started = time.perf_counter()
        worker = procs.start("backlog-worker", w_argv, worker_env)
        if args.profile and (spy := start_profile(worker, procs.log_dir, "backlog-worker")) is not None:
            spy_pid = spy.process.pid
            groups["py-spy (--profile)"] = lambda: [spy_pid]
        poller.join(args.timeout + 5)
        meter.stop()
        result.cpu = meter
        result.all_applied = poller.finished_at
        first = next(((t, done) for t, done, _, _ in poller.samples if done > 0), None)
        if first is not None:
            result.first_applied, result.applied_at_first = first
        last_sample = poller.samples[-1][0] if poller.samples else result.worker_started
        result.timeline = [
            poller.at(result.worker_started + step)[1]
            for step in range(1, int(last_sample - result.worker_started) + 1)
        ]
        result.messages_left = int(broker.llen(QUEUE))
        if spy is not None:
            result.profile = stop_profile(spy, worker)
        procs.stop(worker)
        poller.stop()
        poller.join(5)
        wait_for_no_clients(admin, database)
        # What remains is the worker's; the poller's connection start-up counts one more.
        result.drain_transactions = common.xact_commit(admin, database) - commits_before - poller.polls - 1
        with common.connect(args.database_url) as db:
            result.done, result.turns, result.failed = progress(db)
            result.stored = int(common.scalar(db, "SELECT count(*) FROM inbox"))
            result.empty_turns = int(common.scalar(db, "SELECT count(*) FROM turns WHERE text = ''"))
            result.drain_batches = [
                row[0]
                for row in db.execute(
                    "SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL GROUP BY processed_at"
                ).fetchall()
            ]
    finally:
        poller.stop()
        if spy is not None and spy.process.poll() is None:
            spy.process.kill()
            spy.process.wait()
        admin.close()
        for server in (receiver, worker):
            if server is not None and server.process.poll() is None:
                procs.stop(server)
    return result


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, noop: NoopResult, pipe: PipelineResult) -> None:
    report_noop(noop)
    report_pipeline(args, noop, pipe)


def report_noop(noop: NoopResult) -> None:
    print()
    print("No-op Celery task (bench/noop_app.py; delivery settings copied from worker.celery_app):")
    print(f"  $ {noop.env_text} \\\n      {shlex.join(noop.argv)}")
    print(
        f"  {noop.tasks:,} tasks published beforehand in {noop.publish_seconds:.1f}s;"
        " first to last completion"
        f" {noop.seconds:.2f}s = {noop.rate:,.0f} tasks/s"
    )


def report_pipeline(args: argparse.Namespace, noop: NoopResult, pipe: PipelineResult) -> None:
    blast = pipe.blast
    print()
    print("Pipeline (real receiver + real worker):")
    print(f"  worker:   $ {pipe.worker_env} \\\n              {shlex.join(pipe.worker_argv)}")
    print(f"  receiver: $ {pipe.receiver_env} \\\n              {shlex.join(pipe.receiver_argv)}")
    print(
        f"  load:     {args.conversations} conversations x {args.callbacks} callbacks = {pipe.callbacks:,}"
        f" (ASRResult 10%, LLMResult {SENTENCES_PER_REPLY * 10}%, AgentInstanceStatus 30%), signed, distinct"
        f" Sequence;\n            posted by this script over {args.connections} keep-alive connections"
        " (pre-built requests, asyncio+uvloop), interleaved across conversations"
    )
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(blast.statuses.items()))
    print(
        f"  acknowledged: {statuses}; connection errors {blast.errors};"
        f" ack latency p50 {1000 * common.percentile(blast.latencies, 50):.1f} ms,"
        f" p99 {1000 * common.percentile(blast.latencies, 99):.1f} ms"
    )
    print(
        f"  first ack -> last ack      {blast.last_ack - blast.first_ack:7.2f}s"
        f"   ingest {pipe.ingest_rate:8,.0f}/s"
        f"   (applied by the last ack: {pipe.applied_at_last_ack:,})"
    )
    complete = pipe.done + pipe.failed >= pipe.callbacks and pipe.turns >= pipe.expected_turns
    print(
        f"  first ack -> all applied   {pipe.end_to_end_seconds:7.2f}s"
        f"   end to end {pipe.rate:4,.0f} callbacks/s"
        + ("" if complete else f"   INCOMPLETE after {args.timeout:.0f}s timeout")
    )
    print(
        f"  database: inbox {pipe.stored:,} rows, done {pipe.done:,}, failed {pipe.failed:,};"
        f" turns {pipe.turns:,} of {pipe.expected_turns:,} expected ({pipe.empty_turns} with empty text)"
    )
    if pipe.timeline:
        print("  applied, each second after the first ack: " + ", ".join(f"{n:,}" for n in pipe.timeline))
    if pipe.drain_batches:
        batches = sorted(pipe.drain_batches)
        print(
            f"  drain transactions that applied something {len(batches):,}: mean"
            f" {sum(batches) / len(batches):.1f} callbacks, median {common.percentile(batches, 50):.0f},"
            f" p90 {common.percentile(batches, 90):.0f}, max {batches[-1]} (rows sharing one processed_at)"
        )
        print(
            f"  all drain transactions, from pg_stat_database: ~{pipe.drain_transactions:,}"
            f" (so ~{max(0, pipe.drain_transactions - len(batches)):,} found nothing to apply)"
        )
    print()
    multiple = pipe.rate / noop.rate
    print("Target (reported, not enforced):")
    print(
        f"  end to end / no-op task rate = {pipe.rate:,.0f} / {noop.rate:,.0f} = {multiple:.1f}x"
        f"   target >= {TARGET_MULTIPLE:.0f}x   {'met' if multiple >= TARGET_MULTIPLE else 'NOT met'}"
    )
    if pipe.cpu is not None:
        print()
        cores = os.cpu_count() or 1
        print(
            f"CPU from first request to all applied ({cores} cores = {100 * cores}%; the load generator is"
            " 'this benchmark'):"
        )
        print("\n".join(pipe.cpu.report()))
    if pipe.profile:
        print()
        print("Worker profile (py-spy; this run's figures are perturbed by the sampling):")
        print("\n".join(pipe.profile))


def report_backlog(
    args: argparse.Namespace, noop: NoopResult, back: BacklogResult, *, after_pipeline: bool
) -> None:
    blast = back.blast
    print()
    print("Backlog apply rate (callbacks stored with no worker running, then the real worker started):")
    if after_pipeline:
        print("  worker and receiver: the commands above (new processes)")
    else:
        print(f"  worker:   $ {back.worker_env} \\\n              {shlex.join(back.worker_argv)}")
        print(f"  receiver: $ {back.receiver_env} \\\n              {shlex.join(back.receiver_argv)}")
    print(
        f"  load:     {args.conversations} conversations x {args.callbacks} callbacks = {back.callbacks:,},"
        f" as {'above' if after_pipeline else 'the pipeline'} but other AgentInstanceIds; the"
        f" {len(TABLES)} application tables\n            truncated and Redis db 13 flushed first;"
        f" posted over {args.connections} keep-alive connections"
    )
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(blast.statuses.items()))
    print(
        f"  ingest, no worker running: {statuses}; connection errors {blast.errors};"
        f" first ack -> last ack {blast.last_ack - blast.first_ack:.2f}s ({back.ingest_rate:,.0f}/s)"
    )
    print(
        f"  stored: inbox {back.callbacks:,} rows, {back.pending:,} pending"
        f" ({back.stored_after_last_ack:.2f}s after the last ack);"
        f" {back.messages_waiting:,} drain messages waiting in Redis (the receiver's enqueuer);"
        " receiver then stopped"
    )
    print(f"  worker start -> first applied   {back.startup_seconds:7.2f}s   (process and pool start-up)")
    print(
        f"  first applied -> all applied    {back.seconds:7.2f}s"
        f"   ({back.applied_at_first:,} already applied when the first was seen)"
    )
    complete = "" if back.complete else f"   INCOMPLETE after {args.timeout:.0f}s timeout"
    print(
        f"  worker start -> all applied     {back.from_start_seconds:7.2f}s"
        f"   {back.from_start_rate:,.0f} callbacks/s including start-up{complete}"
    )
    print(
        f"  backlog apply rate: {back.rate:,.0f} callbacks/s ({back.callbacks:,} callbacks,"
        f" {back.seconds:.2f} s from first applied to last)"
    )
    print(
        f"    = ({back.callbacks:,} - {back.applied_at_first:,} applied before the clock started)"
        f" / {back.seconds:.2f}s, as the no-op rate counts from its first completion"
    )
    print(
        f"  database: inbox {back.stored:,} rows, done {back.done:,}, failed {back.failed:,};"
        f" turns {back.turns:,} of {back.expected_turns:,} expected ({back.empty_turns} with empty text)"
    )
    if back.timeline:
        applied = ", ".join(f"{n:,}" for n in back.timeline)
        print(f"  applied, each second after the worker started: {applied}")
    if back.drain_batches:
        batches = sorted(back.drain_batches)
        print(
            f"  drain transactions that applied something {len(batches):,}: mean"
            f" {sum(batches) / len(batches):.1f} callbacks, median {common.percentile(batches, 50):.0f},"
            f" p90 {common.percentile(batches, 90):.0f}, max {batches[-1]} (rows sharing one processed_at)"
        )
    print(
        f"  all drain transactions, from pg_stat_database: {back.drain_transactions:,}"
        f" (so {max(0, back.drain_transactions - len(back.drain_batches)):,} found nothing to apply);"
        f" mean {back.callbacks / max(1, back.drain_transactions):.1f} callbacks per transaction"
    )
    print(
        f"  drain messages consumed {back.messages_waiting - back.messages_left:,} of"
        f" {back.messages_waiting:,} by the time all were applied (the worker was then stopped)"
    )
    print()
    multiple = back.rate / noop.rate
    verdict = "met" if multiple >= TARGET_MULTIPLE else "NOT met"
    if multiple != multiple:  # nan: nothing was left to time after the first poll saw any applied
        verdict = "not measured (all applied by the first commit seen; use a larger load)"
    print("Target (reported, not enforced):")
    print(
        f"  backlog apply rate / no-op task rate = {back.rate:,.0f} / {noop.rate:,.0f} = {multiple:.1f}x"
        f"   target >= {TARGET_MULTIPLE:.0f}x   {verdict}"
    )
    if back.cpu is not None:
        print()
        cores = os.cpu_count() or 1
        print(
            f"CPU from worker start to all applied ({cores} cores = {100 * cores}%; the receiver was stopped;"
            " 'this benchmark' is its poller):"
        )
        print("\n".join(back.cpu.report()))
    if back.profile:
        print()
        print("Backlog worker profile (py-spy; this run's figures are perturbed by the sampling):")
        print("\n".join(back.profile))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.terminate_on_sigterm()
    # The bench process imports bench/noop_app.py (to publish, and to ping workers) with these.
    os.environ["ROOMWARDEN_BROKER_URL"] = BROKER_URL
    os.environ["ROOMWARDEN_DATABASE_URL"] = args.database_url
    if args.skip_end_to_end:
        common.header("bench/pipeline: backlog apply rate vs a no-op Celery task (--skip-end-to-end)")
    else:
        common.header("bench/pipeline: end-to-end callbacks/s vs a no-op Celery task")
    workdir = Path(tempfile.mkdtemp(prefix="roomwarden-bench-pipeline-"))
    secret = secrets.token_urlsafe(24)
    try:
        common.recreate_database(args.database_url)
        common.alembic_upgrade(args.database_url)
        common.flush_redis(BROKER_URL)
        print(
            f"   database {common.database_name(args.database_url)} re-created at alembic head;"
            " Redis db 13 flushed"
        )
        with common.Processes(workdir) as procs:
            # ROOMWARDEN_LOG_LEVEL as well as --loglevel: worker.celery_app's setup_logging handler
            # configures logging from the settings, so --loglevel alone leaves a line per task.
            noop_env = common.child_env(
                ROOMWARDEN_DATABASE_URL=args.database_url,
                ROOMWARDEN_BROKER_URL=BROKER_URL,
                ROOMWARDEN_LOG_LEVEL="WARNING",
            )
            noop = bench_noop(args, procs, noop_env)
            common.flush_redis(BROKER_URL)
            first_instances: set[str] = set()
            if args.skip_end_to_end:
                report_noop(noop)
            else:
                requests, expected_turns, instances = build_load(args, secret)
                first_instances.update(instances)
                pipe = bench_pipeline(args, procs, secret, requests, expected_turns)
                report(args, noop, pipe)
            sys.stdout.flush()
            backlog = bench_backlog(args, procs, secret, first_instances)
        report_backlog(args, noop, backlog, after_pipeline=not args.skip_end_to_end)
    except KeyboardInterrupt:
        print("\ninterrupted; workers and servers stopped", file=sys.stderr)
        return 130
    finally:
        common.flush_redis(BROKER_URL)
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
