"""`roomwarden inbox list --state conflict`: where an operator finds callbacks that clashed."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine
from typer.testing import CliRunner

from roomwarden.cli import app
from tests.factories import Signer, ingest
from worker.db import make_sessionmaker, session_scope
from worker.settings import get_settings


def test_conflicting_callbacks_are_listed_by_state(
    clean_engine: Engine,
    database_url: str,
    signer: Signer,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = signer.callback("LLMResult", {"Round": 3, "Text": "stored first"}, sequence=41)
    clash = signer.resign({**first, "Data": {"Round": 3, "Text": "same key, other words"}})
    with session_scope(make_sessionmaker(clean_engine)) as db:
        assert ingest(db, [first]) == ["stored"]
        assert ingest(db, [clash]) == ["conflict"]
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["inbox", "list", "--state", "conflict"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert "conflict" in line and "LLMResult" in line and "seq=41" in line
