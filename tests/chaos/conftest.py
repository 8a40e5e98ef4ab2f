"""The chaos suite's lab: the test database emptied, a Redis of its own, the emulator on demand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from emulator import Emulator
from tests.chaos.scenarios import Lab
from tests.processes import PostgresServer, RedisServer

# ZEGO's 2/4/8/16/32 s retries at a quarter: a callback is retried for 15.5 s, longer than a
# receiver or Postgres takes to come back on a busy two-core machine.
SCALE = 0.25


@pytest.fixture
def lab(
    tmp_path: Path,
    database_url: str,
    clean_engine: Engine,
    private_redis: RedisServer,
    emulator_factory: Callable[..., Emulator],
) -> Lab:
    return Lab(
        tmp_path,
        database_url,
        private_redis.url,
        SCALE,
        emulator_factory=emulator_factory,
        redis=private_redis,
    )


@pytest.fixture
def private_lab(tmp_path: Path, private_postgres: PostgresServer, private_redis: RedisServer) -> Lab:
    return Lab(tmp_path, private_postgres.url, private_redis.url, SCALE, postgres=private_postgres)
