"""``roomwarden run``: receiver, worker and beat as child processes, stopped together on Ctrl-C.

The same three processes the Procfile names, so that what a newcomer runs is what production
runs, only on the embedded SQLite database and broker.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def commands(host: str, port: int) -> dict[str, list[str]]:
    """The Procfile's web, worker and beat, as this interpreter runs them."""
    py = sys.executable
    celery = [py, "-m", "celery", "-A", "worker.celery_app"]
    return {
        "web": [
            py,
            "-m",
            "uvicorn",
            "webhooks.app:app",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
        ],
        "worker": [
            *celery,
            "worker",
            "-Q",
            "roomwarden",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
        ],
        "beat": [*celery, "beat"],
    }


def wait_ready(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def supervise(
    host: str,
    port: int,
    env: dict[str, str],
    *,
    on_ready: Callable[[str], None] | None = None,
    echo: Callable[[str], None] = print,
    log_dir: Path | None = None,
) -> int:
    """Start the three processes; return when one dies or on SIGINT/SIGTERM, stopping the rest."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            echo(f"logs: {log_dir}/web.log, worker.log, beat.log")
        for name, argv in commands(host, port).items():
            output = None if log_dir is None else (log_dir / f"{name}.log").open("ab")
            # Own process group: Ctrl-C reaches us once, and we stop the children in order.
            children[name] = subprocess.Popen(  # noqa: S603
                argv, env=env, start_new_session=True, stdout=output, stderr=output
            )
        url = f"http://{host}:{port}"
        if wait_ready(url):
            echo(f"roomwarden is listening on {url} (callbacks: POST {url}/callbacks/zego)")
            if on_ready is not None and not stopping:
                on_ready(url)
        else:
            echo("roomwarden did not become ready in 30 s; see the logs above")
            stopping = True
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    echo(f"{name} exited with code {child.returncode}; stopping")
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("roomwarden stopped")
    return 0
