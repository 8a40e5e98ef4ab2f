"""A billed day: agent-seconds ZEGO bills while no user is in the room, native vs roomwarden's policies.

The emulator, time-scaled, plays a day of sessions (``billed_day_plan``: users who hang up,
who leave without hanging up, who go quiet, RTC faults, lost deletions, peaks past ZEGO's 10
concurrent instances) against a real roomwarden (receiver, worker and beat on Postgres and
Redis), once per policy: ``native`` (every policy dry-run but reconciliation, which only mends
roomwarden's record, so only ZEGO's own rules end agents: its 120 s rule), ``default`` and
``aggressive``. The emulator's ledger (``emulator/zego_ledger.py``) is the ground truth: per
instance, the seconds billed and the part of them with the creating user out of the room.
Prints, per kind of visit and run, the median / p95 / max of that per session in emulated
seconds, the total billed, sessions lost to quota, and the vendor's rate-limit and quota
refusals, beside the issue's targets. Nothing passes or fails.

The three runs play at once (``play_concurrently``), each in a process of its own with its own
emulator, roomwarden deployment, Redis server and database (``<name>_<policy>``); ``--sequential``
plays them one after another on ``--database-url`` and ``--redis-url``.

Time: roomwarden runs on the real clock, so every duration in its policy file and its beat
interval are divided by the time scale (``--scale``, default 20, or the one that plays the window
in ``--minutes``); the interval is floored at ``--min-interval`` real seconds, and the target uses
the interval that actually ran. What time compression distorts: roomwarden's own latency (a
start, a callback applied, a decision carried out: tenths of a real second, seconds on a loaded
machine) is multiplied by the scale in emulated seconds, and the vendor's rate limits stay per
real second (so they are ``scale`` times tighter than over a real day). The figures print both so
they can be told apart. To keep the scale low within ~15 real minutes, the default plays a window
of the day (``--window``, 16:45-21:15: the evening peak), not all 24 hours; it starts with no
agent running, about five fewer than the whole day would have then, two hours before the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import pickle
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as common
import _cpu
import httpx
import redis
from billed_day_plan import (
    DAY_S,
    KINDS,
    PATIENCE_S,
    POLICIES,
    PolicyRun,
    Visit,
    day,
    peak_arrivals_per_hour,
    policy,
    window,
)
from billed_day_users import Driver, Outcome, session_body
from sqlalchemy.engine import make_url

from emulator.zego_gateway import sign
from roomwarden.runner import commands

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_billed_day"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
SERVER_SECRET = "billed-day-server-secret-0000001"
CALLBACK_SECRET = "billed-day-callback-secret-00001"
ZEGO_IDLE_S = 120.0  # MaxIdleTime's default: ZEGO's native bound on unattended agents
POLICY_INTERVAL_S = 5.0  # roomwarden's default beat cadence of the policy jobs (emulated)
RATE_LIMIT_CODES = {("agent", 410000010), ("agent", 410001029), ("rtc", 206), ("rtc", 207)}
QUOTA_CODES = {410000011, 410001031}
WORKER_BOOT_S = 5.0
QUOTA = 10  # ZEGO's default concurrent voice instances, the emulator's and the policy's
# Each real second of roomwarden's latency (a start, a callback applied) is DEFAULT_SCALE emulated
# seconds of a user waiting or a slot counted taken. At 100x (a day in 15 minutes) a loaded
# 2-core machine made that 100-300 s: 130 of 200 users gave up waiting for agents ZEGO had room
# for. At 20x it is a few seconds, and the beat runs at its production cadence (5 s emulated =
# 0.25 s real); the price is a window of the day, not all of it: 4.5 hours take 13.5 minutes.
DEFAULT_SCALE = 20.0
DEFAULT_WINDOW = "16:45-21:15"  # the evening peak (19:00) +- 1.5 of its widths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/billed_day", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000, help="visits in the day (default 1000)")
    parser.add_argument("--hours", type=float, default=24.0, help="emulated hours they arrive over (24)")
    parser.add_argument(
        "--window",
        default=DEFAULT_WINDOW,
        help=f"the part of the day played, HH:MM-HH:MM (default {DEFAULT_WINDOW}, the evening peak; 'all')",
    )
    parser.add_argument("--minutes", type=float, default=None, help="real minutes per run (sets the scale)")
    parser.add_argument(
        "--scale", type=float, default=None, help=f"emulated s per real s (default {DEFAULT_SCALE:g})"
    )
    parser.add_argument(
        "--min-interval", type=float, default=0.5, help="floor of the beat interval, real s (0.5)"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help="runs (default all three)")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="one run after another on --database-url and --redis-url (default: all at once, each on"
        " its own database <name>_<policy> and its own Redis server)",
    )
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created per run (+ _<policy>)"
    )
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help="broker and rate limits with --sequential; flushed"
    )
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    # A run played by a child process (see play_concurrently): where it leaves its result.
    parser.add_argument("--result-file", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@dataclass
class RunResult:
    run: PolicyRun
    interval_s: float  # emulated beat interval that ran
    outcomes: list[Outcome]
    ledger: dict[str, Any]
    actions: list[tuple[str, str, str, float | None]] = field(default_factory=list)  # kind, reason, state, s
    queued: int = 0  # sessions roomwarden queued for a slot at least once
    slots: Slots = field(default_factory=lambda: Slots())
    # Real seconds from ZEGO deleting an instance to roomwarden applying its callback.
    deletion_lag: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- one run


def _register_agent(agent_url: str, app_id: int) -> None:
    """Once per run, as an app's deployment would: sessions then only name the AgentId."""
    nonce, timestamp = "billedday", int(time.time())
    params: dict[str, str | int] = {
        "Action": "RegisterAgent",
        "AppId": app_id,
        "SignatureNonce": nonce,
        "Timestamp": timestamp,
        "Signature": sign(app_id, nonce, SERVER_SECRET, timestamp),
        "SignatureVersion": "2.0",
    }
    body = {"AgentId": "concierge", "Name": "Concierge"}
    answer = httpx.post(agent_url, params=params, json=body, timeout=10).json()
    if answer["Code"] != 0:
        raise RuntimeError(f"RegisterAgent answered {answer}")


def _environment(
    args: argparse.Namespace, run: PolicyRun, scale: float, policy_file: Path, urls: dict[str, str]
) -> dict[str, str]:
    interval = max(POLICY_INTERVAL_S / scale, args.min_interval)
    return common.child_env(
        ROOMWARDEN_DATABASE_URL=args.database_url,
        ROOMWARDEN_BROKER_URL=args.redis_url,
        ROOMWARDEN_ZEGO_APP_ID=str(common.APP_ID),
        ROOMWARDEN_ZEGO_CALLBACK_SECRET=CALLBACK_SECRET,
        ROOMWARDEN_ZEGO_SERVER_SECRET=SERVER_SECRET,
        ROOMWARDEN_ZEGO_API_URL=urls["agent"],
        ROOMWARDEN_ZEGO_RTC_URL=urls["rtc"],
        ROOMWARDEN_POLICIES_FILE=str(policy_file),
        ROOMWARDEN_POLICY_INTERVAL_SECONDS=repr(interval),
        ROOMWARDEN_START_RETRY_BASE_SECONDS="0.2",
        # No drain message is lost here: a sweep that re-sends the streams of drains merely late
        # would only add load, and lateness, while the machine is busy.
        ROOMWARDEN_SWEEP_INTERVAL_SECONDS="2",
        ROOMWARDEN_SWEEP_AFTER_SECONDS="5",
        ROOMWARDEN_LOG_FORMAT="json",
        ROOMWARDEN_LOG_LEVEL="WARNING",
    )


SLOTS = re.compile(rb'^roomwarden_agent_slots_in_use\{app_id="(\d+)",kind="voice"\} ([0-9.e+]+)', re.M)
QUEUED = re.compile(rb'^roomwarden_sessions\{state="queued"\} ([0-9.e+]+)', re.M)


@dataclass
class Slots:
    """Samples of roomwarden's count of used agent slots beside what ZEGO really runs."""

    samples: int = 0
    queued_with_room: int = 0  # sessions queued while ZEGO ran fewer than its quota
    queued: int = 0
    most_over: float = 0.0  # roomwarden's count minus ZEGO's, at its worst


async def _watch_slots(api: httpx.AsyncClient, control: httpx.AsyncClient, slots: Slots) -> None:
    """Every real second: /metrics (roomwarden's view) and the ledger's running count (ZEGO's)."""
    while True:
        try:
            metrics = (await api.get("/metrics")).content
            running = int((await control.get("/_emulator/ledger?running=1")).json()["Running"])
        except httpx.HTTPError:
            metrics, running = b"", -1
        used, queued = SLOTS.search(metrics), QUEUED.search(metrics)
        if used is not None and running >= 0:
            slots.samples += 1
            slots.most_over = max(slots.most_over, float(used.group(2)) - running)
            if queued is not None and float(queued.group(1)) > 0:
                slots.queued += 1
                slots.queued_with_room += running < QUOTA
        await asyncio.sleep(1.0)


async def _drive(
    visits: list[Visit], env: dict[str, str], receiver: str, agent_url: str, scale: float, slots: Slots
) -> list[Outcome]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    headers = {"Authorization": f"Bearer {env['ROOMWARDEN_API_TOKEN']}"}
    async with (
        httpx.AsyncClient(base_url=receiver, headers=headers, timeout=30, limits=limits) as api,
        httpx.AsyncClient(base_url=agent_url, timeout=30, limits=limits) as control,
    ):
        driver = Driver(api, control, scale, started=time.monotonic())
        watcher = asyncio.create_task(_watch_slots(api, control, slots))
        outcomes = await asyncio.gather(*(driver.play(v, session_body(v)) for v in visits))
        # The users are done; agents they left behind bill on until ZEGO's rules or a policy end them.
        deadline = time.monotonic() + 4 * 3600 / scale + 10
        while time.monotonic() < deadline:
            ledger = (await control.get("/_emulator/ledger")).json()
            if not any(i["Running"] for i in ledger["Instances"]):
                break
            await asyncio.sleep(0.2)
        watcher.cancel()
        return list(outcomes)


def _actions(database_url: str) -> tuple[list[tuple[str, str, str, float | None]], int, list[float]]:
    """roomwarden's policy actions (kind, reason, state, decision to finish in real s), how many
    sessions it queued, and how late (real s) it applied each AgentInstanceDeleted ZEGO sent."""
    with common.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT kind, reason, state, EXTRACT(EPOCH FROM finished_at - created_at) FROM policy_actions"
        ).fetchall()
        queued = common.scalar(conn, "SELECT count(*) FROM sessions WHERE queued_at IS NOT NULL")
        learned = conn.execute(
            "SELECT EXTRACT(EPOCH FROM processed_at) - callback_ts / 1000.0 FROM inbox"
            " WHERE event = 'AgentInstanceDeleted' AND processed_at IS NOT NULL"
        ).fetchall()
    actions = [(str(k), str(r), str(s), None if d is None else float(d)) for k, r, s, d in rows]
    return actions, int(queued), [float(lag) for (lag,) in learned]


def run_one(
    args: argparse.Namespace, run: PolicyRun, visits: list[Visit], scale: float, logs: Path
) -> RunResult:
    common.recreate_database(args.database_url)
    common.alembic_upgrade(args.database_url)
    common.flush_redis(args.redis_url)
    directory = logs / run.name
    directory.mkdir(parents=True, exist_ok=True)
    policy_file = directory / "policies.toml"
    policy_file.write_text(run.toml)
    port, ports = common.free_port(), [common.free_port() for _ in range(3)]
    urls = {"agent": f"http://127.0.0.1:{ports[0]}", "rtc": f"http://127.0.0.1:{ports[1]}"}
    env = _environment(args, run, scale, policy_file, urls)
    interval = float(env["ROOMWARDEN_POLICY_INTERVAL_SECONDS"]) * scale
    emulator_argv = [
        str(common.VENV_BIN / "python"), "-m", "emulator",
        "--zego-app", f"{common.APP_ID}:{SERVER_SECRET}:{CALLBACK_SECRET}",
        "--callback-url", f"http://127.0.0.1:{port}/callbacks/zego",
        "--time-scale", repr(scale),
        "--zego-agent-port", str(ports[0]), "--zego-rtc-port", str(ports[1]), "--coze-port", str(ports[2]),
    ]  # fmt: skip
    argv = commands("127.0.0.1", port)
    with common.Processes(directory) as processes:
        emulator = processes.start("emulator", emulator_argv, common.child_env())
        common.wait_for_http(emulator, ports[0], "/_emulator/ledger")
        _register_agent(urls["agent"], common.APP_ID)
        receiver = processes.start("receiver", argv["web"], env)
        common.wait_for_http(receiver, port, "/healthz")
        servers = [
            emulator,
            receiver,
            processes.start("worker", argv["worker"], env),
            processes.start("jobs worker", _jobs_worker(argv["worker"]), env),
            processes.start("beat", argv["beat"], env),
        ]
        time.sleep(WORKER_BOOT_S)  # so that the first visits do not wait for Celery's start-up
        meter = _cpu.CpuMeter({s.name: _group(s.pid) for s in servers})
        meter.start()
        slots = Slots()
        outcomes = asyncio.run(_drive(visits, env, f"http://127.0.0.1:{port}", urls["agent"], scale, slots))
        meter.stop()
        cpu = {**meter.cpu_seconds, "users (this process)": meter.own_seconds, "machine": meter.busy_seconds}
        ledger = httpx.get(f"{urls['agent']}/_emulator/ledger", timeout=30).json()
    actions, queued, learned = _actions(args.database_url)
    _keep(directory / "visits.json", outcomes, ledger)
    return RunResult(run, interval, outcomes, ledger, actions, queued, slots, learned, meter.wall, cpu)


def _jobs_worker(worker: list[str]) -> list[str]:
    """One more worker process, for the beat's jobs only (``-Q roomwarden.jobs``).

    The beat's messages expire after one policy interval, a fraction of a real second here: with
    only the Procfile's worker, whose two processes are mostly in drains (up to 2 s a slice) and
    starts, most rounds of the idle scan and of start_queued expired unrun, and silent users'
    agents outlived the idle threshold by twenty times. A deployment may run the same.
    """
    argv = list(worker)
    argv[argv.index("-Q") + 1] = "roomwarden.jobs"
    argv[argv.index("--concurrency") + 1] = "1"
    return [*argv, "-n", "jobs@%h"]


def _keep(path: Path, outcomes: list[Outcome], ledger: dict[str, Any]) -> None:
    """Each visit beside what ZEGO billed in its room, for a second look at any figure."""
    rooms: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in ledger["Instances"]:
        rooms[entry["RoomId"]].append(entry)
    visits = [{**dataclasses.asdict(o), "billed": rooms.get(o.visit.room_id, [])} for o in outcomes]
    kept = {"visits": visits, "presence": ledger["Presence"], "refusals": ledger["Refusals"]}
    path.write_text(json.dumps(kept, indent=1))


def _group(pid: int) -> Callable[[], list[int]]:
    return lambda: _cpu.descendants(pid)


# --------------------------------------------------------------------------- report


def _per_visit(result: RunResult) -> dict[int, tuple[float, float]]:
    """visit number -> (no-user seconds, billed seconds), summed over the room's instances."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for entry in result.ledger["Instances"]:
        n = int(str(entry["RoomId"]).removeprefix("room_"))
        sums[n][0] += float(entry["NoUserS"])
        sums[n][1] += float(entry["BilledS"])
    return {n: (v[0], v[1]) for n, v in sums.items()}


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values):.0f} / {common.percentile(values, 95):.0f} / {max(values):.0f}"
        f" ({sum(values):,.0f})"
    )


def target(result: RunResult) -> str:
    """The issue's bound on unattended seconds: the policy's threshold plus one beat interval.

    roomwarden receives no RTC room events, so the first it can know of a user gone is their
    silence: the threshold is the idle policy's. ZEGO's own rules bound it too: MaxIdleTime
    (120 s) after the user leaves, 100 s more when their heartbeat was lost instead.
    """
    if result.run.name == "native":
        return f"ZEGO {ZEGO_IDLE_S:.0f} / {ZEGO_IDLE_S + 100:.0f} (*)"
    return f"<= {result.run.idle_after_s + result.interval_s:.0f}"


def report(results: list[RunResult], visits: list[Visit]) -> None:
    width = 30
    names = [r.run.name for r in results]
    print("\n== unattended agent-seconds per session (billed while the user was not in the room), emulated s")
    print("   median / p95 / max (total) per kind; each run plays the same day")
    print(f"   {'kind':<18}{'visits':>7}  " + "".join(f"{n:<{width}}" for n in names))
    per_visit = [_per_visit(r) for r in results]
    for kind in (*KINDS, "all"):
        chosen = [v.n for v in visits if kind in ("all", v.kind)]
        cells = [_spread([pv.get(n, (0.0, 0.0))[0] for n in chosen]) for pv in per_visit]
        print(f"   {kind:<18}{len(chosen):>7}  " + "".join(f"{c:<{width}}" for c in cells))
    cells = [target(r) for r in results]
    print(f"   {'target (max)':<25}  " + "".join(f"{c:<{width}}" for c in cells))
    print("   (*) no policy: ZEGO's MaxIdleTime after the user leaves, 100 s more if the heartbeat was lost")

    print("\n== agent-seconds billed in all, emulated s (median / p95 / max (total) per session)")
    for kind in (*KINDS, "all"):
        chosen = [v.n for v in visits if kind in ("all", v.kind)]
        cells = [_spread([pv.get(n, (0.0, 0.0))[1] for n in chosen]) for pv in per_visit]
        print(f"   {kind:<18}{len(chosen):>7}  " + "".join(f"{c:<{width}}" for c in cells))

    print("\n== sessions and vendor answers (targets: 0 lost, 0 refusals)")
    rows: list[tuple[str, list[str]]] = []
    rows.append(("lost (never admitted)", [str(sum(bool(o.lost) for o in r.outcomes)) for r in results]))
    rows.append(("rate-limit refusals", [str(_refusals(r, rate_limit=True)) for r in results]))
    rows.append(("quota refusals", [str(_refusals(r, rate_limit=False)) for r in results]))
    rows.append(("queued for a slot", [str(r.queued) for r in results]))
    rows.append(("wait for agent p50/p95/max", [_admission(r) for r in results]))
    rows.append(("agents recreated", [str(sum(o.recovered for o in r.outcomes)) for r in results]))
    rows.append(("driver errors", [str(sum(len(o.errors) for o in r.outcomes)) for r in results]))
    for label, cells in rows:
        print(f"   {label:<25}  " + "".join(f"{c:<{width}}" for c in cells))
    for r in results:
        print(f"   {r.run.name}: lost {_why(r.outcomes)}")
        print(f"      sessions queued while ZEGO had room: {_queue_with_room(r.slots)}")
        print(f"      {_learned(r)}")
        print(f"      other error answers: {_other_refusals(r)}")

    print("\n== what roomwarden did (policy_actions: kind/reason/state) and its latency")
    for r in results:
        counts = Counter(f"{k}/{why}/{state}" for k, why, state, _ in r.actions)
        done = [d for k, _, state, d in r.actions if d is not None and state == "done"]
        lag = "no action done"
        if done:
            p50, p95, scale = statistics.median(done), common.percentile(done, 95), r.ledger["TimeScale"]
            lag = (
                f"decision to done p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms real"
                f" = {p50 * scale:.0f} / {p95 * scale:.0f} emulated s"
            )
        print(f"   {r.run.name}: {', '.join(f'{k} {c}' for k, c in sorted(counts.items())) or 'none'}")
        print(f"      {lag}; beat interval {r.interval_s:.1f} emulated s")
    print("\n== runs")
    for r in results:
        cpu = ", ".join(f"{name} {seconds:.0f}" for name, seconds in r.cpu.items())
        print(f"   {r.run.name}: {r.wall_s:.0f} s real; CPU seconds: {cpu}")


def _why(outcomes: list[Outcome]) -> str:
    reasons = Counter(o.lost for o in outcomes if o.lost is not None)
    return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-"


def _refusals(result: RunResult, *, rate_limit: bool) -> int:
    total = 0
    for refusal in result.ledger["Refusals"]:
        key = (refusal["Api"], refusal["Code"])
        if (key in RATE_LIMIT_CODES) if rate_limit else (refusal["Code"] in QUOTA_CODES):
            total += int(refusal["Count"])
    return total


def _other_refusals(result: RunResult) -> str:
    counted = Counter[str]()
    for refusal in result.ledger["Refusals"]:
        key = (refusal["Api"], refusal["Code"])
        if key not in RATE_LIMIT_CODES and refusal["Code"] not in QUOTA_CODES:
            counted[f"{refusal['Action']} {refusal['Code']}"] += int(refusal["Count"])
    return ", ".join(f"{k} x{v}" for k, v in sorted(counted.items())) or "0"


def _queue_with_room(slots: Slots) -> str:
    """How often sessions waited while ZEGO ran fewer than its quota: roomwarden counting late."""
    if not slots.queued:
        return "-"
    share = 100.0 * slots.queued_with_room / slots.queued
    return f"{share:.0f}% of samples (over by {slots.most_over:.0f} at most)"


def _learned(result: RunResult) -> str:
    """How late roomwarden learns that a slot is free: each late second holds a slot ZEGO has freed."""
    lags = result.deletion_lag
    if not lags:
        return "no deletion callback applied"
    p50, p95, scale = statistics.median(lags), common.percentile(lags, 95), result.ledger["TimeScale"]
    return (
        f"ZEGO's AgentInstanceDeleted applied after p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms real"
        f" = {p50 * scale:.0f} / {p95 * scale:.0f} emulated s (roomwarden counts the slot taken till then)"
    )


def _admission(result: RunResult) -> str:
    waits = [o.waited_s for o in result.outcomes if o.admitted]
    if not waits:
        return "-"
    return f"{statistics.median(waits):.0f} / {common.percentile(waits, 95):.0f} / {max(waits):.0f} s"


def play_concurrently(
    args: argparse.Namespace, runs: list[PolicyRun], scale: float, logs: Path
) -> list[RunResult]:
    """Every run at once, each in a child process of its own on its own database and Redis server.

    A process each, not a thread: the users of three runs in one interpreter would share its GIL
    and fall behind the emulated clock. Each run has its own emulator and roomwarden deployment.
    """
    launcher = Path(__file__).with_name("billed_day")
    logs.mkdir(parents=True, exist_ok=True)
    children = []
    with common.Processes(logs) as processes:
        for run in runs:
            port = common.free_port()
            redis_argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            _wait_for_redis(processes.start(f"redis-{run.name}", redis_argv, common.child_env()), port)
            result_file = logs / f"{run.name}.result"
            argv = [
                sys.executable, str(launcher), "--policies", run.name, "--scale", repr(scale),
                "--sessions", str(args.sessions), "--hours", repr(args.hours), "--seed", str(args.seed),
                "--window", args.window,
                "--min-interval", repr(args.min_interval),
                "--database-url", _database_for(args.database_url, run.name),
                "--redis-url", f"redis://127.0.0.1:{port}/0",
                "--logs", str(logs), "--result-file", str(result_file),
            ]  # fmt: skip
            children.append((run, processes.start(f"run-{run.name}", argv, common.child_env()), result_file))
            print(f"-- {run.name}: {run.description}", flush=True)
        results = []
        for run, child, result_file in children:
            if child.process.wait() != 0:
                raise RuntimeError(f"the {run.name} run failed:\n{child.log_tail()}")
            result: RunResult = pickle.loads(result_file.read_bytes())
            print(f"   {run.name} done in {result.wall_s:.0f} s real", flush=True)
            results.append(result)
    return results


def _database_for(database_url: str, run_name: str) -> str:
    url = make_url(database_url)
    return url.set(database=f"{common.database_name(database_url)}_{run_name}").render_as_string(
        hide_password=False
    )


def _wait_for_redis(server: common.Server, port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited early:\n{server.log_tail()}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")


def _window(text: str, whole_s: float) -> tuple[float, float]:
    """``HH:MM-HH:MM`` (or ``all``) as emulated seconds of the day, within its ``whole_s``."""
    if text == "all":
        return 0.0, whole_s
    try:
        first, last = (int(h) * 3600.0 + int(m) * 60.0 for h, m in (t.split(":") for t in text.split("-")))
    except ValueError:
        raise SystemExit(f"--window wants HH:MM-HH:MM or all, not {text!r}") from None
    if not 0 <= first < last:
        raise SystemExit(f"--window {text!r} is empty")
    return min(first, whole_s), min(last, whole_s)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.terminate_on_sigterm()
    whole = args.hours * 3600.0
    start, end = _window(args.window, whole)
    span = end - start
    scale = args.scale or (span / (args.minutes * 60.0) if args.minutes else DEFAULT_SCALE)
    visits = window(day(args.sessions, seed=args.seed, span_s=whole), start, end)
    runs = [policy(name.strip(), scale) for name in args.policies.split(",") if name.strip()]
    if args.result_file is not None:  # one run for play_concurrently: its result goes in a file
        with tempfile.TemporaryDirectory(prefix="billed-day-") as scratch:
            result = run_one(args, runs[0], visits, scale, args.logs or Path(scratch))
        args.result_file.write_bytes(pickle.dumps(result))
        return 0
    concurrently = len(runs) > 1 and not args.sequential
    common.header(f"bench/billed_day: {args.sessions} sessions over {args.hours:g} emulated hours")
    if span < whole:
        print(
            f"   played: the {len(visits)} visits arriving {_clock(start)}-{_clock(end)}"
            f" ({span / 3600:g} hours of the day; their agents run to the end)"
        )
    kinds = Counter(v.kind for v in visits)
    print(f"   time scale {scale:.0f}x: a run takes about {span / scale / 60:.1f} real minutes plus the tail")
    if concurrently:
        print(
            f"   the {len(runs)} runs play at once, each with its own emulator, roomwarden, Redis server and"
            f" database ({common.database_name(args.database_url)}_<policy>)"
        )
    mix = ", ".join(f"{k} {kinds[k]}" for k in KINDS)
    print(f"   visits: {mix}; busiest hour {peak_arrivals_per_hour(visits)} arrivals")
    print(f"   a user waits {PATIENCE_S:.0f} s in roomwarden's line for an agent, then hangs up (lost)")
    print("   ZEGO quota 10 voice instances; rate limits per real second (scale x tighter than a real day)")
    if whole < DAY_S:
        dense = args.sessions * DAY_S / whole
        print(f"   (a {args.hours:g}-hour day: arrivals as dense as {dense:,.0f} in 24 hours)")
    results = []
    with tempfile.TemporaryDirectory(prefix="billed-day-") as scratch:
        logs = args.logs or Path(scratch)
        if concurrently:
            results = play_concurrently(args, runs, scale, logs)
        for run in runs if not concurrently else []:
            print(f"-- {run.name}: {run.description}", flush=True)
            result = run_one(args, run, visits, scale, logs)
            print(f"   done in {result.wall_s:.0f} s real", flush=True)
            results.append(result)
    report(results, visits)
    return 0
