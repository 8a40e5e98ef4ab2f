"""bench/scale: thousands of live conversations through the real receiver, workers and beat.

The processes are the Procfile's (web, worker, beat, outbound) on Postgres and Redis, with one
difference: the worker runs ``bench/scale_app.py``, roomwarden's app plus a stopwatch on the
beat's jobs. The vendor is this script (``bench/_load.py``): every conversation is an agent
instance created by an AgentInstanceCreated callback, then talks in rounds (ASRResult, three
LLMResult sentences, a status or an Exception), with duplicates, reorders, lost answers and
forged signatures mixed in.

1. **Saturation**: a burst, unpaced over ``--connections`` keep-alive connections, timed from
   its first acknowledgement to the last callback applied: the end-to-end rate the stack gives a
   backlog, its ceiling (skipped with ``--skip-burst`` or ``--steady-rate``).
2. **Ramp**: paced sparse load, shaped like the steady phase, at ``--ramp-step`` callbacks/s,
   then twice, three times that..., ``--ramp-seconds`` each. A step keeps up when the workers
   apply what it stores (``KEEP_UP``) and its callbacks' lag stays bounded (``LAG_BOUND_SECONDS``
   at p99, counting the ones not applied yet at their wait so far). The saturating rate of live
   traffic is the last step that keeps up: with thousands of conversations each sending a
   callback every few seconds a drain finds one or two per stream, so it is well below the
   burst's (skipped with ``--steady-rate``).
3. **Steady**: every conversation sends its next callback every ``sessions / rate`` seconds
   (+-50% jitter) at half the ramp's saturating rate, for ``--duration`` seconds. Meanwhile:
   acknowledgement -> applied lag for a sample of callbacks, CPU and memory of every process
   every ``--sample-every`` seconds, and the run time of every beat job.
4. **Checks**: once everything is applied, every conversation's transcript is compared with the
   one its script must leave, and the inbox, sessions and exceptions with what was sent.
5. **API**: H2's ``bench/api_bench.py`` ``measure()`` over the same database, when present.

The policies are on with thresholds the run cannot reach (idle, maximum length, reconciliation
a day), so the beat's scans read every live session each interval and act on none; a server
secret is configured, so reconciliation considers every session (its vendor URL points at a
closed port: an ask, which the thresholds rule out, would fail rather than leave the machine).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
import itertools
import os
import re
import secrets
import shlex
import shutil
import statistics
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
import _load
import _sampling
import orjson
import redis

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_scale_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
LOAD_SEED = 15
BEAT_TARGET_SECONDS = 1.0
# A ramp step keeps up when the workers applied at least this share of what it stored...
KEEP_UP = 0.95
# ... and 99% of its sampled callbacks were applied within this many seconds of their
# acknowledgement (a drain message waits behind the others; seconds, not minutes, is bounded).
LAG_BOUND_SECONDS = 5.0
POLICY_JOBS = ("recycle-idle", "enforce-max-length", "reconcile", "sweep-actions", "start-queued")
# Thresholds no run reaches: the scans look at every live session and decide nothing.
POLICIES = """\
[defaults.idle]
after_seconds = 86400
[defaults.max_length]
seconds = 86400
[defaults.reconcile]
silent_seconds = 86400
unconfirmed_seconds = 86400
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/scale",
        description=(
            "Live conversations paced like real ones through the real receiver, workers and beat on "
            "Postgres and Redis: a burst's rate, the saturating rate of paced load, then a steady phase at "
            "half of it with lag, CPU and "
            "memory over time, beat job durations and a transcript check. Prints figures; no pass/fail."
        ),
    )
    parser.add_argument("--sessions", type=int, default=10_000, help="live conversations (default 10,000)")
    parser.add_argument("--duration", type=float, default=300.0, help="steady phase, seconds (default 300)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="broker and rate limits; flushed")
    parser.add_argument(
        "--burst",
        type=int,
        default=None,
        help="callbacks in the saturation burst (default 4 per session, at least 5,000)",
    )
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=None,
        help="callbacks/s for the steady phase; skips the burst and the ramp (default: half the ramp's"
        " saturating rate)",
    )
    parser.add_argument(
        "--ramp-step",
        type=float,
        default=150.0,
        help="the paced ramp's step, callbacks/s: steps of 1x, 2x, 3x... until one does not keep up (150)",
    )
    parser.add_argument("--ramp-seconds", type=float, default=60.0, help="each ramp step, seconds (60)")
    parser.add_argument("--skip-burst", action="store_true", help="no unpaced burst (the backlog ceiling)")
    parser.add_argument("--connections", type=int, default=32, help="the vendor's keep-alive connections")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes (Procfile: 2)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--lag-sample", type=float, default=0.05, help="share of callbacks timed (0.05)")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="lag poller's pause, seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for a backlog to drain")
    parser.add_argument("--skip-api", action="store_true", help="do not run bench/api_bench.py's measure()")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- processes


def procfile_argv(name: str, variables: dict[str, str]) -> list[str]:
    """The Procfile's command for ``name``, ``${VAR:-default}`` expanded, bound to loopback."""
    for line in (common.ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            expanded = re.sub(
                r"\$\{(\w+):-([^}]*)\}", lambda m: variables.get(m.group(1), m.group(2)), command
            )
            argv = shlex.split(expanded)
            argv[0] = str(common.VENV_BIN / argv[0])
            return ["127.0.0.1" if arg == "0.0.0.0" else arg for arg in argv]
    raise RuntimeError(f"Procfile has no {name!r} process")


@dataclass
class Stack:
    receiver: common.Server
    worker: common.Server
    beat: common.Server
    outbound: common.Server
    port: int
    env: dict[str, str]


def start_stack(args: argparse.Namespace, procs: common.Processes, workdir: Path, secret: str) -> Stack:
    policies = workdir / "policies.toml"
    policies.write_text(POLICIES)
    env = common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=args.redis_url,
        ROOMWARDEN_REDIS_URL=args.redis_url,
        ROOMWARDEN_ZEGO_APP_ID=str(common.APP_ID),
        ROOMWARDEN_ZEGO_CALLBACK_SECRET=secret,
        ROOMWARDEN_ZEGO_SERVER_SECRET=secrets.token_hex(16),
        ROOMWARDEN_ZEGO_API_URL=f"http://127.0.0.1:{common.free_port()}",
        ROOMWARDEN_POLICIES_FILE=str(policies),
        ROOMWARDEN_LOG_LEVEL="WARNING",
    )
    port = common.free_port()
    variables = {"PORT": str(port), "WORKER_CONCURRENCY": str(args.concurrency)}
    quiet = ["--loglevel", "WARNING"]
    worker_argv = procfile_argv("worker", variables) + quiet
    worker_argv[worker_argv.index("worker.celery_app")] = "bench.scale_app"
    receiver = procs.start("receiver", procfile_argv("web", variables), env)
    worker = procs.start("worker", worker_argv, env)
    beat = procs.start("beat", procfile_argv("beat", variables) + quiet, env)
    outbound = procs.start("outbound", procfile_argv("outbound", variables) + quiet, env)
    common.wait_for_http(receiver, port, _load.PATH)
    wait_for_workers([worker, outbound])
    return Stack(receiver, worker, beat, outbound, port, env)


def wait_for_workers(servers: list[common.Server], timeout: float = 60.0) -> None:
    """Both Celery workers answer a broadcast ping: they consume."""
    from worker.celery_app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in servers:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited early:\n{server.log_tail()}")
        if len(app.control.ping(timeout=0.5)) >= len(servers):
            return
    raise RuntimeError("the workers did not answer a ping:\n" + "\n".join(s.log_tail() for s in servers))


# --------------------------------------------------------------------------- watching


def pending(db: Any) -> int:
    """Callbacks stored and not yet applied (the partial index ix_inbox_pending_received)."""
    return int(common.scalar(db, "SELECT count(*) FROM inbox WHERE state = 'pending'"))


def wait_until_applied(database_url: str, timeout: float) -> float:
    """Until nothing is pending; returns when (``time.perf_counter``)."""
    deadline = time.monotonic() + timeout
    with common.connect(database_url) as db:
        while pending(db):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending(db):,} callbacks still pending after {timeout:.0f}s")
            time.sleep(0.05)
    return time.perf_counter()


class LagPoller(threading.Thread):
    """Acknowledgement -> applied, for the sampled callbacks, by their Signature (a unique index).

    A callback's lag is taken as (start of the first poll whose snapshot sees it ``done``) minus
    its acknowledgement, so it overstates the true lag by at most the gap between two polls'
    snapshots (``--poll-interval`` plus one query), which ``gaps`` records.
    """

    def __init__(self, database_url: str, interval: float) -> None:
        super().__init__(name="lag-poller", daemon=True)
        self._url, self._interval = database_url, interval
        self.acks: collections.deque[tuple[str, float]] = collections.deque()
        self.lags: list[tuple[float, float]] = []  # (acknowledged at, lag seconds)
        self.waiting: dict[str, float] = {}
        self.gaps: list[float] = []
        self._stop_event = threading.Event()

    def on_ack(self, signature: str, at: float) -> None:
        self.acks.append((signature, at))

    def run(self) -> None:
        previous = time.perf_counter()
        with common.connect(self._url) as db:
            while not self._stop_event.wait(self._interval):
                while self.acks:
                    signature, at = self.acks.popleft()
                    self.waiting[signature] = at
                if not self.waiting:
                    previous = time.perf_counter()
                    continue
                snapshot = time.perf_counter()
                self.gaps.append(snapshot - previous)
                previous = snapshot
                rows = db.execute(
                    "SELECT signature FROM inbox WHERE signature = ANY(%s) AND state = 'done'",
                    (list(self.waiting),),
                ).fetchall()
                for (signature,) in rows:
                    at = self.waiting.pop(signature)
                    self.lags.append((at, snapshot - at))

    def stop(self) -> None:
        self._stop_event.set()

    def lags_between(self, begin: float, end: float) -> list[float]:
        """Lags of the callbacks acknowledged in [begin, end): applied ones, and for the rest their
        wait so far (a lower bound). Read while the poller runs: copies, retried if it moved."""
        now = time.perf_counter()
        for _ in range(10):
            try:
                waiting = [*self.waiting.values(), *(at for _, at in list(self.acks))]
                break
            except RuntimeError:  # the poller changed ``waiting`` mid-copy
                continue
        else:
            waiting = []
        done = [lag for at, lag in list(self.lags) if begin <= at < end]
        return done + [now - at for at in waiting if begin <= at < end]


@dataclass
class Mark:
    """One sample: when, which phase, the vendor's stored answers so far, the backlog."""

    at: float  # time.perf_counter()
    phase: str
    stored: int
    backlog: int
    queued: int  # messages waiting in the worker's Redis queue (drains and beat jobs)


class Watcher(threading.Thread):
    """Every ``every`` seconds: processes' CPU and memory, the backlog, the vendor's progress."""

    def __init__(
        self,
        series: _sampling.ProcessSeries,
        database_url: str,
        redis_url: str,
        sender: _load.Sender,
        every: float,
    ) -> None:
        from worker.celery_app import QUEUE

        super().__init__(name="watcher", daemon=True)
        self.series, self._url, self._sender, self._every = series, database_url, sender, every
        self._broker, self._queue = redis.Redis.from_url(redis_url), QUEUE
        self.phase = "start"
        self.marks: list[Mark] = []
        self._stop_event = threading.Event()

    def mark(self, db: Any) -> Mark:
        backlog = pending(db)
        queued = int(self._broker.llen(self._queue))
        return Mark(time.perf_counter(), self.phase, self._sender.stored_total, backlog, queued)

    def run(self) -> None:
        with common.connect(self._url) as db:
            self.series.start()
            self.marks.append(self.mark(db))
            while not self._stop_event.wait(self._every):
                self.series.sample()
                self.marks.append(self.mark(db))
            self.series.sample()
            self.marks.append(self.mark(db))

    def stop(self) -> None:
        self._stop_event.set()


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    sessions: dict[str, int] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)
    expected_inbox: int = 0
    matching: int = 0
    mismatches: list[str] = field(default_factory=list)
    exceptions: int = 0
    expected_exceptions: int = 0
    actions: int = 0


def check(database_url: str, conv: _load.Conversations, sent: list[int]) -> Check:
    """Every transcript, turn by turn, against the script; and the counts that must follow from it."""
    result = Check(expected_inbox=sum(sent), expected_exceptions=sum(map(conv.exceptions, sent)))
    with common.connect(database_url) as db:
        result.sessions = dict(db.execute("SELECT state, count(*) FROM sessions GROUP BY state").fetchall())
        result.inbox = dict(db.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())
        result.exceptions = int(common.scalar(db, "SELECT count(*) FROM agent_exceptions"))
        result.actions = int(common.scalar(db, "SELECT count(*) FROM policy_actions"))
        got: dict[str, list[tuple[int, str, str]]] = collections.defaultdict(list)
        rows = db.execute(
            "SELECT ai.agent_instance_id, t.round, t.speaker, t.text FROM turns t"
            " JOIN agent_instances ai ON ai.id = t.instance_id"
            " ORDER BY ai.agent_instance_id, t.round, t.speaker DESC"  # the user speaks first in a Round
        )
        for instance, round_, speaker, text in rows:
            got[instance].append((int(round_), speaker, text))
    for index, instance in enumerate(conv.instances):
        want = conv.expected(index, sent[index])
        have = got.get(instance, [])
        if have == want:
            result.matching += 1
            continue
        first = next(
            (i for i, (h, w) in enumerate(zip(have, want, strict=False)) if h != w), min(len(have), len(want))
        )
        result.mismatches.append(
            f"{instance} (conversation {index}, {sent[index]} callbacks): {len(have)} turns,"
            f" {len(want)} expected;"
            f" first difference at turn {first}: got {have[first] if first < len(have) else None!r},"
            f" expected {want[first] if first < len(want) else None!r}"
        )
    return result


# --------------------------------------------------------------------------- beat jobs

# (job, started at (epoch), seconds (-1: expired unrun), CPU seconds, state, result)
BeatRun = tuple[str, float, float, float, str, Any]


def beat_runs(redis_url: str) -> list[BeatRun]:
    """Every beat job run or expired, and every drain, as ``bench/scale_app.py`` recorded them."""
    from scale_app import KEY

    raw = redis.Redis.from_url(redis_url).lrange(KEY, 0, -1)
    runs: list[BeatRun] = []
    for item in raw:
        job, started, seconds, cpu, state, result = orjson.loads(item)
        runs.append((str(job), float(started), float(seconds), float(cpu), str(state), result))
    return runs


def beat_intervals() -> dict[str, float]:
    """Each beat job's interval in seconds, from roomwarden's schedule (the bench sets no cadence)."""
    from worker.schedule import beat_schedule
    from worker.settings import get_settings

    return {name: float(entry["schedule"]) for name, entry in beat_schedule(get_settings()).items()}


# --------------------------------------------------------------------------- API


def measure_api(args: argparse.Namespace) -> list[str]:
    """H2's ``bench/api_bench.py`` ``measure(database_url, redis_url=...)``: list, detail, search and
    stats p50/p99 (and its own timing of the beat's scans) over what this run left in the database.

    >>> CALL SITE for bench/api_bench.measure (another engineer's, H2). <<<
    It measures whatever the database holds and does not top it up to 1,000,000 turns (its
    ``seed()`` fills a fresh database only: its made-up ids would collide with this run's rows),
    so the figures are over this run's turns; ``bench/api`` gives them over 1,000,000.
    """
    if not (Path(__file__).parent / "api_bench.py").exists():
        return ["  not measured: bench/api_bench.py does not exist"]
    module = importlib.import_module("api_bench")
    measure: Callable[..., list[str]] | None = getattr(module, "measure", None)
    if measure is None:
        return ["  not measured: bench/api_bench.py has no measure()"]
    offered = {"redis_url": args.redis_url}
    accepted = inspect.signature(measure).parameters
    kwargs = {name: value for name, value in offered.items() if name in accepted}
    return [f"  {line}" for line in measure(args.database_url, **kwargs)]


# --------------------------------------------------------------------------- ramp


@dataclass
class Step:
    offered: float  # callbacks/s asked of the vendor
    stored: float  # callbacks/s the receiver stored
    applied: float  # callbacks/s the workers applied over the step
    backlog: int  # pending at its end
    p50: float
    p99: float
    sampled: int

    @property
    def keeps_up(self) -> bool:
        return self.applied >= KEEP_UP * self.stored and self.p99 <= LAG_BOUND_SECONDS


def ramp(args: argparse.Namespace, sender: _load.Sender, poller: LagPoller, watcher: Watcher) -> list[Step]:
    """Paced steps of ``--ramp-step`` more callbacks/s each, until one does not keep up. Between
    steps nothing waits: a step starts on what the one before left, as live traffic would."""
    steps: list[Step] = []
    with common.connect(args.database_url) as db:
        for multiple in itertools.count(1):
            rate = args.ramp_step * multiple
            watcher.phase = f"ramp {rate:,.0f}"
            begin = watcher.mark(db)
            sender.paced(rate, args.ramp_seconds, args.lag_sample)
            end = watcher.mark(db)
            time.sleep(max(0.5, 3 * args.poll_interval))  # the poller's look at the last ones
            lags = poller.lags_between(begin.at, end.at)
            span = end.at - begin.at
            step = Step(
                offered=rate,
                stored=(end.stored - begin.stored) / span,
                applied=((end.stored - end.backlog) - (begin.stored - begin.backlog)) / span,
                backlog=end.backlog,
                p50=common.percentile(lags, 50) if lags else float("nan"),
                p99=common.percentile(lags, 99) if lags else float("nan"),
                sampled=len(lags),
            )
            steps.append(step)
            print(
                f"  step {rate:7,.0f}/s: stored {step.stored:7,.0f}/s, applied {step.applied:7,.0f}/s,"
                f" backlog at its end {step.backlog:7,}, lag p50 {ms(step.p50):>8}, p99 {ms(step.p99):>8}"
                f" ({step.sampled:,} sampled)   {'keeps up' if step.keeps_up else 'does NOT keep up'}"
            )
            sys.stdout.flush()
            # The vendor itself falling behind (its one thread) is no figure for roomwarden.
            if not step.keeps_up or step.stored < 0.9 * rate:
                break
    return steps


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    if seconds != seconds:  # nan: nothing to take a figure from
        return "-"
    return f"{1000 * seconds:,.0f} ms" if seconds >= 0.01 else f"{1000 * seconds:.1f} ms"


def print_rates(watcher: Watcher, lags: list[tuple[float, float]]) -> None:
    print()
    print(
        "Over time (a row per sample, phase at its end; applied = the vendor's 'stored' answers minus the"
        " backlog;\n  backlog = inbox rows pending; queued = messages in the worker's Redis queue; lag of"
        " the callbacks acknowledged in the row):"
    )
    print(
        f"  {'t s':>6} {'phase':<12}{'stored/s':>10}{'applied/s':>11}{'backlog':>9}{'queued':>8}"
        f"{'lag p50':>10}{'lag p99':>10}"
    )
    marks = watcher.marks
    for before, after in itertools.pairwise(marks):
        span = max(after.at - before.at, 1e-9)
        stored = (after.stored - before.stored) / span
        applied = ((after.stored - after.backlog) - (before.stored - before.backlog)) / span
        window = [lag for at, lag in lags if before.at <= at < after.at]
        p50 = ms(common.percentile(window, 50)) if window else "-"
        p99 = ms(common.percentile(window, 99)) if window else "-"
        print(
            f"  {after.at - marks[0].at:6.0f} {after.phase:<12}{stored:10,.0f}{applied:11,.0f}"
            f"{after.backlog:9,}{after.queued:8,}{p50:>10}{p99:>10}"
        )


def print_processes(series: _sampling.ProcessSeries, start: float) -> None:
    columns = series.columns
    head = "".join(f"{column[:11]:>12}" for column in columns)
    print()
    print(
        "CPU, % of one core, per sample interval (worker = its main process, pool = each pool process;"
        " pg backends = this\n  database's; redis is shared with other work; bench = this script, of"
        " which vendor = its sending thread):"
    )
    print(f"  {'t s':>6}{head}")
    for row in series.rows:
        cells = "".join(f"{row.cpu.get(column, 0.0):12.0f}" for column in columns)
        print(f"  {row.at - start:6.0f}{cells}")
    print()
    print("Resident memory, MB (postgres: RssAnon, its own pages; shared buffers are not counted):")
    print(f"  {'t s':>6}{head}")
    for row in series.rows:
        cells = "".join(
            f"{row.rss_mb[column]:12.0f}" if column in row.rss_mb else f"{'-':>12}" for column in columns
        )
        print(f"  {row.at - start:6.0f}{cells}")
    print()
    print("Peak resident memory (VmHWM, largest of the column's processes; postgres: includes shared):")
    for column in columns:
        if column in series.peak_kb:
            first = next((r.rss_mb[column] for r in series.rows if column in r.rss_mb), 0.0)
            last = next((r.rss_mb[column] for r in reversed(series.rows) if column in r.rss_mb), 0.0)
            print(
                f"  {column:<28}{series.peak_kb[column] / 1024:8.0f} MB"
                f"   (RSS first sample {first:.0f} MB, last {last:.0f} MB)"
            )


def print_beat(runs: list[BeatRun], rows: list[tuple[float, float]], intervals: dict[str, float]) -> None:
    """Per job: its runs' durations overall and per sample interval (epoch bounds in ``rows``), and
    the rounds that expired in the queue unrun; then the drains that share the workers with them."""
    print()
    print(
        "Beat jobs (run time in the worker, task_prerun to task_postrun; CPU = the pool process's;"
        " per interval: median/max ms, xN = N rounds expired unrun):"
    )
    by_job: dict[str, list[BeatRun]] = collections.defaultdict(list)
    for run_ in runs:
        by_job[run_[0]].append(run_)
    span = rows[-1][1] - rows[0][0] if rows else 0.0
    for job in [*sorted(intervals), "drain"]:
        records = by_job.get(job, [])
        done = [r for r in records if r[2] >= 0]
        expired = [r for r in records if r[2] < 0]
        per_row = []
        for begin, end in rows:
            window = [r[2] for r in done if begin <= r[1] < end]
            lost = sum(begin <= r[1] < end for r in expired)
            cell = f"{statistics.median(window) * 1000:.0f}/{max(window) * 1000:.0f}" if window else "-"
            per_row.append(cell + (f"x{lost}" if lost else ""))
        rounds = f"~{span / intervals[job]:.0f} rounds due" if job in intervals else "one per drain message"
        if not done:
            print(f"  {job:<20} runs 0, expired {len(expired)} ({rounds})")
            continue
        durations = [r[2] for r in done]
        failed = sum(r[4] != "SUCCESS" for r in done)
        results = sum(r[5] for r in done if isinstance(r[5], int | float))
        print(
            f"  {job:<20} runs {len(done):5}, expired {len(expired)} ({rounds}); median"
            f" {ms(statistics.median(durations))}, p99 {ms(common.percentile(durations, 99))},"
            f" max {ms(max(durations))}; CPU median {ms(statistics.median(r[3] for r in done))};"
            f" failed {failed}; {'applied' if job == 'drain' else 'sum of results'} {results:,g}"
        )
        print(f"  {'':<20} {' '.join(per_row)}")
    print()
    print(
        f"Target: each policy job < {BEAT_TARGET_SECONDS:.0f} s with every session live, and none"
        " left unrun (reported, not enforced):"
    )
    for job in POLICY_JOBS:
        records = by_job.get(job, [])
        durations = [r[2] for r in records if r[2] >= 0]
        unrun = sum(r[2] < 0 for r in records)
        worst = max(durations, default=float("nan"))
        verdict = "met" if durations and worst < BEAT_TARGET_SECONDS and not unrun else "NOT met"
        print(
            f"  {job:<20} max {ms(worst):>9}, ran {len(durations)}, expired {unrun}"
            f" of ~{span / intervals[job]:.0f} due   {verdict}"
        )


def print_check(result: Check, sessions: int) -> None:
    print()
    print("Check (after every callback was applied):")
    print(
        f"  transcripts: {result.matching:,} of {sessions:,} equal to the expected ones"
        f" ({len(result.mismatches):,} differ)"
    )
    for line in result.mismatches[:10]:
        print(f"    {line}")
    if len(result.mismatches) > 10:
        print(f"    ... and {len(result.mismatches) - 10:,} more")
    inbox = ", ".join(f"{state} {n:,}" for state, n in sorted(result.inbox.items()))
    print(f"  inbox: {inbox}; expected {result.expected_inbox:,} rows, all done")
    states = ", ".join(f"{state} {n:,}" for state, n in sorted(result.sessions.items()))
    print(f"  sessions: {states}; expected {sessions:,} active")
    print(f"  agent exceptions: {result.exceptions:,}, expected {result.expected_exceptions:,}")
    print(f"  policy actions: {result.actions:,}, expected 0 (thresholds out of reach)")
    ok = (
        not result.mismatches
        and result.inbox == {"done": result.expected_inbox}
        and result.sessions == {"active": sessions}
        and result.exceptions == result.expected_exceptions
        and result.actions == 0
    )
    print(f"  => {'everything as expected' if ok else 'MISMATCH (see above)'}")


def print_counts(name: str, counts: _load.Counts) -> None:
    statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(counts.statuses.items()))
    print(
        f"  {name}: answers {statuses}; stored {counts.stored:,}, duplicate {counts.duplicate:,};"
        f" ack latency p50 {ms(common.percentile(counts.latencies, 50))},"
        f" p99 {ms(common.percentile(counts.latencies, 99))}"
    )
    if counts.duplicates_sent or counts.reordered or counts.lost_answers or counts.bad_signatures:
        print(
            f"    faults: {counts.duplicates_sent:,} sent twice, {counts.reordered:,} swapped with the next,"
            f" {counts.lost_answers:,} answers lost (then resent), {counts.bad_signatures:,} forged"
            f" signatures ({counts.bad_signatures_refused:,} refused 401); {counts.reconnects} reconnects"
        )


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, workdir: Path) -> None:
    secret = secrets.token_urlsafe(24)
    database = common.database_name(args.database_url)
    common.recreate_database(args.database_url)
    common.alembic_upgrade(args.database_url)
    common.flush_redis(args.redis_url)
    print(f"   database {database} re-created at alembic head; {args.redis_url} flushed")
    conv = _load.Conversations(args.sessions, secret, LOAD_SEED)
    with common.Processes(workdir) as procs:
        stack = start_stack(args, procs, workdir, secret)
        print()
        print(
            "Processes (the Procfile's commands; the worker runs bench.scale_app ="
            " worker.celery_app + a stopwatch):"
        )
        shown = [k for k in stack.env if k.startswith("ROOMWARDEN_")]
        print(f"  env: {common.describe_env(stack.env, shown)}")
        for server in (stack.receiver, stack.worker, stack.beat, stack.outbound):
            print(f"  {server.name:<9}$ {server.command_line()}")
        poller = LagPoller(args.database_url, args.poll_interval)
        sender = _load.Sender(stack.port, conv, args.connections, _load.Faults(), poller.on_ack, LOAD_SEED)
        with common.connect(args.database_url) as admin:
            postmaster = _cpu.postmaster_pid(admin)
        redis_pid = _cpu.redis_pid(args.redis_url)
        groups: dict[str, Callable[[], Iterable[int]]] = {
            "receiver": lambda: _cpu.descendants(stack.receiver.pid),
            "worker": lambda: [stack.worker.pid],
            "pool": lambda: [p for p in _cpu.descendants(stack.worker.pid) if p != stack.worker.pid],
            "beat": lambda: _cpu.descendants(stack.beat.pid),
            "outbound": lambda: _cpu.descendants(stack.outbound.pid),
            "pg backends": lambda: _cpu.postgres_groups(postmaster, database)["postgres backends"],
            "pg other": lambda: _cpu.postgres_groups(postmaster, database)["postgres wal/bg"],
            "redis": lambda: [redis_pid] if redis_pid else [],
            "bench": lambda: [os.getpid()],
        }
        series = _sampling.ProcessSeries(
            groups,
            split=["pool"],
            private_memory=["pg backends", "pg other"],
            threads={"vendor": lambda: sender.native_id},
        )
        watcher = Watcher(series, args.database_url, args.redis_url, sender, args.sample_every)
        watcher.start()
        poller.start()

        saturating = None
        burst_counts = None
        burst_seconds = 0.0
        if args.steady_rate is None and not args.skip_burst:
            watcher.phase = "burst"
            size = args.burst or max(5_000, 4 * args.sessions)
            positions = [(index, 0) for index in range(args.sessions)]
            position = 1
            while len(positions) < size:
                positions.extend(
                    (index, position) for index in range(min(args.sessions, size - len(positions)))
                )
                position += 1
            burst_counts = sender.burst(positions, sample=0.0)
            watcher.phase = "burst drain"
            all_applied = wait_until_applied(args.database_url, args.timeout)
            burst_seconds = all_applied - burst_counts.first_ack
            saturating = burst_counts.stored / burst_seconds
        print()
        if burst_counts is not None and saturating is not None:
            print("Saturation (unpaced burst, no faults, interleaved across conversations):")
            print_counts("burst", burst_counts)
            print(
                f"  {burst_counts.stored:,} callbacks, first ack -> all applied {burst_seconds:.2f} s"
                f" = {saturating:,.0f} callbacks/s end to end (ingest alone"
                f" {burst_counts.stored / max(1e-9, burst_counts.last_ack - burst_counts.first_ack):,.0f}/s)"
                "; the backlog ceiling, not the rate live traffic sustains"
            )
        paced_saturating = None
        if args.steady_rate is None:
            print(
                f"Ramp (paced like the steady phase, steps of {args.ramp_step:,.0f} callbacks/s,"
                f" {args.ramp_seconds:.0f} s each; keeps up = applied >= {KEEP_UP:.0%} of stored and lag"
                f" p99 <= {LAG_BOUND_SECONDS:.0f} s, not yet applied counted at their wait so far):"
            )
            sys.stdout.flush()
            steps = ramp(args, sender, poller, watcher)
            kept = [step for step in steps if step.keeps_up]
            watcher.phase = "ramp drain"
            wait_until_applied(args.database_url, args.timeout)
            why = "half the paced saturating rate"
            if kept:
                paced_saturating = kept[-1].applied
                print(
                    f"  saturating rate, paced: {paced_saturating:,.0f} callbacks/s applied"
                    f" (the {kept[-1].offered:,.0f}/s step; the next did not keep up)"
                    if len(kept) < len(steps)
                    else f"  saturating rate, paced: at least {paced_saturating:,.0f} callbacks/s applied"
                    " (the vendor could not offer more)"
                )
                steady_rate = paced_saturating / 2
            else:
                print(f"  saturating rate, paced: below the first step ({args.ramp_step:,.0f}/s)")
                steady_rate = args.ramp_step / 2
                why = "half the first ramp step"
        else:
            steady_rate = args.steady_rate
            why = "--steady-rate"
        interval = args.sessions / steady_rate
        print(
            f"Steady phase: {steady_rate:,.0f} callbacks/s"
            f" ({why})"
            f" over {args.sessions:,} conversations"
            f" = one callback per conversation every {interval:.2f} s (+-50%), for {args.duration:.0f} s;"
            " requests are ~11% more (duplicates, resends, forgeries)"
        )
        sys.stdout.flush()

        # The meter counts this process itself ("this benchmark"): the vendor and the pollers.
        meter = _cpu.CpuMeter({name: pids for name, pids in groups.items() if name != "bench"})
        with common.connect(args.database_url) as db:
            watcher.phase = "steady"
            meter.start()
            begin = watcher.mark(db)
            steady_counts = sender.paced(steady_rate, args.duration, args.lag_sample)
            end = watcher.mark(db)
            meter.stop()
            watcher.phase = "final drain"
            drained_at = wait_until_applied(args.database_url, args.timeout)
            time.sleep(max(1.0, 3 * args.poll_interval))  # the poller's last look
        poller.stop()
        watcher.stop()
        poller.join(10)
        watcher.join(30)
        runs = beat_runs(args.redis_url)

        sustained = ((end.stored - end.backlog) - (begin.stored - begin.backlog)) / (end.at - begin.at)
        print_counts("steady", steady_counts)
        print(
            f"  sustained: {sustained:,.0f} callbacks/s applied during the steady phase"
            f" ({(end.stored - begin.stored) / (end.at - begin.at):,.0f}/s stored); backlog at its end"
            f" {end.backlog:,}, all applied {drained_at - end.at:.1f} s after it"
        )
        # The steady phase's own callbacks: the ramp's last step may have left a backlog behind.
        lags = [lag for at, lag in list(poller.lags) if begin.at <= at < end.at]
        gaps = poller.gaps or [float("nan")]
        print(
            f"  lag acknowledgement -> applied (inbox row done, same transaction as the turn), {len(lags):,}"
            f" sampled callbacks: p50 {ms(common.percentile(lags, 50))},"
            f" p99 {ms(common.percentile(lags, 99))},"
            f" max {ms(max(lags, default=float('nan')))}; never seen {len(poller.waiting):,}"
        )
        print(
            "    resolution: a lag is overstated by at most one poll gap,"
            f" median {ms(statistics.median(gaps))},"
            f" max {ms(max(gaps))} (--poll-interval {args.poll_interval} s plus the query)"
        )
        print(
            f"  vendor (this script's sending thread) CPU: {sender.cpu_seconds:.1f} s in all phases"
            f" ({1e6 * sender.cpu_seconds / max(1, sender.stored_total):.0f} us per stored callback);"
            " it plays ZEGO, it is not the system"
        )
        start = watcher.marks[0].at if watcher.marks else 0.0
        print_rates(watcher, poller.lags)
        print_processes(series, series.rows[0].at - series.rows[0].seconds if series.rows else start)
        print()
        cores = os.cpu_count() or 1
        print(
            f"CPU over the steady phase ({cores} cores = {100 * cores}%;"
            " 'this benchmark' is the vendor and pollers):"
        )
        print("\n".join(meter.report()))
        epoch_offset = time.time() - time.perf_counter()
        bounds = [(a.at + epoch_offset, b.at + epoch_offset) for a, b in itertools.pairwise(watcher.marks)]
        print_beat(runs, bounds, beat_intervals())
        print_check(check(args.database_url, conv, sender.sent), args.sessions)
        sys.stdout.flush()
    # The stack is stopped: the API figures get the machine to themselves.
    print()
    with common.connect(args.database_url) as db:
        turns = int(common.scalar(db, "SELECT count(*) FROM turns"))
    print(
        f"API over this run's database ({turns:,} turns, {args.sessions:,} sessions; not topped up to"
        " 1,000,000: bench/api measures that on its own database):"
    )
    if args.skip_api:
        print("  skipped (--skip-api)")
        return
    try:
        lines = measure_api(args)
    except Exception as exc:  # the figures above stand either way
        lines = [f"  api_bench.measure failed: {type(exc).__name__}: {exc}"]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.terminate_on_sigterm()
    # This process pings the workers through roomwarden's app: it must see the bench's broker.
    os.environ["ROOMWARDEN_BROKER_URL"] = args.redis_url
    os.environ["ROOMWARDEN_DATABASE_URL"] = args.database_url
    common.header(f"bench/scale: {args.sessions:,} live conversations through the real stack")
    workdir = Path(tempfile.mkdtemp(prefix="roomwarden-bench-scale-"))
    try:
        run(args, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was stopped", file=sys.stderr)
        return 130
    finally:
        common.flush_redis(args.redis_url)
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
