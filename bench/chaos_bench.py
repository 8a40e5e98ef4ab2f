"""The chaos suite at size: the scenarios of ``tests/chaos`` with more conversations, ZEGO's real
retry times (2/4/8/16/32 s, ``--scale 1``) and the full 30 s Redis outage.

Per scenario it prints the callbacks sent, the requests and retries it took, the seconds from
the last fault (or the last acknowledgement) to the exact expected result, and PASS or FAIL of
that comparison (with the first differences on FAIL). Nothing here is a figure to chase: the
point is whether the comparison passes at size.

Uses one database (dropped and re-created, then emptied between scenarios) and one Redis db
(flushed between scenarios); the Redis outage and the Postgres restart use a redis-server and a
Postgres cluster of their own on free ports. Every process it starts is stopped, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common as common  # noqa: E402

SCENARIOS = (
    "worker_kill",
    "receiver_kill",
    "beat_kill",
    "redis_down",
    "postgres_restart",
    "duplicates",
    "reversed",
    "two_apps",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_chaos_bench"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--scale", type=float, default=1.0, help="ZEGO's retry times multiplied by this")
    parser.add_argument(
        "--sessions", type=int, default=40, help="conversations per scenario (22 callbacks each)"
    )
    parser.add_argument("--idle-sessions", type=int, default=8, help="agents the beat scenario recycles")
    parser.add_argument("--redis-outage", type=float, default=30.0, help="seconds Redis stays down")
    parser.add_argument("--copies", type=int, default=5, help="copies of each callback in the storm")
    parser.add_argument("--converge-timeout", type=float, default=300.0)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.terminate_on_sigterm()
    # The processes the scenarios start read these; set before tests.conftest picks its defaults.
    os.environ["ROOMWARDEN_TEST_DATABASE_URL"] = args.database_url
    os.environ["ROOMWARDEN_TEST_REDIS_URL"] = args.redis_url
    os.environ.setdefault("ROOMWARDEN_BROKER_URL", args.redis_url)
    os.environ.setdefault("ROOMWARDEN_DATABASE_URL", args.database_url)

    from tests.chaos import scenarios
    from tests.conftest import migrate, wipe
    from worker.db import make_engine

    common.header("chaos")
    print(
        f"sessions {args.sessions}, scale {args.scale:g} (ZEGO retries "
        f"{'/'.join(f'{s * args.scale:g}' for s in (2, 4, 8, 16, 32))} s), "
        f"Redis outage {args.redis_outage:g} s"
    )
    common.recreate_database(args.database_url)
    migrate(args.database_url)
    engine = make_engine(args.database_url, pool_size=1)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="chaos-bench-") as tmp, emulators() as emulator_factory:
        base = Path(tmp)
        runs: dict[str, Callable[[Any], Any]] = {
            "worker_kill": lambda lab: scenarios.worker_killed_mid_drain(lab, sessions=args.sessions),
            "receiver_kill": lambda lab: scenarios.receiver_killed_mid_request(lab, sessions=args.sessions),
            "beat_kill": lambda lab: scenarios.beat_killed_mid_recycle(lab, sessions=args.idle_sessions),
            "redis_down": lambda lab: scenarios.redis_down(
                lab, sessions=args.sessions, outage=args.redis_outage
            ),
            "postgres_restart": lambda lab: scenarios.postgres_restarted(lab, sessions=args.sessions),
            "duplicates": lambda lab: scenarios.duplicate_storm(
                lab, sessions=args.sessions, copies=args.copies
            ),
            "reversed": lambda lab: scenarios.reversed_order(lab, sessions=args.sessions),
            "two_apps": lambda lab: scenarios.two_apps_interleaved(lab, sessions=args.sessions),
        }
        print(f"{'scenario':<34} {'callbacks':>9} {'requests':>9} {'retries':>8} {'converge s':>10}  result")
        for name in args.only:
            directory = base / name
            directory.mkdir()
            wipe(engine)
            common.flush_redis(args.redis_url)
            started = time.monotonic()
            with lab_for(name, args, directory, emulator_factory, migrate) as lab:
                try:
                    outcome = runs[name](lab)
                except AssertionError as error:
                    failures += 1
                    lines = str(error).splitlines()
                    took = time.monotonic() - started
                    print(f"{name:<34} {'':>9} {'':>9} {'':>8} {'':>10}  FAIL ({took:.0f} s)")
                    print("    " + "\n    ".join(lines[:30]))
                    continue
            sent = outcome.sent
            print(
                f"{outcome.scenario:<34} {sent.callbacks:>9} {sent.requests:>9} {sent.retries:>8} "
                f"{outcome.converged_seconds:>10.1f}  PASS ({time.monotonic() - started:.0f} s)"
            )
            for note in outcome.notes:
                print(f"    {note}")
        wipe(engine)
    engine.dispose()
    print(f"{len(args.only) - failures} of {len(args.only)} scenarios PASS")
    return 1 if failures else 0


@contextmanager
def emulators() -> Iterator[Callable[..., Any]]:
    from emulator import Emulator
    from tests.emulator_fixture import emulator_config

    started: list[Emulator] = []

    def start(**changes: Any) -> Emulator:
        emu = Emulator(emulator_config(**changes))
        emu.start()
        started.append(emu)
        return emu

    try:
        yield start
    finally:
        for emu in started:
            emu.stop()


@contextmanager
def lab_for(
    name: str,
    args: argparse.Namespace,
    directory: Path,
    emulator_factory: Callable[..., Any],
    migrate: Callable[[str], None],
) -> Iterator[Any]:
    """The scenario's lab; a private redis-server or Postgres cluster where it breaks one."""
    from tests.chaos.scenarios import Lab
    from tests.processes import PostgresServer, RedisServer, postgres_bin

    lab = Lab(
        directory,
        args.database_url,
        args.redis_url,
        args.scale,
        emulator_factory=emulator_factory,
        converge_timeout=args.converge_timeout,
    )
    if name == "redis_down":
        lab.redis = RedisServer(directory)
        lab.redis.start()
        try:
            yield lab
        finally:
            lab.redis.stop()
    elif name == "postgres_restart":
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL server binaries (initdb, pg_ctl): set ROOMWARDEN_PG_BIN")
        server = PostgresServer(directory, bin_dir)
        try:
            server.start()
            migrate(server.url)
            lab.database_url, lab.postgres = server.url, server
            yield lab
        finally:
            server.cleanup()
    else:
        yield lab


if __name__ == "__main__":
    sys.exit(main())
