"""DELETE /v1/users/{user_id} at the edge: scopes, bad parameters, unknown users, VACUUM on Postgres.

The erasure itself, surface by surface, is tests/worker/privacy/test_erasure.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import Signer, apply_pending, ingest, receiver_client
from tests.worker.privacy.conversation import USER, conversation
from worker.db import make_sessionmaker, session_scope
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-users-api"
ADMIN = {"authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def app(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    with session_scope(make_sessionmaker(clean_engine)) as db:
        ingest(db, conversation(Signer(), instance="7400000000000000001"))
        apply_pending(db, settings, instance="7400000000000000001")
    with receiver_client(settings, read_token=READ_TOKEN) as client:
        yield client


def test_only_the_admin_token_erases(app: TestClient) -> None:
    """No token: 401; the read token: 403; nothing is erased by either."""
    assert app.delete(f"/v1/users/{USER}").status_code == 401
    refused = app.delete(f"/v1/users/{USER}", headers={"authorization": f"Bearer {READ_TOKEN}"})
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert app.delete(f"/v1/users/{USER}", headers=ADMIN).json()["erased_anything"] is True


def test_a_bad_vacuum_value_is_400_naming_it(app: TestClient) -> None:
    """vacuum is true or false; anything else is refused before anything is erased."""
    answer = app.delete(f"/v1/users/{USER}", params={"vacuum": "please"}, headers=ADMIN)
    assert answer.status_code == 400 and answer.json()["field"] == "vacuum"


def test_an_unknown_user_is_404_saying_there_is_nothing_to_erase(app: TestClient) -> None:
    """No session has that id: a clear 404, not an empty success."""
    answer = app.delete("/v1/users/nobody", headers=ADMIN)
    assert answer.status_code == 404 and "nothing to erase" in answer.json()["detail"]


def test_vacuum_true_vacuums_the_touched_tables_on_postgres(app: TestClient, database_url: str) -> None:
    """On Postgres ?vacuum=true runs VACUUM (files_scrubbed); SQLite's files are always cleaned."""
    record = app.delete(f"/v1/users/{USER}", params={"vacuum": "true"}, headers=ADMIN).json()
    assert record["files_scrubbed"] is True
    if database_url.startswith("postgresql"):
        plain = app.delete(f"/v1/users/{USER}", headers=ADMIN).json()
        assert plain["files_scrubbed"] is False
