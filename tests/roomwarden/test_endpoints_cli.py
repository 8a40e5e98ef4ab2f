"""`roomwarden endpoints ...`: an operator registers, tests and inspects the app's endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import Engine
from typer.testing import CliRunner

from roomwarden.cli import app
from tests.conftest import REDIS_URL
from worker.settings import get_settings


@pytest.fixture
def cli(
    clean_engine: Engine, database_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[int, str]]]:
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    monkeypatch.setenv("ROOMWARDEN_BROKER_URL", REDIS_URL)
    monkeypatch.setenv("ROOMWARDEN_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["endpoints", *args])
        return result.exit_code, result.output

    yield run
    get_settings.cache_clear()


def test_create_list_test_and_read_the_deliveries(cli: Callable[..., tuple[int, str]]) -> None:
    code, out = cli("create", "http://127.0.0.1:9/hooks", "--events", "session.,turn.completed")
    assert code == 0, out
    made = json.loads(out)
    assert made["secret"].startswith("whsec_") and made["events"] == ["session.", "turn.completed"]

    code, out = cli("list", "--json")
    assert code == 0 and json.loads(out)["endpoints"][0]["secret"] == "***"

    code, out = cli("test", made["id"])
    assert code == 0 and out.startswith("queued delivery ")
    code, out = cli("deliveries", made["id"], "--json")
    [delivery] = json.loads(out)["deliveries"]
    assert (delivery["type"], delivery["state"]) == ("endpoint.test", "pending")

    code, out = cli("update", made["id"], "--disable")
    assert code == 0 and json.loads(out)["enabled"] is False
    code, out = cli("rotate-secret", made["id"])
    assert code == 0 and json.loads(out)["secret"] not in (made["secret"], "***")
    assert cli("delete", made["id"])[0] == 0
    assert cli("show", made["id"])[0] == 1


def test_bad_input_exits_2_naming_the_option(cli: Callable[..., tuple[int, str]]) -> None:
    code, out = cli("create", "http://127.0.0.1:9/hooks", "--events", "session.exploded")
    assert code == 2 and "--events" in out
    code, out = cli("create", "file:///etc/passwd")
    assert code == 2 and "--url" in out
    _, made = cli("create", "http://127.0.0.1:9/hooks")
    code, out = cli("replay", json.loads(made)["id"], "--since", "last tuesday")
    assert code == 2 and "--since" in out
