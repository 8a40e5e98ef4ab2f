#!/usr/bin/env python3
"""Exports at scale: 1,000,000 turns to JSON Lines, CSV and Parquet, with peak memory per size.

Builds a fresh Postgres database (``INSERT ... SELECT generate_series``: 10,000 sessions of 100
turns each, English and Chinese text, some interrupted), then exports the turns of the first
N sessions (the ``until`` filter the API and CLI take) for N = 100k, 250k, 500k and 1M turns,
each format, each export in a fresh child process running ``worker.analysis.exports.write`` to a file.
The child reports its peak resident memory (VmHWM, /proc/self/status) and its resident memory
just before the export, so the table shows whether memory grows with the export (it should
not: rows stream from a server-side cursor and leave as chunks or Parquet row groups).

Run: ``.venv/bin/python bench/export_turns.py`` (``--help`` for sizes and formats).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_export_bench"
TURNS_PER_SESSION = 100  # 50 Rounds, a user and an agent turn each
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/export_turns.py", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument("--turns", type=int, default=1_000_000, help="turns to build (default 1,000,000)")
    parser.add_argument(
        "--sizes", default="100000,250000,500000,1000000", help="turns per export, comma-separated"
    )
    parser.add_argument("--formats", default="jsonl,csv,parquet")
    parser.add_argument("--reuse", action="store_true", help="keep the database a previous run built")
    parser.add_argument("--child", nargs=3, metavar=("FORMAT", "TURNS", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(database_url: str, turns: int) -> float:
    """Sessions one minute apart, one instance each, 50 Rounds of user + agent turns."""
    sessions = turns // TURNS_PER_SESSION
    english = [common.sentence(k) for k in range(6)]
    chinese = ["您好，请问有什么可以帮您？", "好的，已为您查到订单，退款将在三个工作日内到账。"]  # noqa: RUF001
    started = time.perf_counter()
    with common.connect(database_url) as conn:
        # Exports use neither search index (migration 0004); keeping them up to date row by row
        # would make the build, not the export, the long part.
        conn.execute("DROP INDEX IF EXISTS ix_turns_text_tsv, ix_turns_text_trgm")
        conn.execute(
            """
            INSERT INTO sessions (id, app_id, origin, state, end_reason, end_code, room_id, user_id,
                                  agent_id, created_at, started_at, ended_at, start_attempts)
            SELECT 'bench-' || lpad(n::text, 8, '0'), %(app)s, 'callback', 'ended', 'deleted', 0,
                   'room-' || n, 'user-' || (n %% 997), 'bench-bot',
                   %(t0)s + n * interval '1 minute', %(t0)s + n * interval '1 minute',
                   %(t0)s + n * interval '1 minute' + interval '5 minutes', 0
              FROM generate_series(0, %(sessions)s - 1) AS n
            """,
            {"app": common.APP_ID, "t0": T0, "sessions": sessions},
        )
        conn.execute(
            """
            INSERT INTO agent_instances (app_id, agent_instance_id, session_id, state, first_seen_at)
            SELECT app_id, 'inst-' || substr(id, 7), id, 'deleted', started_at FROM sessions
            """
        )
        conn.execute(
            """
            INSERT INTO turns (session_id, instance_id, round, speaker, text, user_id, spoken_at,
                               interrupted, interrupt_reason, played_text)
            SELECT i.session_id, i.id, r, s.speaker,
                   (CASE WHEN i.id %% 4 = 0 THEN %(zh)s::text[] ELSE %(en)s::text[] END)
                       [1 + (i.id + r) %% (CASE WHEN i.id %% 4 = 0 THEN 2 ELSE 6 END)],
                   CASE WHEN s.speaker = 'user' THEN 'user-' || (i.id %% 997) END,
                   i.first_seen_at + r * interval '4 seconds' + s.offset_ms * interval '1 millisecond',
                   s.speaker = 'agent' AND r %% 7 = 0,
                   CASE WHEN s.speaker = 'agent' AND r %% 7 = 0 THEN 1 END,
                   CASE WHEN s.speaker = 'agent' AND r %% 7 = 0 THEN 'Sure, I can help' END
              FROM agent_instances i
              CROSS JOIN generate_series(1, %(rounds)s) AS r
              CROSS JOIN (VALUES ('user', 1300), ('agent', 2100)) AS s(speaker, offset_ms)
            """,
            {"zh": chinese, "en": english, "rounds": TURNS_PER_SESSION // 2},
        )
        conn.execute("ANALYZE")
        stored = common.scalar(conn, "SELECT count(*) FROM turns")
    if stored != sessions * TURNS_PER_SESSION:
        raise SystemExit(f"built {stored} turns, expected {sessions * TURNS_PER_SESSION}")
    return time.perf_counter() - started


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(database_url: str, fmt: str, turns: int, out: str) -> int:
    """One export in this fresh process; prints its figures as JSON on stdout."""
    from worker.analysis import exports
    from worker.analysis.catalog import SessionFilter
    from worker.db import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    # The first N sessions hold the first N x 100 turns: the same filter the API takes.
    until = T0 + dt.timedelta(minutes=turns // TURNS_PER_SESSION)
    with engine.connect():
        pass  # connect (and import the driver's lazy parts) before the baseline
    before = rss_kb("VmRSS")
    started = time.perf_counter()
    with open(out, "wb") as sink:
        written = exports.write(factory, "turns", fmt, SessionFilter(until=until), sink)
    seconds = time.perf_counter() - started
    peak = rss_kb("VmHWM")
    engine.dispose()
    print(
        json.dumps(
            {
                "rows": written,
                "seconds": seconds,
                "before_kb": before,
                "peak_kb": peak,
                "bytes": os.path.getsize(out),
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        fmt, turns, out = args.child
        return child(args.database_url, fmt, int(turns), out)
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    if max(sizes) > args.turns:
        raise SystemExit("--sizes cannot exceed --turns")
    print(f"== bench/export_turns: streaming exports of turns ({os.cpu_count()} cores, {common.git_state()})")
    if not args.reuse:
        common.recreate_database(args.database_url)
        common.alembic_upgrade(args.database_url)
        print(f"  built {args.turns:,} turns in {build(args.database_url, args.turns):.1f}s")
    print(
        f"  {'format':<8} {'rows':>10} {'seconds':>8} {'rows/s':>9}"
        f" {'RSS before MB':>14} {'peak RSS MB':>12} {'file MB':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        for fmt in formats:
            for size in sizes:
                out = str(Path(scratch) / f"turns-{size}.{fmt}")
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--database-url",
                        args.database_url,
                        "--child",
                        fmt,
                        str(size),
                        out,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"export {fmt} {size} failed:\n{done.stderr}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                if r["rows"] != size:
                    raise SystemExit(f"exported {r['rows']} rows, expected {size}")
                print(
                    f"  {fmt:<8} {r['rows']:>10,} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9,.0f}"
                    f" {r['before_kb'] / 1024:>14.0f} {r['peak_kb'] / 1024:>12.0f} {r['bytes'] / 2**20:>8.1f}"
                )
                os.unlink(out)
    return 0


if __name__ == "__main__":
    common.terminate_on_sigterm()
    sys.exit(main())
