"""What every read endpoint does with a bad or a costly query: a 400 naming the field, or a 503 once
its time budget is spent; never a 500, never the database's write lock."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import receiver_client
from tests.processes import Stack, wait_until
from tests.seeded import SEEDS, seed_committed
from worker.models import Turn
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-queries"
AUTH = {"authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture
def app(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    seed_committed(sessionmaker(clean_engine), settings)
    with receiver_client(settings, read_token=READ_TOKEN, raise_server_exceptions=False) as client:
        yield client


def cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


FILTERED = {
    "/v1/sessions": {},
    "/v1/search": {"q": "refund"},
    "/v1/stats": {},
    "/v1/exports/sessions.jsonl": {},
    "/v1/exports/turns.csv": {},
}
BAD_FILTERS = {
    "app_id of 2^63": ({"app_id": str(2**63)}, "app_id"),
    "negative app_id": ({"app_id": "-1"}, "app_id"),
    "min_turns of 2^63": ({"min_turns": str(2**63)}, "min_turns"),
    "since past year 9999 once in UTC": ({"since": "9999-12-31T23:59:59-23:59"}, "since"),
    "until before year 1 once in UTC": ({"until": "0001-01-01T00:00:00+14:00"}, "until"),
    "NUL in a room id": ({"room_id": "room\x00"}, "room_id"),
    "NUL in a user id": ({"user_id": "\x00"}, "user_id"),
    "NUL in an agent instance id": ({"agent_instance_id": "1\x00"}, "agent_instance_id"),
}


@pytest.mark.parametrize("path", FILTERED)
@pytest.mark.parametrize("case", list(BAD_FILTERS), ids=list(BAD_FILTERS))
def test_a_bad_filter_is_400_naming_it_on_every_endpoint(app: TestClient, path: str, case: str) -> None:
    """Exports included: refused before the first byte, so no client saves a cut file as whole."""
    params, field = BAD_FILTERS[case]
    response = app.get(path, params={**FILTERED[path], **params}, headers=AUTH)
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_query", field)


BAD_LISTINGS = {
    "cursor past year 9999 once in UTC": (
        {"cursor": cursor("started_at", "desc", "9999-12-31T23:59:59-23:59", "x")},
        "cursor",
    ),
    "cursor with a 2^70 duration": (
        {"sort": "duration", "cursor": cursor("duration", "desc", 2**70, "x")},
        "cursor",
    ),
    "cursor with a NUL id": ({"cursor": cursor("started_at", "desc", None, "\x00")}, "cursor"),
    "cursor that is not base64 JSON": ({"cursor": "%%%"}, "cursor"),
}


@pytest.mark.parametrize("case", list(BAD_LISTINGS), ids=list(BAD_LISTINGS))
def test_a_crafted_cursor_is_400(app: TestClient, case: str) -> None:
    params, field = BAD_LISTINGS[case]
    response = app.get("/v1/sessions", params=params, headers=AUTH)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["field"] == field


BAD_SEARCHES = {
    "only NUL": "\x00\x00\x00",
    "a thousand-character term": "a" * 1000,
    "a thousand short terms": " ".join(["ab"] * 1000),
    "nine terms": " ".join(f"t{n}" for n in range(9)),
    "a 65-character term": "x" * 65,
}


@pytest.mark.parametrize("q", list(BAD_SEARCHES.values()), ids=list(BAD_SEARCHES))
def test_a_search_out_of_bounds_is_400_naming_q(app: TestClient, q: str) -> None:
    response = app.get("/v1/search", params={"q": q}, headers=AUTH)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["field"] == "q"


def test_the_largest_search_within_bounds_is_answered(app: TestClient) -> None:
    """Eight terms of 64 characters (256 in all) is a query, even if it finds nothing."""
    q = " ".join(["y" * 31] * 8)
    response = app.get("/v1/search", params={"q": q}, headers=AUTH)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["hits"] == []


def test_a_search_over_a_megabyte_turn_answers_at_once(app: TestClient, clean_engine: Engine) -> None:
    """The review's case: one 1 MB turn stored. The long query is refused before any SQL; a short one
    (under three characters: the substring search without an index) reads a bounded part of it."""
    with clean_engine.begin() as conn:
        conn.execute(update(Turn).where(Turn.speaker == "user").values(text="ab" + "a" * 1_000_000))
    assert app.get("/v1/search", params={"q": "a" * 1000}, headers=AUTH).status_code == 400
    response = app.get("/v1/search", params={"q": "ab"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["hits"]


def test_a_read_past_its_budget_is_503_read_timeout(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """With a budget nothing can meet, the read stops and says so; the next request is served as usual."""
    if not settings.is_sqlite:
        pytest.skip(
            "SQLite's progress handler stops any statement; Postgres is covered in tests/worker/analysis/test_reads.py"
        )
    seed_committed(sessionmaker(clean_engine), settings, SEEDS)
    with receiver_client(settings, read_token=READ_TOKEN, read_timeout_seconds=1e-9) as client:
        started = time.monotonic()
        # A search reads every seeded turn (stats now read counters: too few steps to be stopped).
        response = client.get("/v1/search", params={"q": "a"}, headers=AUTH)
        assert time.monotonic() - started < 5
        assert response.status_code == 503, response.text[:300]
        assert response.json()["error"] == "read_timeout"
        assert client.get("/healthz").status_code == 200


def lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_read_stops_in_the_database_when_its_client_goes_away(
    receiver_process: Callable[..., Stack], database_url: str, clean_engine: Engine
) -> None:
    """A list request stuck behind a lock is cancelled in Postgres the moment its client hangs up,
    not whenever the lock goes (a real uvicorn, a real socket closed mid-request)."""
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "SQLite readers wait on no lock in WAL mode; cancellation is in tests/worker/analysis/test_reads.py"
        )
    stack = receiver_process(read_timeout_seconds="120")
    with clean_engine.connect() as locker:
        held = locker.begin()
        locker.execute(text("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE"))
        client = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
        client.sendall(
            f"GET /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n".encode()
        )
        wait_until(lambda: lock_waiters(clean_engine) == 1, 10, "the read to wait on the lock")
        client.close()
        wait_until(lambda: lock_waiters(clean_engine) == 0, 10, "the read to be cancelled")
        held.rollback()
