"""A session's analysis as a read token sees it: under GET /v1/sessions/{id}, in /v1/search."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient

from emulator.server import Emulator
from tests.factories import receiver_client
from tests.worker.postcall.support import client, config, stored_session
from worker.postcall import running
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-analysis"
AUTH = {"authorization": f"Bearer {READ_TOKEN}"}
KEY = "sk-analysis-key-never-shown-42"


@pytest.fixture
def analysed(clean_engine: Engine, emulator: Emulator) -> str:
    with sessionmaker(clean_engine)() as db, db.begin():
        session = stored_session(db)
        result = running.run(running.prepare(db, session, config(emulator)), client(emulator))
        running.store(db, result)
        return session.id


@pytest.fixture
def app(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    with receiver_client(
        settings, read_token=READ_TOKEN, analysis_url="http://llm.invalid/v1", analysis_api_key=KEY
    ) as test_client:
        yield test_client


def test_the_detail_shows_the_analysis_with_model_version_and_usage(app: TestClient, analysed: str) -> None:
    """summary, data, outcome and reason, model, config version and token usage; never the key."""
    response = app.get(f"/v1/sessions/{analysed}", headers=AUTH)
    assert response.status_code == 200, response.text
    analysis = response.json()["analysis"]
    assert analysis["status"] == "done" and analysis["outcome"] == "success"
    assert analysis["data"] == {"city": "Hello", "passengers": 4}
    assert analysis["model"] == "gpt-test" and analysis["config_version"].startswith("h-")
    assert analysis["usage"]["total_tokens"] > 0
    assert KEY not in response.text


def test_search_answers_matching_summaries(app: TestClient, analysed: str) -> None:
    """GET /v1/search lists the sessions whose summary matches, beside the matching turns."""
    response = app.get("/v1/search", params={"q": "airport taxi"}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["session"]["id"] for s in body["summaries"]] == [analysed]
    assert KEY not in json.dumps(body)
