"""What both benchmarks need: fresh databases, servers that are always stopped, signed callbacks.

The benchmarks start real processes (uvicorn, Celery, wrk) in their own sessions, so that a
Ctrl-C at the terminal reaches only the benchmark, which then stops exactly the processes it
started, by their process-group ids. Nothing here touches the shared Postgres or Redis servers
beyond the one database and the one Redis db each benchmark names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _cpu
import orjson
import psycopg
import redis
from psycopg import sql
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
APP_ID = 1234567

# The flags both HTTP servers get, so the only difference between them is the application.
UVICORN_FLAGS = ("--workers", "1", "--no-access-log", "--loop", "uvloop", "--http", "httptools")

SENTENCES = (
    "Sure, I can help you reschedule the appointment to Thursday afternoon at three o'clock.",
    "The order you placed last week has shipped and should arrive within two business days.",
    "Let me check the opening hours of the downtown branch for you, one moment please.",
    "Your current balance is forty two dollars, and the next payment is due on the fifth.",
    "I have noted your preference for a window seat and will pass it to the booking team.",
    "That model comes in three colours; the blue one is in stock at the store near you.",
)


def sentence(k: int) -> str:
    """What an LLMResult says: two of the sentences above, which makes a body of about 600 bytes."""
    return f"{SENTENCES[k % len(SENTENCES)]} {SENTENCES[(k // len(SENTENCES)) % len(SENTENCES)]}"


# --------------------------------------------------------------------------- processes


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that ``finally`` blocks stop our servers either way."""

    def _raise(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)


@dataclass
class Server:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def command_line(self) -> str:
        return shlex.join(self.argv)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every process a benchmark starts, stopped on exit (normal, error or Ctrl-C), newest first.

    Each child leads its own process group, so stopping one also stops what it forked (Celery's
    pool processes), and a terminal Ctrl-C is not delivered to the children behind our back.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._servers: list[Server] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Server:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        server = Server(name, list(argv), process, log_path)
        self._servers.append(server)
        return server

    def stop(self, server: Server, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it lingers."""
        if server in self._servers:
            self._servers.remove(server)
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.process.wait()
        # Pool children that outlived their parent still carry the group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for server in reversed(list(self._servers)):
            self.stop(server)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(server: Server, port: int, path: str = "/", timeout: float = 30.0) -> None:
    """Wait until the server answers anything at all on ``path`` (a 404 or 405 will do)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited early:\n{server.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f}s:\n{server.log_tail()}")


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]


# Production mode (Postgres) refuses to start without these; one set for every process of a run.
_RUN_SECRETS = {
    "ROOMWARDEN_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "ROOMWARDEN_API_TOKEN": base64.urlsafe_b64encode(os.urandom(18)).decode(),
}


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMWARDEN_")}
    env.update(_RUN_SECRETS)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def describe_env(env: dict[str, str], keys: Iterable[str]) -> str:
    """The ROOMWARDEN_* variables a command ran with, the secret shown as a length only."""
    parts = []
    for key in keys:
        value = env[key]
        if "SECRET" in key:
            value = f"<{len(value)} random chars>"
        parts.append(f"{key}={shlex.quote(value)}")
    return " ".join(parts)


# --------------------------------------------------------------------------- databases


def libpq_url(database_url: str, database: str | None = None) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def database_name(database_url: str) -> str:
    name = make_url(database_url).database
    if not name:
        raise SystemExit(f"--database-url needs a database name: {database_url}")
    return name


def recreate_database(database_url: str) -> None:
    """Drop and create the benchmark's own database; ``WITH (FORCE)`` ends stale sessions of a crashed run."""
    name = database_name(database_url)
    with psycopg.connect(libpq_url(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def alembic_upgrade(database_url: str) -> None:
    env = child_env(ROOMWARDEN_DATABASE_URL=database_url)
    done = subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{done.stdout}\n{done.stderr}")


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(libpq_url(database_url), autocommit=True)


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


def xact_commit(conn: psycopg.Connection[Any], database: str) -> int:
    """Transactions committed in ``database`` so far (backends report at most once a second)."""
    return int(scalar(conn, "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", database))


def flush_redis(broker_url: str) -> None:
    redis.Redis.from_url(broker_url).flushdb()


# --------------------------------------------------------------------------- callbacks


def sign(secret: str, timestamp: int, nonce: str) -> str:
    """ZEGO's scheme: sha1 of the sorted concatenation of secret, Timestamp and Nonce."""
    parts = sorted((secret, str(timestamp), str(nonce)))
    return hashlib.sha1("".join(parts).encode()).hexdigest()


def instance_ids(count: int, rng: random.Random) -> list[str]:
    """19-digit AgentInstanceIds, as ZEGO issues them."""
    return [str(rng.randrange(10**18, 10**19)) for _ in range(count)]


@dataclass
class CallbackFactory:
    """Builds signed callbacks; every one gets its own Nonce, so every Signature is distinct."""

    secret: str
    rng: random.Random = field(default_factory=lambda: random.Random(20261121))
    _nonce: int = 0

    def __post_init__(self) -> None:
        self._nonce_base = self.rng.randrange(10**9, 10**10)

    def body(
        self,
        *,
        event: str,
        instance_id: str,
        sequence: int,
        data: dict[str, Any],
        timestamp_ms: int | None = None,
    ) -> bytes:
        self._nonce += 1
        nonce = f"{self._nonce_base}{self._nonce:09d}"
        timestamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        suffix = instance_id[-6:]
        payload = {
            "AppId": APP_ID,
            "Event": event,
            "Nonce": nonce,
            "Timestamp": timestamp,
            "Signature": sign(self.secret, timestamp, nonce),
            "AgentInstanceId": instance_id,
            "AgentUserId": f"agent_user_{suffix}",
            "AgentId": "customer_service_agent_v2",
            "Name": "Customer Service Assistant",
            "RoomId": f"room_support_{suffix}",
            "Sequence": sequence,
            "Data": data,
        }
        return orjson.dumps(payload)


def http_post(path: str, body: bytes) -> bytes:
    """One complete HTTP/1.1 keep-alive request, built once and sent as is."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class BlastResult:
    statuses: dict[int, int]
    first_ack: float
    last_ack: float
    latencies: list[float]
    errors: int


async def _connection(
    port: int, requests: Sequence[bytes], cursor: Iterator[int], result: BlastResult
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index in cursor:
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            now = time.perf_counter()
            result.latencies.append(now - started)
            result.first_ack = min(result.first_ack, now)
            result.last_ack = max(result.last_ack, now)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _blast(port: int, requests: Sequence[bytes], connections: int) -> BlastResult:
    result = BlastResult({}, float("inf"), 0.0, [], 0)
    cursor = iter(range(len(requests)))  # shared: the requests go out in list order
    outcomes = await asyncio.gather(
        *(_connection(port, requests, cursor, result) for _ in range(connections)), return_exceptions=True
    )
    result.errors = sum(isinstance(outcome, BaseException) for outcome in outcomes)
    return result


def blast(port: int, requests: Sequence[bytes], connections: int) -> BlastResult:
    """Send pre-built requests over ``connections`` keep-alive connections, in order, as fast as answered.

    A raw asyncio client rather than httpx: the load generator shares two cores with the system
    under test, and building nothing per request keeps its share small.
    """
    try:
        import uvloop

        return uvloop.run(_blast(port, requests, connections))
    except ImportError:
        return asyncio.run(_blast(port, requests, connections))


# --------------------------------------------------------------------------- reporting


def git_state() -> str:
    """The commit and whether the tree was dirty: application code may change under a benchmark."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    files = [line[3:] for line in changed if line.strip()]
    return head + (f" (modified: {', '.join(files)})" if files else "")


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, code at {git_state()}")
    busy = _cpu.machine_busy()
    note = "  <- other work is running; figures will be low and noisy" if busy > 20 else ""
    print(f"   machine busy before start: {busy:.0f}% of one core{note}")


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
