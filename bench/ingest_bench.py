"""bench/ingest: the receiver's durable ingest against Postgres beside a bare Starlette endpoint.

Both servers run one after the other in the same run, under the same wrk load, with the same
uvicorn flags but one: the receiver speaks HTTP through the protocol the Procfile's web process
gives it (``--receiver-http``; ``webhooks.slow_clients:BoundedProtocol``: header budget,
connection limit, 431), the bare endpoint through uvicorn's own
httptools. The bare endpoint is the yardstick and stays as a team would first deploy it;
``--receiver-http httptools`` serves the receiver with that same stock protocol. The load is
pre-signed callbacks, each with its own Sequence and Nonce, so that every request is a new
callback the receiver must store (a repeated body would be answered "duplicate" and flatter the
figures). What the receiver actually stored is counted in the database afterwards.

Targets (printed beside the figures, not enforced): durable ingest >= 50% of the bare endpoint's
requests/s, and p99 < 20 ms at 32 connections.

The output closes with two lines other programs read (exactly these forms)::

    durable ingest / bare = NN%
    durable ingest p99 = N.N ms at 32 connections
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import _common as common
import _cpu
import redis

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
LUA_SCRIPT = Path(__file__).resolve().parent / "callbacks.lua"
PATH = "/callbacks/zego"
INSTANCES = 200
TARGET_RATIO = 0.50
TARGET_P99_MS = 20.0


def procfile_http() -> str:
    """The ``--http`` the Procfile's web process runs uvicorn with: the receiver as deployed."""
    for line in (common.ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            words = shlex.split(line)
            if "--http" in words:
                return words[words.index("--http") + 1]
    return "httptools"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest",
        description=(
            "Requests/s and latency of the receiver's durable ingest (Postgres) beside a bare Starlette "
            "endpoint under the same uvicorn flags (but --http) and the same wrk load. Prints figures; no"
            " pass/fail."
        ),
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"the receiver's broker, a Redis db of the run's own: flushed (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--bodies",
        type=int,
        default=200_000,
        help="distinct signed callbacks for the measured run; must exceed the requests sent (default 200000)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, sample the receiver with py-spy (--gil) in an extra run and print "
        "where its GIL time goes",
    )
    parser.add_argument(
        "--receiver-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the receiver, for A/B runs (e.g. ROOMWARDEN_INGEST_WRITERS=4);"
        " repeatable",
    )
    parser.add_argument(
        "--receiver-app",
        default="webhooks.app:app",
        help="the ASGI app uvicorn serves as the receiver (default webhooks.app:app)",
    )
    parser.add_argument(
        "--receiver-http",
        default=procfile_http(),
        help="uvicorn's --http for the receiver (default: the Procfile web process's, %(default)s;"
        " 'httptools' for the bare endpoint's own)",
    )
    parser.add_argument("--show-wrk", action="store_true", help="print wrk's own output too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (bodies, server logs)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- bodies


def write_bodies(
    path: Path, factory: common.CallbackFactory, instances: list[str], first: int, count: int
) -> None:
    """Signed LLMResult callbacks, one JSON body per line, round-robin over the instances.

    Callback ``k`` goes to instance ``k % len(instances)`` with Sequence ``k // len(instances)``:
    every (instance, Sequence) pair, and so every dedup key, is new, as is every Nonce.
    """
    now_ms = int(time.time() * 1000)  # one timestamp is fine: the window is +-10 minutes
    with path.open("wb") as out:
        for k in range(first, first + count):
            sequence = k // len(instances)
            body = factory.body(
                event="LLMResult",
                instance_id=instances[k % len(instances)],
                sequence=sequence,
                timestamp_ms=now_ms,
                data={"Round": sequence // 8 + 1, "Text": common.sentence(k)},
            )
            out.write(body + b"\n")


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkRun:
    argv: list[str]
    result: dict[str, float]
    output: str
    cpu: _cpu.CpuMeter | None = None

    @property
    def seconds(self) -> float:
        return self.result["duration_us"] / 1e6

    @property
    def rps(self) -> float:
        return self.result["requests"] / self.seconds

    @property
    def non_2xx(self) -> int:
        return int(self.result["status"])

    @property
    def socket_errors(self) -> int:
        return int(sum(self.result[k] for k in ("connect", "read", "write", "timeout")))


def wrk_argv(args: argparse.Namespace, port: int, duration: int, bodies: Path) -> list[str]:
    return [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(bodies),
        str(args.threads),
    ]


def run_wrk(
    argv: list[str],
    cpu_groups: dict[str, Callable[[], Iterable[int]]] | None = None,
    threads: dict[str, tuple[int, dict[int, str]]] | None = None,
) -> WrkRun:
    """Run wrk; with ``cpu_groups``, meter CPU from the moment wrk has loaded its bodies until it exits.

    The Lua script prints BENCH_READY once the last thread has built its requests, just before
    wrk starts its clock, so loading a few hundred megabytes of bodies is not counted as load.
    """
    process = subprocess.Popen(
        argv, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    meter = None
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("BENCH_READY"):
                if cpu_groups is not None:
                    groups = dict(cpu_groups)
                    groups["wrk"] = lambda: [process.pid]
                    meter = _cpu.CpuMeter(groups, threads)
                    meter.start()
                break
        lines.append(process.stdout.read())
        # wrk has closed its output: it is exiting or a zombie, whose /proc entry still holds its
        # CPU times until it is reaped. Read them now, before wait() makes them vanish.
        if meter is not None:
            meter.stop()
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            return WrkRun(argv, json.loads(line.split(" ", 1)[1]), output, meter)
    raise RuntimeError(f"wrk printed no result (exit {process.returncode}):\n{output}")


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    server_argv: list[str]
    env_text: str
    run: WrkRun | None = None
    stored: int = 0
    batches: list[int] = field(default_factory=list)
    commits: int = 0
    drain_messages: int = 0
    profile: str = ""


def check_one(port: int, body: bytes) -> tuple[int, bytes]:
    """Post one callback before loading: a wrong secret or URL should fail loudly, not as 32k 401s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def first_line(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.readline().rstrip(b"\n")


def bench_bare(args: argparse.Namespace, procs: common.Processes, bodies: Path) -> Target:
    """The baseline: the same bodies and flags against an endpoint that only reads the body."""
    port = common.free_port()
    argv = common.uvicorn_argv("bench.bare_app:app", port)
    server = procs.start("bare", argv, common.child_env())
    target = Target("bare Starlette", argv, "")
    try:
        common.wait_for_http(server, port, PATH)
        run_wrk(wrk_argv(args, port, args.warmup, bodies))
        groups: dict[str, Callable[[], Iterable[int]]] = {
            "uvicorn (bare)": lambda: _cpu.descendants(server.pid)
        }
        threads = {"uvicorn (bare)": (server.pid, _cpu.thread_names(server.pid))}
        target.run = run_wrk(wrk_argv(args, port, args.duration, bodies), groups, threads)
    finally:
        procs.stop(server)
    return target


def receiver_env(args: argparse.Namespace, secret: str) -> dict[str, str]:
    extra = dict(item.split("=", 1) for item in args.receiver_env)
    return common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=args.redis_url,
        ROOMWARDEN_ZEGO_APP_ID=str(common.APP_ID),
        ROOMWARDEN_ZEGO_CALLBACK_SECRET=secret,
        ROOMWARDEN_LOG_LEVEL="WARNING",
        **extra,
    )


def bench_receiver(
    args: argparse.Namespace,
    procs: common.Processes,
    secret: str,
    files: dict[str, Path],
) -> Target:
    """The receiver against its own fresh database, measured by wrk and then by what got stored.

    The warm-up uses other bodies than the run, so every measured request is a new callback; rows
    and commits are counted from a baseline taken after the warm-up.
    """
    port = common.free_port()
    argv = with_http(common.uvicorn_argv(args.receiver_app, port), args.receiver_http)
    env = receiver_env(args, secret)
    env_keys = [k for k in env if k.startswith("ROOMWARDEN_")]
    env_keys += [item.split("=", 1)[0] for item in args.receiver_env if not item.startswith("ROOMWARDEN_")]
    server = procs.start("receiver", argv, env)
    target = Target("receiver (Postgres)", argv, common.describe_env(env, env_keys))
    database = common.database_name(args.database_url)
    db = common.connect(args.database_url)
    try:
        common.wait_for_http(server, port, PATH)
        status, reply = check_one(port, first_line(files["check"]))
        if status != 200 or b"stored" not in reply:
            raise RuntimeError(f"receiver refused a signed callback: {status} {reply!r}\n{server.log_tail()}")
        run_wrk(wrk_argv(args, port, args.warmup, files["warmup"]))
        time.sleep(1.5)  # the last batch commits and the backends report their stats
        first_id = common.scalar(db, "SELECT coalesce(max(id), 0) FROM inbox")
        commits_before = common.xact_commit(db, database)
        drains_before = drain_queue_length(args.redis_url)
        postmaster = _cpu.postmaster_pid(db)
        groups: dict[str, Callable[[], Iterable[int]]] = {
            "uvicorn (receiver)": lambda: _cpu.descendants(server.pid),
            "postgres backends": lambda: _cpu.postgres_groups(postmaster, database)["postgres backends"],
            "postgres wal/bg": lambda: _cpu.postgres_groups(postmaster, database)["postgres wal/bg"],
        }
        if (redis_pid := _cpu.redis_pid(args.redis_url)) is not None:
            groups["redis"] = lambda: [redis_pid]
        threads = {"uvicorn (receiver)": (server.pid, _cpu.thread_names(server.pid))}
        target.run = run_wrk(wrk_argv(args, port, args.duration, files["run"]), groups, threads)
        # Backends report their commit counts to pg_stat_database at most once a second.
        time.sleep(1.5)
        target.commits = common.xact_commit(db, database) - commits_before
        target.stored = common.scalar(db, "SELECT count(*) FROM inbox WHERE id > %s", first_id)
        # One writer transaction stamps its whole batch with one received_at: that is the batch.
        target.batches = [
            row[0]
            for row in db.execute(
                "SELECT count(*) FROM inbox WHERE id > %s GROUP BY received_at", (first_id,)
            ).fetchall()
        ]
        target.drain_messages = drain_queue_length(args.redis_url) - drains_before
        if args.profile:
            target.profile = profile_receiver(args, server.pid, port, files["profile"])
    finally:
        db.close()
        procs.stop(server)
    return target


def with_http(argv: list[str], protocol: str) -> list[str]:
    """``argv`` with its ``--http`` value replaced by ``protocol``."""
    index = argv.index("--http") + 1
    return [*argv[:index], protocol, *argv[index + 1 :]]


def drain_queue_length(redis_url: str) -> int:
    """Drain messages the receiver published during the run (no worker is consuming them)."""
    client = redis.Redis.from_url(redis_url)
    return sum(
        int(client.llen(key)) for key in client.scan_iter(match="roomwarden*") if client.type(key) == b"list"
    )


def profile_receiver(args: argparse.Namespace, pid: int, port: int, bodies: Path) -> str:
    """Sample the receiver with py-spy while wrk loads it; report where the GIL-holding time goes.

    ``--gil`` keeps only samples of the thread holding the GIL: in one Python process serving
    requests and running writer threads, the GIL is the resource everything queues for.
    """
    py_spy = common.VENV_BIN / "py-spy"
    if not py_spy.exists():
        return "py-spy not installed (.venv/bin/pip install py-spy)"
    out = bodies.with_suffix(".pyspy.txt")
    spy_argv = [
        str(py_spy), "record", "--pid", str(pid), "--duration", str(args.duration), "--rate", "200",
        "--gil", "--threads", "--nonblocking", "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    spy = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        run = run_wrk(wrk_argv(args, port, args.duration, bodies))
        spy.wait(timeout=args.duration + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    lines = [
        f"  profiled run (extra, perturbed by sampling): {run.rps:,.0f} req/s",
        f"  $ {shlex.join(spy_argv)}",
        *_cpu.summarize_pyspy(out, what="GIL-holding samples", by="thread"),
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, bare: Target, receiver: Target) -> None:
    assert bare.run is not None
    assert receiver.run is not None
    print()
    print("Servers (one after the other, same flags but --http):")
    print(f"  bare:     $ {shlex.join(bare.server_argv)}")
    print(f"  receiver: $ {receiver.env_text} \\\n              {shlex.join(receiver.server_argv)}")
    print("Load:")
    print(f"  $ {shlex.join(receiver.run.argv)}")
    print(f"  (bare: same, with the bare server's port; warm-up {args.warmup}s per target before each run)")
    print()
    head = (
        f"  {'target':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'non-2xx':>9}{'sock err':>9}"
    )
    head += f"{'stored/s':>10}"
    print(head)
    for target in (bare, receiver):
        run = target.run
        assert run is not None
        stored = f"{target.stored / run.seconds:>10,.0f}" if target is receiver else f"{'-':>10}"
        print(
            f"  {target.name:<22}{run.rps:>10,.0f}{run.result['p50_us'] / 1000:>9.2f}"
            f"{run.result['p99_us'] / 1000:>9.2f}{run.result['max_us'] / 1000:>9.1f}"
            f"{run.non_2xx:>9}{run.socket_errors:>9}{stored}"
        )
    ratio = receiver.run.rps / bare.run.rps
    stored_ratio = receiver.stored / receiver.run.seconds / bare.run.rps
    p99 = receiver.run.result["p99_us"] / 1000
    print()
    print("Targets (reported, not enforced):")
    print(
        f"  receiver / bare requests/s = {ratio:.0%} ({stored_ratio:.0%} counting stored rows)"
        f"   target >= {TARGET_RATIO:.0%}   {'met' if ratio >= TARGET_RATIO else 'NOT met'}"
    )
    print(
        f"  receiver p99               = {p99:.2f} ms at {args.connections} connections"
        f"   target < {TARGET_P99_MS:.0f} ms   {'met' if p99 < TARGET_P99_MS else 'NOT met'}"
    )
    duplicates = receiver.run.result["requests"] - receiver.run.non_2xx - receiver.stored
    print()
    print("Receiver, what the database saw:")
    print(
        f"  requests answered {int(receiver.run.result['requests']):,}; new inbox rows {receiver.stored:,}"
        f" (difference {duplicates:+,}: in flight at the end or duplicates);"
        f" body wraps {int(receiver.run.result['wraps'])} of {int(receiver.run.result['bodies']):,} bodies"
    )
    if receiver.run.result["wraps"]:
        print("  WARNING: wrk ran out of bodies and repeated some (answered 'duplicate'); raise --bodies")
    if receiver.batches:
        batches = sorted(receiver.batches)
        mean = sum(batches) / len(batches)
        print(
            f"  writer batches {len(batches):,}: mean {mean:.1f} rows,"
            f" median {common.percentile(batches, 50):.0f},"
            f" p90 {common.percentile(batches, 90):.0f}, max {batches[-1]} (rows sharing one received_at)"
        )
    print(
        f"  pg_stat_database xact_commit +{receiver.commits:,} (approximate) for {receiver.stored:,} rows"
        f" = {receiver.stored / max(1, receiver.commits):.1f} rows per commit"
    )
    print(
        f"  drain messages published to Redis: {receiver.drain_messages:,}"
        f" ({receiver.drain_messages / receiver.run.seconds:,.0f}/s, "
        f"{receiver.stored / max(1, receiver.drain_messages):.1f} callbacks each)"
    )
    print()
    print(
        f"What limits it: CPU over each measured run"
        f" ({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%)"
    )
    for target in (bare, receiver):
        if target.run and target.run.cpu:
            print(f"  {target.name}:")
            print("\n".join(target.run.cpu.report()))
    if receiver.profile:
        print()
        print("Receiver profile (py-spy):")
        print(receiver.profile)
    if args.show_wrk:
        for target in (bare, receiver):
            assert target.run is not None
            print(f"\nwrk output, {target.name}:")
            print("\n".join(line for line in target.run.output.splitlines() if not line.startswith("BENCH_")))
    print()
    print(f"durable ingest / bare = {100 * ratio:.0f}%")
    print(f"durable ingest p99 = {p99:.1f} ms at {args.connections} connections")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.terminate_on_sigterm()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    common.header("bench/ingest: durable ingest vs bare Starlette")
    workdir = Path(tempfile.mkdtemp(prefix="roomwarden-bench-ingest-"))
    secret = secrets.token_urlsafe(24)
    try:
        common.recreate_database(args.database_url)
        common.alembic_upgrade(args.database_url)
        common.flush_redis(args.redis_url)
        print(
            f"   database {common.database_name(args.database_url)} re-created at alembic head;"
            f" Redis {args.redis_url} flushed"
        )
        factory = common.CallbackFactory(secret)
        instances = common.instance_ids(INSTANCES, random.Random(7))
        warmup_count = max(20_000, args.bodies * args.warmup // max(1, args.duration))
        files = {name: workdir / f"{name}.jsonl" for name in ("check", "warmup", "run", "profile")}
        started = time.monotonic()
        write_bodies(files["check"], factory, instances, 0, 1)
        write_bodies(files["warmup"], factory, instances, 1, warmup_count)
        write_bodies(files["run"], factory, instances, 1 + warmup_count, args.bodies)
        if args.profile:
            write_bodies(files["profile"], factory, instances, 1 + warmup_count + args.bodies, args.bodies)
        size = len(first_line(files["run"]))
        print(
            f"   {args.bodies:,} signed bodies for the run (+{warmup_count:,} warm-up), ~{size} bytes each, "
            f"over {INSTANCES} instances, in {time.monotonic() - started:.1f}s"
        )
        with common.Processes(workdir) as procs:
            bare = bench_bare(args, procs, files["run"])
            receiver = bench_receiver(args, procs, secret, files)
        report(args, bare, receiver)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        common.flush_redis(args.redis_url)
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
