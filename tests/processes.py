"""Real processes for end-to-end tests: a private Redis, the receiver, Celery worker and beat.

Tests that stop a service use their own instance on a free port, never the shared one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

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
    # In a process group of its own, so that ``kill`` takes its children too (a Celery worker's
    # pool processes, which would otherwise finish the drain their parent was killed in).
    own_group = False

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=out,
                start_new_session=self.own_group,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._kill_group()
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._kill_group()

    def kill(self) -> None:
        """``kill -9``: of the process and, in its own group, of everything it started."""
        if self.proc is None:
            return
        if self.own_group:
            self._kill_group()
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _kill_group(self) -> None:
        if self.own_group and self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class RedisServer(Process):
    def __init__(self, cwd: Path, *, bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.port), "--bind", *bind, "--save", "", "--appendonly", "no"]
        argv += ["--protected-mode", "no"]  # the other "hosts" of a test reach it over its own veths
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


def stack_env(database_url: str, broker_url: str) -> dict[str, str]:
    """A deployment's environment for tests: the test app and token, and a sweeper in a hurry."""
    from tests.conftest import API_TOKEN, SECRET_KEY
    from tests.factories import APP_ID, CALLBACK_SECRET

    return {
        **os.environ,
        "ROOMWARDEN_DATABASE_URL": database_url,
        "ROOMWARDEN_BROKER_URL": broker_url,
        "ROOMWARDEN_ZEGO_APP_ID": str(APP_ID),
        "ROOMWARDEN_ZEGO_CALLBACK_SECRET": CALLBACK_SECRET,
        "ROOMWARDEN_API_TOKEN": API_TOKEN,
        "ROOMWARDEN_SECRET_KEY": SECRET_KEY,
        "ROOMWARDEN_SWEEP_INTERVAL_SECONDS": "0.5",
        "ROOMWARDEN_SWEEP_AFTER_SECONDS": "1",
        "ROOMWARDEN_LOG_FORMAT": "json",
    }


class Stack:
    """Receiver, worker and beat of one roomwarden deployment, each startable and stoppable."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int | None = None) -> None:
        (cwd / "var").mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = commands("127.0.0.1", self.port)  # exactly what `roomwarden run` starts
        self.receiver = Process("receiver", argv["web"], env, cwd)
        self.worker = Process("worker", argv["worker"], env, cwd)
        self.beat = Process("beat", argv["beat"], env, cwd)
        self.outbound = Process("outbound", argv["outbound"], env, cwd)

    def start_receiver(self) -> None:
        self.receiver.start()

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 20, "the receiver to answer /healthz")

    def stop(self) -> None:
        for process in (self.receiver, self.beat, self.worker, self.outbound):
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.output()[-4000:]}"
            for p in (self.receiver, self.worker, self.beat, self.outbound)
        )


def postgres_bin() -> Path | None:
    """PostgreSQL server binaries: ROOMWARDEN_PG_BIN (scripts/services sets it), else the newest installed."""
    configured = os.environ.get("ROOMWARDEN_PG_BIN")
    if configured:
        candidates = [Path(configured)]
    else:

        def version(bin_dir: Path) -> list[int]:
            return [int(part) for part in bin_dir.parent.name.split(".") if part.isdigit()]

        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bin_dir in candidates:
        if all(os.access(bin_dir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bin_dir
    return None


class PostgresServer:
    """A private PostgreSQL cluster on a free port (trust auth), stopped and started with pg_ctl.

    The server refuses to run as root, so under root the cluster belongs to the ``postgres`` OS
    user, in a directory of its own under the system temporary directory (pytest's tmp_path is
    not reachable by other users). ``cleanup`` stops it, keeps its log beside the others in
    ``cwd`` and removes the cluster.
    """

    INITDB_OPTIONS = ("-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")

    def __init__(
        self,
        cwd: Path,
        bin_dir: Path,
        database: str = "roomwarden",
        *,
        listen: tuple[str, ...] = ("127.0.0.1",),
    ) -> None:
        self.listen = listen
        self.port = free_port()
        self.name = f"postgres-{self.port}"
        self.cwd, self.bin_dir, self.database = cwd, bin_dir, database
        self.base = Path(tempfile.mkdtemp(prefix="roomwarden-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self._as: dict[str, object] = {}
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            self._as = {"user": "postgres", "group": "postgres", "extra_groups": []}
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin_dir / tool), *args]
        done = subprocess.run(
            argv, cwd=self.base, capture_output=True, text=True, timeout=120, check=False, **self._as
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start the cluster, made with its database on the first call; same port and data after."""
        first = not self.data.exists()
        if first:
            self._run("initdb", "-D", str(self.data), *self.INITDB_OPTIONS)
            extra = [f"host all all {address}/16 trust" for address in self.listen if address != "127.0.0.1"]
            if extra:  # the test's own network: other "hosts" on veths it made
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write("\n".join(extra) + "\n")
        options = f"-p {self.port} -k {self.base} -c listen_addresses={','.join(self.listen)}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True
        if first:
            with psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
            ) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def cleanup(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        finally:
            if self.log.exists():
                shutil.copyfile(self.log, self.cwd / f"{self.name}.log")
            shutil.rmtree(self.base, ignore_errors=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
