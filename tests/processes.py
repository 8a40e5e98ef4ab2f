"""Real processes for end-to-end tests: a private Redis, the receiver, Celery worker and beat.

Tests that stop a service use their own instance on a free port, never the shared one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from roomwarden.runner import commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=out)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class RedisServer(Process):
    def __init__(self, cwd: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__(f"redis-{self.port}", argv, dict(os.environ), cwd)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        wait_until(self._answers, 10, "private redis-server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


class Stack:
    """Receiver, worker and beat of one roomwarden deployment, each startable and stoppable."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        (cwd / "var").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = commands("127.0.0.1", self.port)  # exactly what `roomwarden run` starts
        self.receiver = Process("receiver", argv["web"], env, cwd)
        self.worker = Process("worker", argv["worker"], env, cwd)
        self.beat = Process("beat", argv["beat"], env, cwd)

    def start_receiver(self) -> None:
        self.receiver.start()

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 20, "the receiver to answer /healthz")

    def stop(self) -> None:
        for process in (self.receiver, self.beat, self.worker):
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.output()[-4000:]}" for p in (self.receiver, self.worker, self.beat)
        )
