"""Two hosts must share one secret key: with Postgres, nothing starts on made-up secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL, REDIS_URL


def _env_without_secrets() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMWARDEN_")}
    return {**env, "ROOMWARDEN_DATABASE_URL": PG_URL, "ROOMWARDEN_BROKER_URL": REDIS_URL}


def test_roomwarden_run_on_postgres_refuses_without_its_secrets_and_invents_none(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roomwarden", "run", "--port", "1"],
        cwd=tmp_path,
        env=_env_without_secrets(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "ROOMWARDEN_SECRET_KEY" in done.stderr and "ROOMWARDEN_API_TOKEN" in done.stderr
    assert not (tmp_path / "var" / "dev-credentials.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("process", ["worker", "beat"])
def test_a_worker_or_beat_on_postgres_refuses_without_the_secret_key(process: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", process],
        cwd=Path(__file__).parents[2],
        env=_env_without_secrets(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ROOMWARDEN_SECRET_KEY" in done.stdout + done.stderr
