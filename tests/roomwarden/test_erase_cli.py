"""``roomwarden erase --user ID``: the same erasure as the API, for an operator at a terminal."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from roomwarden.cli import app
from tests.factories import Signer, apply_pending, ingest
from tests.worker.privacy.conversation import EMAIL, USER, conversation
from worker.db import make_sessionmaker, session_scope
from worker.models import Erasure, Turn
from worker.settings import Settings, get_settings

INSTANCE = "7300000000000000001"


@pytest.fixture
def cli(
    clean_engine: Engine,
    database_url: str,
    settings: Settings,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CliRunner]:
    """The CLI in process over one committed conversation in which the user says personal data."""
    with session_scope(make_sessionmaker(clean_engine)) as db:
        ingest(db, conversation(Signer(), instance=INSTANCE))
        apply_pending(db, settings, instance=INSTANCE)
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_erase_prints_the_record_then_finds_nothing_left(cli: CliRunner, clean_engine: Engine) -> None:
    """A first erase prints counts and who ran it; a second says nothing is left; text is gone."""
    first = cli.invoke(app, ["erase", "--user", USER])
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout)
    assert record["erased_anything"] is True and record["counts"]["turns"] == 6
    assert record["requested_by"].startswith("cli:")
    with session_scope(make_sessionmaker(clean_engine)) as db:
        assert not [t for t in db.scalars(select(Turn.text)) if EMAIL in t]
        assert len(db.scalars(select(Erasure)).all()) == 1
    second = cli.invoke(app, ["erase", "--user", USER])
    assert second.exit_code == 0 and json.loads(second.stdout)["erased_anything"] is False
    assert "nothing left to erase" in second.stderr


def test_erase_of_an_unknown_user_exits_1_and_says_why(cli: CliRunner) -> None:
    """No session has that user id: a clear message, a non-zero exit, nothing recorded."""
    result = cli.invoke(app, ["erase", "--user", "nobody"])
    assert result.exit_code == 1 and "no session has that user id" in result.stderr
