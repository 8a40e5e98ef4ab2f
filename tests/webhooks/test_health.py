"""Liveness and readiness as a load balancer or an orchestrator sees them."""

from __future__ import annotations

import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.factories import receiver_client
from worker.settings import Settings

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"


def test_healthz_is_ok(client: TestClient) -> None:
    """/healthz answers 200 ok while the process is up."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_with_database_and_broker_up(client: TestClient) -> None:
    """/readyz answers 200 and names both checks ok when the database and Redis are reachable."""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_names_the_database_when_it_is_unreachable(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """With the database down /readyz is 503 and says it is the database; /healthz stays 200."""
    with receiver_client(settings, database_url=DEAD_DATABASE) as down:
        ready = down.get("/readyz")
        alive = down.get("/healthz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "OperationalError"
    assert body["checks"]["broker"] == "ok"
    assert alive.status_code == 200


def test_health_endpoints_need_no_token(client: TestClient) -> None:
    """Probes work without the API's bearer token, and only answer GET."""
    assert client.get("/healthz", headers={"authorization": "Bearer wrong"}).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.post("/healthz").status_code == 405
