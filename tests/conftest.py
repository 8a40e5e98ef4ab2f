"""Fixtures on real databases: Postgres (ROOMWARDEN_TEST_DATABASE_URL) and the embedded SQLite.

Every database fixture is parametrised over both backends, so the whole suite also runs the
embedded path. Schemas come from ``alembic upgrade head``, never ``create_all``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PG_URL = os.environ.get(
    "ROOMWARDEN_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_test"
)
REDIS_URL = os.environ.get("ROOMWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Read by worker.celery_app at import: tests publish to the test Redis database, never a real one.
os.environ.setdefault("ROOMWARDEN_BROKER_URL", REDIS_URL)
os.environ.setdefault("ROOMWARDEN_DATABASE_URL", PG_URL)
# Production mode (a Postgres database) refuses to start a process without a secret key; every
# process a test starts inherits this one.
SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LTAxMjM0NTY3ODlhYmNkZWY="
os.environ.setdefault("ROOMWARDEN_SECRET_KEY", SECRET_KEY)

import pytest  # noqa: E402
import redis  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy import Engine, create_engine, delete, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from tests.deployment import deploy  # noqa: E402, F401
from tests.emulator_fixture import emulator, emulator_factory  # noqa: E402, F401
from tests.factories import APP_ID, CALLBACK_SECRET, Signer  # noqa: E402
from tests.processes import PostgresServer, RedisServer, Stack, postgres_bin  # noqa: E402
from tests.sinks import Sink  # noqa: E402
from worker.db import Base, make_engine  # noqa: E402
from worker.jobs import context  # noqa: E402
from worker.jobs.context import JobContext  # noqa: E402
from worker.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
API_TOKEN = "test-api-token-0123456789"


def migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    config.set_main_option("sqlalchemy.url", url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")


def ensure_postgres_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
        ).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "postgres":
        ensure_postgres_database(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'roomwarden.sqlite3'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test: nothing leaks."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    outer.rollback()
    connection.close()


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


@pytest.fixture
def clean_engine(engine: Engine) -> Iterator[Engine]:
    """For tests whose code commits (receiver, workers): empty tables before and after."""
    wipe(engine)
    yield engine
    wipe(engine)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        zego_app_id=APP_ID,
        zego_callback_secret=CALLBACK_SECRET,
        api_token=API_TOKEN,
        secret_key=SECRET_KEY,
        apply_retry_base_seconds=0.01,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, on a free port: tests that stop Redis never touch the shared one."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A migrated Postgres of the test's own, on a free port: tests that stop or restart Postgres
    never touch the shared one. Skipped where the server binaries are not installed."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in ROOMWARDEN_PG_BIN or "
            "/usr/lib/postgresql/*/bin: this test stops a private Postgres, never the shared one"
        )
    server = PostgresServer(tmp_path, bin_dir)
    try:
        server.start()
        migrate(server.url)
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def client(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The real receiver app (writer threads, real database, real Redis broker), in process."""
    from webhooks.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def receiver_process(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Stack]]:
    """Start ``uvicorn webhooks.app:app`` as a real process on the test database, with extra settings."""
    stacks: list[Stack] = []

    def start(**overrides: str) -> Stack:
        env = {
            **os.environ,
            "ROOMWARDEN_DATABASE_URL": database_url,
            "ROOMWARDEN_ZEGO_APP_ID": str(APP_ID),
            "ROOMWARDEN_ZEGO_CALLBACK_SECRET": CALLBACK_SECRET,
            "ROOMWARDEN_API_TOKEN": API_TOKEN,
            "ROOMWARDEN_SECRET_KEY": SECRET_KEY,
            "ROOMWARDEN_LOG_FORMAT": "json",
            **{f"ROOMWARDEN_{name.upper()}": value for name, value in overrides.items()},
        }
        stack = Stack(tmp_path, env)
        stacks.append(stack)
        stack.start_receiver()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


@pytest.fixture
def sinks() -> Iterator[Callable[..., Sink]]:
    """App endpoints (real HTTP servers) a test makes with ``sinks(answer=..., delay=...)``."""
    made: list[Sink] = []

    def make(**kwargs: Any) -> Sink:
        sink = Sink(**kwargs).start()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.stop()


@pytest.fixture
def run_tasks_with() -> Iterator[Callable[[JobContext], JobContext]]:
    """Task bodies run in this process against a test's own job context (its settings, its
    emulator); the process's context comes back, and the test's vendor clients close, afterwards."""
    with contextlib.ExitStack() as stack:

        def install(job: JobContext) -> JobContext:
            stack.callback(job.close)
            return stack.enter_context(context.installed(job))

        yield install
