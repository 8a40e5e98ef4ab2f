"""Production (a Postgres database) refuses to start with secrets it would have to invent."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.conftest import PG_URL
from tests.factories import changed
from worker.settings import ProductionMisconfigured, Settings


def _start(settings: Settings) -> None:
    from webhooks.app import create_app

    with TestClient(create_app(settings)):
        pass


def test_the_web_process_refuses_to_start_without_a_secret_key(settings: Settings) -> None:
    production = changed(settings, database_url=PG_URL, secret_key=None)
    with pytest.raises(ProductionMisconfigured, match="ROOMWARDEN_SECRET_KEY"):
        _start(production)


def test_the_web_process_refuses_to_start_without_any_token(settings: Settings) -> None:
    production = changed(settings, database_url=PG_URL, api_token=None, read_token=None)
    with pytest.raises(ProductionMisconfigured, match="ROOMWARDEN_API_TOKEN") as refused:
        _start(production)
    assert "ROOMWARDEN_SECRET_KEY" not in str(refused.value)
