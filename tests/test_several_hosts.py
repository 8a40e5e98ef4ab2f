"""The production shape across network namespaces: two hosts, each with a receiver, a worker and a
beat, sharing one Postgres and one Redis over veths the test makes itself (loopback-only: nothing
leaves the machine). Signed conversations go to both receivers, some callbacks to both at once, as
a load balancer retrying on another host would send them; nothing is lost and nothing doubled.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session as DbSession

from roomwarden.runner import commands
from tests.conftest import API_TOKEN, SECRET_KEY
from tests.factories import APP_ID, CALLBACK_SECRET, Signer
from tests.processes import PostgresServer, Process, RedisServer, postgres_bin, wait_until
from tests.worker.conversation import EXPECTED_TURNS, conversation
from worker.models import InboxCallback, JobLock, Turn

pytestmark = pytest.mark.slow

CONVERSATIONS = 12


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    """A network namespace joined to the machine by a veth pair: it sees the shared services at
    ``gateway`` and the test reaches its receiver at ``address``."""

    name: str
    gateway: str
    address: str

    def create(self, index: int) -> None:
        outside, inside = f"rw{os.getpid() % 10000}h{index}o", f"rw{os.getpid() % 10000}h{index}i"
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", self.name)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.address}/24", "dev", inside)
        _run("ip", "netns", "exec", self.name, "ip", "link", "set", inside, "up")
        _run("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")

    def delete(self) -> None:
        subprocess.run(
            ["ip", "netns", "delete", self.name], capture_output=True, timeout=30
        )  # takes its veth

    def process(self, role: str, argv: list[str], env: dict[str, str], cwd: Path) -> Process:
        return Process(f"{self.name}-{role}", ["ip", "netns", "exec", self.name, *argv], env, cwd)


def _namespaces_work() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2"
    probe = f"rwprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"this machine cannot make network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    why_not = _namespaces_work()
    if why_not is not None:
        pytest.skip(why_not)
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries to start a private cluster")
    net = 100 + os.getpid() % 100
    made = [Host(f"rw-host{i}-{os.getpid()}", f"10.{net}.{i}.1", f"10.{net}.{i}.2") for i in (1, 2)]
    try:
        for index, host in enumerate(made, start=1):
            host.create(index)
        yield made
    finally:
        for host in made:
            host.delete()


def _callbacks() -> list[dict[str, Any]]:
    """Twelve conversations, each under its own agent instance, signed as ZEGO signs them."""
    signer = Signer(APP_ID, CALLBACK_SECRET)
    out = []
    for n in range(CONVERSATIONS):
        for payload in conversation(signer):
            moved = {**payload, "AgentInstanceId": f"inst-host-test-{n}"}
            out.append(signer.resign(moved, timestamp=payload["Timestamp"]))
    return out


def test_two_hosts_lose_nothing_and_double_nothing(hosts: list[Host], tmp_path: Path) -> None:
    pg_bin = postgres_bin()
    assert pg_bin is not None
    gateways = tuple(h.gateway for h in hosts)
    postgres = PostgresServer(tmp_path, pg_bin, listen=("127.0.0.1", *gateways))
    redis = RedisServer(tmp_path, bind=("127.0.0.1", *gateways))
    processes: list[Process] = []
    try:
        postgres.start()
        redis.start()
        local = create_engine(postgres.url)
        with local.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        migrate = {**os.environ, "ROOMWARDEN_DATABASE_URL": postgres.url}
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=Path(__file__).resolve().parents[1],
            env=migrate,
            check=True,
            capture_output=True,
        )
        for host in hosts:
            env = {
                **os.environ,
                "ROOMWARDEN_DATABASE_URL": f"postgresql+psycopg://postgres@{host.gateway}:{postgres.port}/roomwarden",
                "ROOMWARDEN_BROKER_URL": f"redis://{host.gateway}:{redis.port}/0",
                "ROOMWARDEN_ZEGO_APP_ID": str(APP_ID),
                "ROOMWARDEN_ZEGO_CALLBACK_SECRET": CALLBACK_SECRET,
                "ROOMWARDEN_API_TOKEN": API_TOKEN,
                "ROOMWARDEN_SECRET_KEY": SECRET_KEY,
                "ROOMWARDEN_SWEEP_INTERVAL_SECONDS": "1",
                "ROOMWARDEN_SWEEP_AFTER_SECONDS": "1",
                "ROOMWARDEN_LOG_FORMAT": "json",
            }
            argv = commands("0.0.0.0", 8080)  # what `roomwarden run` and the Procfile start
            for role in ("web", "worker", "beat"):
                process = host.process(role, argv[role], env, tmp_path)
                process.start()
                processes.append(process)

        def answering(host: Host) -> bool:
            try:
                return httpx.get(f"http://{host.address}:8080/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        for host in hosts:
            wait_until(lambda host=host: answering(host), 30, f"the receiver on {host.name}")

        sent = _callbacks()
        chooser = random.Random(20261204)
        clients = [httpx.Client(base_url=f"http://{h.address}:8080", timeout=10) for h in hosts]
        statuses: list[int] = []
        for payload in sent:
            first = chooser.randrange(2)
            statuses.append(clients[first].post("/callbacks/zego", json=payload).status_code)
            if chooser.random() < 0.25:  # the other host too: a retry that went elsewhere
                statuses.append(clients[1 - first].post("/callbacks/zego", json=payload).status_code)
        for client in clients:
            client.close()
        assert set(statuses) == {200}

        def count(model: Any, *where: Any) -> int:
            with DbSession(local) as db:
                return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        wait_until(
            lambda: count(InboxCallback, InboxCallback.state == "done") == len(sent),
            90,
            "every callback applied",
        )
        assert count(InboxCallback) == len(sent)
        assert count(Turn) == CONVERSATIONS * len(EXPECTED_TURNS)
        with DbSession(local) as db:
            texts = db.execute(select(Turn.session_id, Turn.text).order_by(Turn.session_id, Turn.id)).all()
            by_session: dict[str, list[str]] = {}
            for session_id, turn_text in texts:
                by_session.setdefault(session_id, []).append(turn_text)
            assert all(sorted(t) == sorted(EXPECTED_TURNS) for t in by_session.values())
            # Both hosts' workers are known, and the beats agreed on who sends each round.
            workers = db.scalars(select(JobLock.name).where(JobLock.name.startswith("worker:"))).all()
            assert len(workers) == 2, workers
        answer = httpx.get(
            f"http://{hosts[1].address}:8080/v1/sessions?state=ended",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert len(answer.json()["sessions"]) == CONVERSATIONS
    except BaseException:
        for process in processes:
            sys.stderr.write(f"--- {process.name}\n{process.output()[-3000:]}\n")
        raise
    finally:
        for process in processes:
            process.stop()
        redis.stop()
        postgres.cleanup()
