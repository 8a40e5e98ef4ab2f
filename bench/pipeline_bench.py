"""bench/pipeline: callbacks/s from acknowledgement to transcript row, beside a no-op Celery task's rate
and beside the naive design (verify, one Celery task per callback, apply with the ORM).

Four measurements in one run, on the same broker (``--redis-url``, Redis db 13 by default) and
with the same worker flags:

1. The no-op task rate: N tasks that only count themselves, published before the worker starts,
   timed from the first completion to the last. This is Celery's own cost per message on this
   machine, the ceiling of any design that enqueues one task per callback.
2. The pipeline: the real receiver and the real worker, conversations of ASRResult, LLMResult and
   AgentInstanceStatus callbacks posted over keep-alive connections, timed from the first
   acknowledgement until every callback is applied (inbox ``done``) and every turn exists.
   Capped by the receiver's ingest rate when the worker keeps up. The CPU the machine under test
   spends meanwhile (receiver, worker, the database's backends, Redis) per callback is the
   ``CPU per callback end to end`` figure; the load generator and the rest are shown beside it.
3. The naive peer (``bench/naive_app.py``): the same load shape on other agent instances, the
   tables emptied and Redis flushed first, posted the same way to its receiver (the same
   contract) and applied by its worker (the same flags), timed the same way: from the first
   acknowledgement until every callback has left its row and every turn exists.
   ``--skip-naive`` leaves it out.
4. The backlog apply rate: the tables emptied and Redis flushed, the same kind of load (other
   agent instances) posted to the real receiver with no worker running, so that every callback
   is stored ``pending`` and the receiver's drain messages wait in Redis, as after a worker
   outage; then the real worker is started and timed from the first callback applied to the
   last (and from its start, to show the start-up). This is the worker's capacity to apply,
   which the receiver's ingest rate cannot cap. ``--skip-end-to-end`` runs only 1 and 4.

Targets (printed, not enforced): the pipeline, and the backlog apply rate, at >= 5x the no-op
task rate, which is only possible because a drain applies many callbacks per task; end to end
>= 10x the naive design; <= 250 us of CPU per callback for the machine under test.

The output closes with lines other programs read (exactly these forms)::

    CPU per callback end to end = N us
    end to end / naive = N.Nx

and the naive phase prints ``naive end to end = N callbacks/s`` and
``naive CPU per callback end to end = N us``.
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
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
PATH = "/callbacks/zego"
QUEUE = "roomwarden"  # worker.celery_app.QUEUE: where the receiver's drain messages wait
TARGET_MULTIPLE = 5.0
TARGET_NAIVE_MULTIPLE = 10.0
TARGET_CPU_US = 250
SENTENCES_PER_REPLY = 6
LOAD_SEED = 13
BACKLOG_SEED = 31  # other AgentInstanceIds (and Nonces) for the backlog phase
NAIVE_SEED = 53  # and for the naive phase
# The machine under test, summed into "CPU per callback end to end"; every other group is shown
# beside it. The load generator is this process (its posting client and its poller).
UNDER_TEST = ("uvicorn (receiver)", "celery worker", "postgres backends", "redis")
GROUP_NOTES = {
    "postgres wal/bg": "postgres server-wide (WAL writer, checkpointer)",
    "postgres other databases": "postgres, other databases' backends",
    "postgres (this benchmark)": "postgres, this benchmark's own backends",
}
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
            "Redis and Postgres and the machine's CPU per callback, the same for the naive design (one "
            "Celery task per callback, applied with the ORM), then the rate at which a freshly started"
            " worker applies a stored backlog, beside the rate of a no-op Celery task. Prints figures;"
            " no pass/fail."
        ),
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"the broker, a Redis db of the run's own: flushed (default {DEFAULT_REDIS_URL})",
    )
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
        help="run only the no-op tasks and the backlog phase (quicker, for A/B runs of the worker);"
        " implies --skip-naive",
    )
    parser.add_argument(
        "--skip-naive",
        action="store_true",
        help="leave out the naive peer's phase (bench/naive_app.py) and so the end to end / naive line",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- conversations


@dataclass
class Conversation:
    bodies: list[bytes] = field(default_factory=list)
    # (Round, speaker) -> the text the turn must end with; an agent's is its sentences joined.
    texts: dict[tuple[int, str], str] = field(default_factory=dict)


@dataclass
class Load:
    requests: list[bytes]
    # (AgentInstanceId, Round, speaker) -> text: every turn the load must leave, and its words.
    expected: dict[tuple[str, int, str], str]
    instances: list[str]

    @property
    def turns(self) -> int:
        return len(self.expected)


def conversation(
    factory: common.CallbackFactory, instance_id: str, count: int, start_ms: int
) -> Conversation:
    """``count`` callbacks of one agent instance, Sequence 1..count, a round every ten callbacks.

    A round: status LISTENING, the user's ASRResult, status THINKING, six LLMResult sentences,
    status SPEAKING. The turns it must produce come along with their text, to know when all are
    visible and to check what they say.
    """
    conv = Conversation()
    user = f"user_{instance_id[-6:]}"
    replies: dict[int, list[str]] = {}
    for index in range(count):
        sequence, round_, step = index + 1, index // 10 + 1, index % 10
        data: dict[str, Any]
        if step == 1:
            text = common.SENTENCES[round_ % len(common.SENTENCES)]
            event, data = "ASRResult", {"Round": round_, "Text": text, "UserId": user}
            conv.texts[(round_, "user")] = text
        elif 3 <= step < 3 + SENTENCES_PER_REPLY:
            text = common.sentence(index)
            event, data = "LLMResult", {"Round": round_, "Text": text}
            replies.setdefault(round_, []).append(text)
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
    # Latin sentences in Sequence order, one space apart (worker/sessions/transcripts.py).
    conv.texts.update({(round_, "agent"): " ".join(texts) for round_, texts in replies.items()})
    return conv


def build_load(args: argparse.Namespace, secret: str, seed: int = LOAD_SEED) -> Load:
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
    expected = {
        (instance, round_, speaker): text
        for instance, conv in zip(instances, convs, strict=True)
        for (round_, speaker), text in conv.texts.items()
    }
    return Load(requests, expected, instances)


def turns_as_expected(db: Any, expected: dict[tuple[str, int, str], str]) -> int:
    """How many of the expected turns exist with exactly the expected text."""
    rows = db.execute(
        "SELECT i.agent_instance_id, t.round, t.speaker, t.text"
        " FROM turns t JOIN agent_instances i ON i.id = t.instance_id"
    ).fetchall()
    return sum(
        1 for instance, round_, speaker, text in rows if expected.get((instance, round_, speaker)) == text
    )


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

    client = redis.Redis.from_url(args.redis_url)
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


@dataclass(frozen=True)
class Design:
    """What a pipeline phase runs: roomwarden, or the naive peer (bench/naive_app.py)."""

    name: str
    receiver_app: str
    worker_app: str
    queue: str
    # (callbacks applied, turns visible, callbacks parked as failed), from the database.
    progress: Callable[[Any], tuple[int, int, int]]
    inbox: bool  # roomwarden's inbox holds drain batches and commit counts worth reporting


@dataclass
class PipelineResult:
    design: Design
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
    turns_as_expected: int = 0
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

    @property
    def complete(self) -> bool:
        return self.done + self.failed >= self.callbacks and self.turns_as_expected >= self.expected_turns

    def cpu_per_callback(self) -> CpuPerCallback:
        assert self.cpu is not None
        return CpuPerCallback.of(self.cpu, self.callbacks)


@dataclass
class CpuPerCallback:
    """Microseconds of CPU per callback over a phase: the machine under test's groups, summed, and
    beside them (not summed) the load generator, other groups and the rest of the machine."""

    under_test: list[tuple[str, float]]
    beside: list[tuple[str, float]]

    @property
    def total(self) -> float:
        return sum(us for _, us in self.under_test)

    @classmethod
    def of(cls, meter: _cpu.CpuMeter, callbacks: int) -> CpuPerCallback:
        def us(seconds: float) -> float:
            return 1e6 * seconds / max(1, callbacks)

        under = [(name, us(meter.cpu_seconds.get(name, 0.0))) for name in UNDER_TEST]
        beside = [("load generator (this benchmark: client, poller)", us(meter.own_seconds))]
        beside += [
            (GROUP_NOTES.get(name, name), us(seconds))
            for name, seconds in meter.cpu_seconds.items()
            if name not in UNDER_TEST
        ]
        beside.append(("rest of the machine (processes not started here)", us(meter.rest_seconds())))
        return cls(under, beside)

    def lines(self) -> list[str]:
        out = ["  CPU per callback (CPU time in the window / callbacks), the machine under test:"]
        out += [f"    {name:<50}{value:>8.0f} us" for name, value in self.under_test]
        out.append(f"    {'= machine under test':<50}{self.total:>8.0f} us")
        out.append("  beside it, not in the sum:")
        out += [f"    {name:<50}{value:>8.0f} us" for name, value in self.beside]
        return out


def progress(db: Any) -> tuple[int, int, int]:
    """Roomwarden: (callbacks applied, turns visible, callbacks parked as failed)."""
    row = db.execute(
        "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'),"
        " (SELECT count(*) FROM turns) FROM inbox"
    ).fetchone()
    return int(row[0]), int(row[2]), int(row[1])


def naive_progress(db: Any) -> tuple[int, int, int]:
    """The naive peer has no inbox: each callback of this load leaves exactly one row of its own
    (an LLMResult its sentence, an AgentInstanceStatus its timeline event, an ASRResult its Round's
    user turn), so those rows count the callbacks applied. Nothing is ever parked."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM agent_sentences) + (SELECT count(*) FROM timeline_events)"
        " + (SELECT count(*) FROM turns WHERE speaker = 'user'), (SELECT count(*) FROM turns)"
    ).fetchone()
    return int(row[0]), int(row[1]), 0


class Poller(threading.Thread):
    """Watches the database from the first request on, so progress during ingest is seen too.

    It stops by itself once every callback is applied (or parked) and every turn is visible,
    and records when; each poll is one short autocommit query on its own connection. With
    ``keep_open`` its connection stays open until ``stop()``, so that a CPU meter still sees its
    backend (and can leave it out of the machine under test) when it stops.
    """

    def __init__(
        self,
        database_url: str,
        callbacks: int,
        turns: int,
        timeout: float,
        progress: Callable[[Any], tuple[int, int, int]] = progress,
        *,
        keep_open: bool = False,
    ) -> None:
        super().__init__(name="poller", daemon=True)
        self._url, self._callbacks, self._turns, self._timeout = database_url, callbacks, turns, timeout
        self._progress, self._keep_open = progress, keep_open
        self.samples: list[tuple[float, int, int, int]] = []  # (perf_counter, done, turns, failed)
        self.finished_at = float("nan")
        self.polls = 0
        self.backend_pid: int | None = None
        self.finished = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.perf_counter() + self._timeout
        with common.connect(self._url) as db:
            self.backend_pid = db.info.backend_pid
            try:
                self._poll(db, deadline)
            finally:
                self.finished.set()
            if self._keep_open:
                self._stop_event.wait()

    def _poll(self, db: Any, deadline: float) -> None:
        while not self._stop_event.is_set():
            now = time.perf_counter()
            done, turns, failed = self._progress(db)
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


def roomwarden_design(args: argparse.Namespace) -> Design:
    return Design("roomwarden", "webhooks.app:app", args.worker_app, QUEUE, progress, inbox=True)


def naive_design() -> Design:
    import naive_app

    return Design(
        "naive", "bench.naive_app:web", "bench.naive_app", naive_app.QUEUE, naive_progress, inbox=False
    )


def bench_pipeline(
    args: argparse.Namespace,
    procs: common.Processes,
    secret: str,
    load: Load,
    design: Design,
) -> PipelineResult:
    """Receiver and worker of ``design`` running, the load posted, timed until all is applied."""
    import noop_app  # only for its control channel: ping the worker on the shared broker

    database = common.database_name(args.database_url)
    naive = design.name == "naive"
    worker_env, receiver_env, extra = pipeline_envs(args, secret, with_extra=not naive)
    port = common.free_port()
    w_argv = worker_argv(design.worker_app, design.queue, args.concurrency)
    r_argv = common.uvicorn_argv(design.receiver_app, port)
    prefix = "naive-" if naive else ""
    worker = procs.start(f"{prefix}worker", w_argv, worker_env)
    receiver = procs.start(f"{prefix}receiver", r_argv, receiver_env)
    db = common.connect(args.database_url)
    requests = load.requests
    poller = Poller(
        args.database_url, len(requests), load.turns, args.timeout, design.progress, keep_open=True
    )
    spy: Profile | None = None
    try:
        common.wait_for_http(receiver, port, PATH)
        wait_for_worker(noop_app.app, worker)
        postmaster = _cpu.postmaster_pid(db)
        ours = {db.info.backend_pid}  # this benchmark's own backends: its queries and its poller's

        def postgres(group: str) -> Callable[[], Iterable[int]]:
            def pids() -> list[int]:
                found = _cpu.postgres_groups(postmaster, database)[group]
                return [pid for pid in found if pid not in ours] if group == "postgres backends" else found

            return pids

        def bench_backends() -> list[int]:
            found = set(_cpu.postgres_groups(postmaster, database)["postgres backends"])
            return sorted(found & (ours | {poller.backend_pid or 0}))

        groups: dict[str, Callable[[], Iterable[int]]] = {
            "uvicorn (receiver)": lambda: _cpu.descendants(receiver.pid),
            "celery worker": lambda: _cpu.descendants(worker.pid),
            "postgres backends": postgres("postgres backends"),
            "postgres wal/bg": postgres("postgres wal/bg"),
            "postgres other databases": postgres("postgres other databases"),
            "postgres (this benchmark)": bench_backends,
        }
        if (redis_pid := _cpu.redis_pid(args.redis_url)) is not None:
            groups["redis"] = lambda: [redis_pid]
        commits_before = common.xact_commit(db, database)
        if args.profile and not naive and (spy := start_profile(worker, procs.log_dir)) is not None:
            spy_pid = spy.process.pid
            groups["py-spy (--profile)"] = lambda: [spy_pid]
        threads = {"uvicorn (receiver)": (receiver.pid, _cpu.thread_names(receiver.pid))}
        meter = _cpu.CpuMeter(groups, threads)
        meter.start()
        poller.start()
        blast = common.blast(port, requests, args.connections)
        poller.finished.wait(args.timeout + 5)
        if poller.backend_pid is not None:
            ours.add(poller.backend_pid)
        meter.stop()
        poller.stop()
        poller.join(5)
        result = PipelineResult(
            design,
            w_argv,
            r_argv,
            common.describe_env(worker_env, shown_env(worker_env, extra)),
            common.describe_env(receiver_env, shown_env(receiver_env, extra)),
            len(requests),
            load.turns,
            blast,
            cpu=meter,
        )
        _, result.applied_at_last_ack, _, _ = poller.at(blast.last_ack)
        result.all_applied = poller.finished_at
        result.done, result.turns, result.failed = design.progress(db)
        result.turns_as_expected = turns_as_expected(db, load.expected)
        last_sample = poller.samples[-1][0] if poller.samples else blast.first_ack
        result.timeline = [
            poller.at(blast.first_ack + step)[1] for step in range(1, int(last_sample - blast.first_ack) + 1)
        ]
        result.empty_turns = int(common.scalar(db, "SELECT count(*) FROM turns WHERE text = ''"))
        if design.inbox:
            inbox_figures(db, database, result, commits_before, poller.polls)
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


def inbox_figures(db: Any, database: str, result: PipelineResult, commits_before: int, polls: int) -> None:
    """Rows stored, drain batches and drain transactions: what roomwarden's inbox tells of a phase."""
    result.stored = int(common.scalar(db, "SELECT count(*) FROM inbox"))
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
    result.drain_transactions = commits - writer_batches - polls


def pipeline_envs(
    args: argparse.Namespace, secret: str, *, with_extra: bool = True
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The real worker's environment, the receiver's, and what --worker-env added to both (not to
    the naive peer's: those A/B settings are roomwarden's)."""
    extra = dict(item.split("=", 1) for item in args.worker_env) if with_extra else {}
    worker_env = common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=args.redis_url,
        ROOMWARDEN_LOG_LEVEL="WARNING",
        **extra,
    )
    receiver_env = common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=args.redis_url,
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
    turns_as_expected: int = 0
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
        return self.done + self.failed >= self.callbacks and self.turns_as_expected >= self.expected_turns

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
    common.flush_redis(args.redis_url)
    empty_tables(args.database_url)
    load = build_load(args, secret, seed=BACKLOG_SEED)
    requests, expected_turns = load.requests, load.turns
    if clash := avoid_instances.intersection(load.instances):
        raise RuntimeError(f"backlog AgentInstanceIds collide with an earlier phase's: {sorted(clash)}")
    broker = redis.Redis.from_url(args.redis_url)
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
            "postgres other databases": lambda: _cpu.postgres_groups(postmaster, database)[
                "postgres other databases"
            ],
        }
        if (redis_pid := _cpu.redis_pid(args.redis_url)) is not None:
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
            result.turns_as_expected = turns_as_expected(db, load.expected)
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
    naive = pipe.design.name == "naive"
    print()
    if naive:
        print(
            "Naive peer (bench/naive_app.py: verify, apply_async per callback, a task applies it with the"
            " ORM;\n  same contract, tables, broker, worker flags and load shape; the application tables"
            f" truncated and Redis ({args.redis_url}) flushed first):"
        )
    else:
        print("Pipeline (real receiver + real worker):")
    print(f"  worker:   $ {pipe.worker_env} \\\n              {shlex.join(pipe.worker_argv)}")
    print(f"  receiver: $ {pipe.receiver_env} \\\n              {shlex.join(pipe.receiver_argv)}")
    print(
        f"  load:     {args.conversations} conversations x {args.callbacks} callbacks = {pipe.callbacks:,}"
        f" (ASRResult 10%, LLMResult {SENTENCES_PER_REPLY * 10}%, AgentInstanceStatus 30%), signed, distinct"
        f" Sequence;\n            posted by this script over {args.connections} keep-alive connections"
        " (pre-built requests, asyncio+uvloop), interleaved across conversations"
        + ("; other AgentInstanceIds" if naive else "")
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
    print(
        f"  first ack -> all applied   {pipe.end_to_end_seconds:7.2f}s"
        f"   end to end {pipe.rate:4,.0f} callbacks/s"
        + ("" if pipe.complete else f"   INCOMPLETE after {args.timeout:.0f}s timeout")
    )
    turns = (
        f"turns {pipe.turns:,} of {pipe.expected_turns:,} expected, {pipe.turns_as_expected:,} with the"
        f" expected text ({pipe.empty_turns} with empty text)"
    )
    if naive:
        print(
            f"  database: callbacks applied {pipe.done:,} (one row each: sentence, timeline event,"
            f" user turn); {turns}"
        )
    else:
        print(f"  database: inbox {pipe.stored:,} rows, done {pipe.done:,}, failed {pipe.failed:,}; {turns}")
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
    if not naive:
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
        print("\n".join(pipe.cpu_per_callback().lines()))
    if pipe.profile:
        print()
        print("Worker profile (py-spy; this run's figures are perturbed by the sampling):")
        print("\n".join(pipe.profile))
    if naive:
        print()
        print(f"naive end to end = {pipe.rate:.0f} callbacks/s")
        if pipe.cpu is not None:
            print(f"naive CPU per callback end to end = {pipe.cpu_per_callback().total:.0f} us")


def report_closing(pipe: PipelineResult, naive: PipelineResult | None) -> None:
    """The figures the issue asks for, with their targets, then the lines other programs read."""
    print()
    print("Closing figures (targets reported, not enforced):")
    cpu = pipe.cpu_per_callback().total if pipe.cpu is not None else float("nan")
    under_test = " + ".join(UNDER_TEST)
    print(
        f"  CPU per callback end to end ({under_test}): {cpu:,.0f} us"
        f"   target <= {TARGET_CPU_US} us   {'met' if cpu <= TARGET_CPU_US else 'NOT met'}"
    )
    multiple = float("nan")
    if naive is None:
        print("  end to end / naive: not measured (--skip-naive)")
    else:
        multiple = pipe.rate / naive.rate
        if naive.cpu is not None:
            naive_cpu = naive.cpu_per_callback().total
            print(
                f"  naive CPU per callback end to end: {naive_cpu:,.0f} us"
                f" ({naive_cpu / cpu:.1f}x roomwarden's)"
            )
        incomplete = [p.design.name for p in (pipe, naive) if not p.complete]
        print(
            f"  roomwarden / naive end to end: {pipe.rate:,.0f} / {naive.rate:,.0f} callbacks/s"
            f" = {multiple:.1f}x   target >= {TARGET_NAIVE_MULTIPLE:.0f}x"
            f"   {'met' if multiple >= TARGET_NAIVE_MULTIPLE else 'NOT met'}"
            + (f"   (INCOMPLETE: {', '.join(incomplete)})" if incomplete else "")
        )
    print()
    print(f"CPU per callback end to end = {cpu:.0f} us")
    if naive is not None:
        print(f"end to end / naive = {multiple:.1f}x")


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
        f" {len(TABLES)} application tables\n            truncated and Redis ({args.redis_url})"
        " flushed first;"
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
        f" turns {back.turns:,} of {back.expected_turns:,} expected, {back.turns_as_expected:,} with the"
        f" expected text ({back.empty_turns} with empty text)"
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
    # The bench process imports bench/noop_app.py and bench/naive_app.py (to publish, to ping
    # workers) with these.
    os.environ["ROOMWARDEN_BROKER_URL"] = args.redis_url
    os.environ["ROOMWARDEN_DATABASE_URL"] = args.database_url
    if args.skip_end_to_end:
        common.header("bench/pipeline: backlog apply rate vs a no-op Celery task (--skip-end-to-end)")
    else:
        common.header("bench/pipeline: end-to-end callbacks/s vs a no-op Celery task and the naive design")
    workdir = Path(tempfile.mkdtemp(prefix="roomwarden-bench-pipeline-"))
    secret = secrets.token_urlsafe(24)
    try:
        common.recreate_database(args.database_url)
        common.alembic_upgrade(args.database_url)
        common.flush_redis(args.redis_url)
        print(
            f"   database {common.database_name(args.database_url)} re-created at alembic head;"
            f" Redis {args.redis_url} flushed"
        )
        with common.Processes(workdir) as procs:
            # ROOMWARDEN_LOG_LEVEL as well as --loglevel: worker.celery_app's setup_logging handler
            # configures logging from the settings, so --loglevel alone leaves a line per task.
            noop_env = common.child_env(
                ROOMWARDEN_DATABASE_URL=args.database_url,
                ROOMWARDEN_BROKER_URL=args.redis_url,
                ROOMWARDEN_LOG_LEVEL="WARNING",
            )
            noop = bench_noop(args, procs, noop_env)
            common.flush_redis(args.redis_url)
            earlier_instances: set[str] = set()
            pipe: PipelineResult | None = None
            naive: PipelineResult | None = None
            if args.skip_end_to_end:
                report_noop(noop)
            else:
                load = build_load(args, secret)
                earlier_instances.update(load.instances)
                pipe = bench_pipeline(args, procs, secret, load, roomwarden_design(args))
                report(args, noop, pipe)
                sys.stdout.flush()
                if not args.skip_naive:
                    naive = run_naive(args, procs, secret, earlier_instances)
                    report_pipeline(args, noop, naive)
            sys.stdout.flush()
            backlog = bench_backlog(args, procs, secret, earlier_instances)
        report_backlog(args, noop, backlog, after_pipeline=not args.skip_end_to_end)
        if pipe is not None:
            report_closing(pipe, naive)
    except KeyboardInterrupt:
        print("\ninterrupted; workers and servers stopped", file=sys.stderr)
        return 130
    finally:
        common.flush_redis(args.redis_url)
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_naive(
    args: argparse.Namespace, procs: common.Processes, secret: str, earlier_instances: set[str]
) -> PipelineResult:
    """The naive phase on empty tables and an empty broker, with AgentInstanceIds of its own."""
    common.flush_redis(args.redis_url)
    empty_tables(args.database_url)
    load = build_load(args, secret, seed=NAIVE_SEED)
    if clash := earlier_instances.intersection(load.instances):
        raise RuntimeError(f"naive AgentInstanceIds collide with an earlier phase's: {sorted(clash)}")
    earlier_instances.update(load.instances)
    result = bench_pipeline(args, procs, secret, load, naive_design())
    common.flush_redis(args.redis_url)
    return result
