"""``roomwarden run``: receiver, worker, beat and outbound as child processes, stopped together on Ctrl-C.

The same processes the Procfile names, so that what a newcomer runs is what production
runs, only on the embedded SQLite database and broker.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


# webhooks/slow_clients.py: header timeout and connection limit (the Procfile passes the same).
SLOW_CLIENT_FLAGS = ("--http", "webhooks.slow_clients:BoundedProtocol")


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
            *SLOW_CLIENT_FLAGS,
        ],
        "worker": [
            *celery,
            "worker",
            "-Q",
            "roomwarden,roomwarden.jobs",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
        ],
        "beat": [*celery, "beat"],
        # Deliveries to the app's endpoints: threads, as each waits on the network, not the CPU.
        "outbound": [
            *celery,
            "worker",
            "-Q",
            "roomwarden.outbound",
            "-n",
            "outbound@%h",
            "--pool",
            "threads",
            "--concurrency",
            "8",
            "--without-mingle",
            "--without-gossip",
        ],
    }


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def with_emulator(host: str, port: int, env: dict[str, str]) -> tuple[dict[str, str], list[str], str]:
    """The environment pointing roomwarden at a local vendor emulator, its argv, and its control URL.

    The emulator plays ZEGO (with the dev app's secrets, sending callbacks to this roomwarden)
    and Coze (accepting the dev Coze token); nothing leaves the machine.
    """
    ports = [free_port(host) for _ in range(3)]
    app_id = env["ROOMWARDEN_ZEGO_APP_ID"]
    zego_app = f"{app_id}:{env['ROOMWARDEN_ZEGO_SERVER_SECRET']}:{env['ROOMWARDEN_ZEGO_CALLBACK_SECRET']}"
    coze_perms = (
        "createRoom,listVoice,chat,listMessage,createConversation,listConversation,retrieveConversation"
    )
    argv = [
        sys.executable,
        "-m",
        "emulator",
        "--host",
        host,
        "--zego-app",
        zego_app,
        "--callback-url",
        f"http://{host}:{port}/callbacks/zego",
        "--rtc-callback-url",
        f"http://{host}:{port}/callbacks/zego-rtc",
        "--zego-agent-port",
        str(ports[0]),
        "--zego-rtc-port",
        str(ports[1]),
        "--coze-port",
        str(ports[2]),
        "--coze-token",
        f"{env['ROOMWARDEN_COZE_TOKEN']}={coze_perms}",
        "--coze-bot",
        env.get("ROOMWARDEN_DEMO_COZE_BOT", "7348293334459310001"),
    ]
    urls = [f"http://{host}:{p}" for p in ports]
    env = {
        **env,
        "ROOMWARDEN_ZEGO_API_URL": urls[0],
        "ROOMWARDEN_ZEGO_RTC_URL": urls[1],
        "ROOMWARDEN_COZE_API_URL": urls[2],
    }
    return env, argv, urls[0]


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
    on_ready: Callable[[str], bool] | None = None,
    echo: Callable[[str], None] = print,
    log_dir: Path | None = None,
    extra: dict[str, list[str]] | None = None,
) -> int:
    """Start the processes; return when one dies or on SIGINT/SIGTERM, stopping the rest."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            echo(f"logs: {log_dir}/web.log, worker.log, beat.log, outbound.log")
        for name, argv in {**(extra or {}), **commands(host, port)}.items():
            output = None if log_dir is None else (log_dir / f"{name}.log").open("ab")
            # Own process group: Ctrl-C reaches us once, and we stop the children in order.
            children[name] = subprocess.Popen(  # noqa: S603
                argv, env=env, start_new_session=True, stdout=output, stderr=output
            )
        url = f"http://{host}:{port}"
        if wait_ready(url):
            echo(f"roomwarden is listening on {url} (callbacks: POST {url}/callbacks/zego)")
            if on_ready is not None and not stopping and not on_ready(url):
                stopping = True  # the caller is done (``roomwarden demo``)
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
