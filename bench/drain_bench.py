"""How fast one process applies stored callbacks: the drain alone, no Celery, no HTTP.

Stores a backlog in a fresh Postgres database with the receiver's own insert, then times
``worker.inbox.drain.drain_until_done`` over it in this process (after one warm-up drain, so that
SQLAlchemy's statement cache is warm as in a long-running worker). Prints callbacks/s and CPU
microseconds per callback for each run and their medians. No targets: this is the figure to
move when working on the drain; ``bench/pipeline`` says what it means end to end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as common
from sqlalchemy import text

from tests.factories import Signer, ingest
from worker.db import make_engine, make_sessionmaker, session_scope
from worker.inbox.drain import drain_until_done
from worker.settings import Settings

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_drain_bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/drain", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument("--streams", type=int, default=10, help="agent instances (default 10)")
    parser.add_argument("--rounds", type=int, default=50, help="Rounds per instance (default 50)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs (default 5)")
    return parser.parse_args(argv)


def backlog(
    factory: object, signer: Signer, first_instance: int, streams: int, rounds: int
) -> list[tuple[int, str]]:
    """Per Round: an ASRResult, six LLMResult sentences, three status changes (10 callbacks)."""
    callbacks = []
    for n in range(streams):
        instance = str(first_instance + n)
        for r in range(rounds):
            callbacks.append(
                signer.callback("ASRResult", {"UserId": "u", "Round": r, "Text": "hello"}, instance=instance)
            )
            for k in range(6):
                callbacks.append(
                    signer.callback("LLMResult", {"Round": r, "Text": common.sentence(k)}, instance=instance)
                )
            for status in ("THINKING", "SPEAKING", "IDLE"):
                callbacks.append(
                    signer.callback("AgentInstanceStatus", {"Status": status, "Round": r}, instance=instance)
                )
    with session_scope(factory) as db:  # type: ignore[arg-type]
        ingest(db, callbacks)
    return [(signer.app_id, str(first_instance + n)) for n in range(streams)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"== bench/drain: one process applying a stored backlog"
        f" ({os.cpu_count()} cores, {common.git_state()})"
    )
    common.recreate_database(args.database_url)
    common.alembic_upgrade(args.database_url)
    engine = make_engine(args.database_url)
    factory = make_sessionmaker(engine)
    settings = Settings(database_url=args.database_url, _env_file=None)  # type: ignore[call-arg]
    signer = Signer()
    per_run = args.streams * args.rounds * 10
    drain_until_done(
        factory,
        backlog(factory, signer, 7_000_000_000_000_000_000, args.streams, args.rounds),
        settings=settings,
    )
    rates, cpus = [], []
    for run in range(args.runs):
        keys = backlog(factory, signer, 7_100_000_000_000_000_000 + run * 1000, args.streams, args.rounds)
        wall, cpu = time.perf_counter(), time.process_time()
        applied = drain_until_done(factory, keys, settings=settings).applied
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert applied == per_run, (applied, per_run)
        rates.append(applied / wall)
        cpus.append(cpu / applied * 1e6)
        print(
            f"  run {run + 1}: {applied:,} callbacks in {wall:.2f}s = {applied / wall:,.0f}/s,"
            f" {cpu / applied * 1e6:.0f} us CPU each"
        )
    with engine.begin() as conn:
        done = conn.execute(text("SELECT count(*) FROM inbox WHERE state = 'done'")).scalar_one()
    print(
        f"  median: {statistics.median(rates):,.0f} callbacks/s,"
        f" {statistics.median(cpus):.0f} us CPU per callback"
        f" (this process only; Postgres works beside it); {done:,} callbacks done in all"
    )
    engine.dispose()
    return 0
