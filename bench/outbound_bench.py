"""How fast events reach an app's endpoint: fan-out and delivery at 32 concurrent requests.

Writes a backlog of events into the outbox of a fresh Postgres database (many sessions, a few
events each, as conversations make them), registers one endpoint (a bare uvicorn app answering
204, ``bench/sink_app.py``) and times, in this process, what beat and the outbound worker do:
``dispatch.fan_out`` (outbox to deliveries) and ``delivery.deliver`` (signed POSTs, at most
``--concurrency`` at once, in order per session, every attempt recorded) until every delivery
has succeeded. Prints events/s and CPU microseconds per event of this process for each run and
their medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as common
from sqlalchemy import func, select

from worker.db import make_engine, make_sessionmaker, session_scope, utcnow
from worker.events import delivery, dispatch, endpoints, outbox
from worker.jobs.context import JobContext
from worker.models import Delivery
from worker.settings import Settings

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_outbound_bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/outbound", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument("--sessions", type=int, default=2000, help="sessions per run (default 2000)")
    parser.add_argument("--events", type=int, default=5, help="events per session (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests at once (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs (default 3)")
    return parser.parse_args(argv)


def backlog(factory: object, sessions: int, events: int) -> int:
    """``sessions`` x ``events`` turn.completed events, committed a thousand at a time."""
    now = utcnow()
    made = []
    for _ in range(sessions):
        session_id = str(uuid.uuid4())
        for n in range(events):
            data = {
                "session_id": session_id,
                "app_id": 1,
                "round": n,
                "speaker": "agent",
                "text": common.sentence(n),
            }
            made.append(
                outbox.Event(
                    "turn.completed", f"bench:{session_id}:{n}", data, now, session_id=session_id, app_id=1
                )
            )
    for start in range(0, len(made), 1000):
        with session_scope(factory) as db:  # type: ignore[arg-type]
            outbox.emit(db, made[start : start + 1000])
    return len(made)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"== bench/outbound: events to one local endpoint at {args.concurrency} concurrent"
        f" ({os.cpu_count()} cores, {common.git_state()})"
    )
    common.recreate_database(args.database_url)
    common.alembic_upgrade(args.database_url)
    settings = Settings(
        database_url=args.database_url,
        endpoints_allow_private=True,
        delivery_concurrency=args.concurrency,
        delivery_budget_seconds=3600,
        _env_file=None,  # type: ignore[call-arg]
    )
    engine = make_engine(args.database_url)
    factory = make_sessionmaker(engine)
    job = JobContext(settings=settings, sessions=factory, vendors=None, sealer=None)  # type: ignore[arg-type]
    port = common.free_port()
    with tempfile.TemporaryDirectory() as logs, common.Processes(Path(logs)) as processes:
        sink = processes.start("sink", common.uvicorn_argv("bench.sink_app:app", port), common.child_env())
        common.wait_for_http(sink, port)
        with session_scope(factory) as db:
            wanted = endpoints.parse(
                {"url": f"http://127.0.0.1:{port}/events"}, creating=True, allow_private=True
            )
            endpoint, _ = endpoints.create(db, wanted, sealer=None, now=utcnow())
            endpoint_id = endpoint.id
        rates, cpus = [], []
        for run in range(args.runs + 1):  # the first warms up connections and statement caches
            count = backlog(factory, args.sessions, args.events)
            wall, cpu = time.perf_counter(), time.process_time()
            dispatch.fan_out(job)
            fanned = time.perf_counter() - wall
            while delivery.deliver(job, endpoint_id).sent:
                pass
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            with session_scope(factory) as db:
                left = db.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.state != "succeeded")
                )
            assert left == 0, f"{left} deliveries did not succeed"
            if run == 0:
                print(f"  warm-up: {count:,} events in {wall:.2f}s")
                continue
            rates.append(count / wall)
            cpus.append(cpu / count * 1e6)
            print(
                f"  run {run}: {count:,} events in {wall:.2f}s = {count / wall:,.0f} events/s"
                f" (fan-out {fanned:.2f}s), {cpu / count * 1e6:.0f} us CPU each"
            )
    print(
        f"  median: {statistics.median(rates):,.0f} events/s delivered,"
        f" {statistics.median(cpus):.0f} us CPU per event (this process; Postgres and the sink beside it)"
    )
    engine.dispose()
    return 0
