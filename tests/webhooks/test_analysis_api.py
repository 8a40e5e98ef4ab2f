"""GET /v1/search and /v1/stats as an analyst's dashboard calls them, with a read token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, update
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient

from tests.factories import receiver_client
from tests.seeded import SEEDS, seed_committed
from worker.db import session_scope
from worker.models import Session
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-search-stats"
AUTH = {"authorization": f"Bearer {READ_TOKEN}"}
RATES = {"zego": 0.02, "zego_digital_human": 0.1}


@pytest.fixture
def app(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The real app over the committed seeded sessions, with a read token and cost rates."""
    seed_committed(sessionmaker(clean_engine), settings)
    with receiver_client(
        settings, read_token=READ_TOKEN, cost_per_minute=RATES, cost_currency="EUR"
    ) as client:
        yield client


def test_search_answers_hits_with_session_turn_and_neighbours(app: TestClient) -> None:
    """A Chinese query inside a filter finds the seeded turns, each with its session summary and context."""
    response = app.get(
        "/v1/search", params={"q": "叫醒服务", "provider": "zego_digital_human", "context": 1}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "叫醒服务"
    hotel = next(s for s in SEEDS if s.key == "inst-zh-hotel")
    assert {(h["turn"]["speaker"], h["turn"]["text"]) for h in body["hits"]} == {
        ("user", "请帮我预订明天早上的叫醒服务"),
        ("agent", "已为您设置明早六点半的叫醒服务。"),
    }
    for hit in body["hits"]:
        assert hit["session"]["id"] == hotel.session_id
        assert isinstance(hit["turn"]["id"], int)
        assert len(hit["before"]) <= 1 and len(hit["after"]) == 1


def test_stats_answer_the_seeded_figures_with_the_configured_rates(app: TestClient) -> None:
    """Stats over HTTP: counts, priced in the configured currency at the configured rates."""
    response = app.get("/v1/stats", params={"app_id": str(SEEDS[0].app_id)}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    mine = [s for s in SEEDS if s.app_id == SEEDS[0].app_id]
    assert body["sessions"] == len(mine)
    assert body["turns"] == sum(s.turns for s in mine)
    assert body["cost"]["currency"] == "EUR"
    assert body["cost"]["rates"] == RATES
    minutes = sum(
        s.length_ms for s in mine if s.delete_code is not None and s.provider != "zego_digital_human"
    )
    assert body["cost"]["by_provider"]["zego"] == pytest.approx(minutes / 60000 * RATES["zego"])
    assert sum(d["sessions"] for d in body["per_day"]) == len(mine)


def test_stats_total_the_time_with_no_user_over_the_sessions_where_it_is_known(
    app: TestClient, clean_engine: Engine
) -> None:
    """Two ended sessions lost their user for 30 and 90 billed seconds; the rest are unknown, so
    the dashboard reads 120 s over 2 sessions, median 60 s, not an average over zeros."""
    ended = [s for s in SEEDS if s.delete_code is not None][:2]
    with session_scope(sessionmaker(clean_engine)) as db:
        for s, seconds in zip(ended, (30.0, 90.0), strict=True):
            db.execute(update(Session).where(Session.id == s.session_id).values(no_user_seconds=seconds))
    response = app.get("/v1/stats", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["no_user_seconds"] == {"total": 120.0, "median": 60.0, "p90": 84.0, "sessions": 2}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/search", {}, "q"),
        ("/v1/search", {"q": "   "}, "q"),
        ("/v1/search", {"q": "rain", "limit": "0"}, "limit"),
        ("/v1/search", {"q": "rain", "context": "many"}, "context"),
        ("/v1/search", {"q": "rain", "since": "yesterday"}, "since"),
        ("/v1/search", {"q": "rain", "provider": "acme"}, "provider"),
        ("/v1/stats", {"has_exceptions": "maybe"}, "has_exceptions"),
        ("/v1/stats", {"min_turns": "two"}, "min_turns"),
        ("/v1/stats", {"until": "2026-13-45"}, "until"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(
    app: TestClient, path: str, params: dict[str, str], field: str
) -> None:
    """An empty query or a filter that cannot be read is the caller's mistake, said precisely."""
    response = app.get(path, params=params, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_query"
    assert body["field"] == field


def test_search_and_stats_need_a_token(app: TestClient) -> None:
    """Without a bearer token neither answers."""
    assert app.get("/v1/search", params={"q": "rain"}).status_code == 401
    assert app.get("/v1/stats").status_code == 401


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/search?q=hello", "/v1/stats"])
def test_a_min_turns_past_any_count_is_400_not_500(app: TestClient, path: str) -> None:
    """Found by schemathesis: min_turns=2**31 overflowed Postgres's integer comparison."""
    joiner = "&" if "?" in path else "?"
    response = app.get(f"{path}{joiner}min_turns=2147483648", headers=AUTH)
    assert response.status_code == 400 and response.json()["field"] == "min_turns"
