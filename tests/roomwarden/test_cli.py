"""The newcomer's path: `roomwarden run --demo` on the embedded SQLite database and broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roomwarden.demo import CONVERSATION
from tests.processes import free_port

pytestmark = pytest.mark.slow


def roomwarden(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomwarden", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def embedded_env() -> dict[str, str]:
    """The environment of someone who configured nothing."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMWARDEN_")}


def test_run_with_demo_shows_a_conversation_then_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`roomwarden run --demo` starts a session through the emulator, prints its transcript, and
    Ctrl-C stops web, worker, beat and the emulator."""
    env = embedded_env()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "roomwarden", "run", "--port", str(port), "--demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Still running" in line:
                break
        output = "".join(lines)
        assert f"listening on http://127.0.0.1:{port}" in output, output
        assert "POST /v1/sessions -> 202" in output
        assert "session is active" in output
        assert "ended (deleted)" in output
        assert "Agent: Of course! What time would you like to come in?" in output
        assert '(interrupted; the user heard: "Thank you, Ms Chen' in output
        assert "POST /v1/endpoints -> 201" in output
        assert re.search(r"session.ended +deleted, learned by api, 8 turns  \(signature verified\)", output)
        assert output.count("turn.completed") == 2 * len(CONVERSATION)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "roomwarden stopped" in rest
    for pattern in (f"--port {port}", f"127.0.0.1:{port}/callbacks"):  # roomwarden's and the emulator
        leftovers = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        assert leftovers.strip() == "", pattern
    assert (tmp_path / "var" / "roomwarden.sqlite3").exists()
    assert (tmp_path / "var" / "broker.sqlite3").exists()

    instance = re.search(r"agent instance (\d{19})", output)
    assert instance is not None
    printed = roomwarden("transcript", instance.group(1), cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr
    assert "ended, deleted" in printed.stdout
    assert printed.stdout.count("] user: ") == len(CONVERSATION)
    assert printed.stdout.count("] agent: ") == len(CONVERSATION)

    rebuilt = roomwarden("rebuild", cwd=tmp_path, env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert re.search(r"\b\d{2,} callbacks applied", rebuilt.stdout), rebuilt.stdout
    assert roomwarden("transcript", instance.group(1), cwd=tmp_path, env=env).stdout == printed.stdout


def test_transcript_of_an_unknown_session_says_so(tmp_path: Path) -> None:
    """Asking for a session that does not exist is an error with a message, not a traceback."""
    env = embedded_env()
    assert roomwarden("migrate", cwd=tmp_path, env=env).returncode == 0
    result = roomwarden("transcript", "no-such-session", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "no session with id or agent instance id no-such-session" in result.stderr
