"""Registering the app's endpoints over the API: the secret shown once, the guard, deliveries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import receiver_client
from tests.webhooks.test_auth import READ_TOKEN, bearer
from worker.settings import Settings

ADMIN = bearer(API_TOKEN)


@pytest.fixture
def app(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    with receiver_client(
        settings,
        read_token=READ_TOKEN,
        endpoints_allow_private=True,
        secret_key=Fernet.generate_key().decode(),
    ) as client:
        yield client


def test_an_endpoint_is_created_with_its_secret_shown_once(app: TestClient) -> None:
    made = app.post(
        "/v1/endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["session.", "turn.completed"], "app_id": 7},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["id"].startswith("ep_") and body["secret"].startswith("whsec_")
    assert (body["events"], body["app_id"], body["enabled"]) == (["session.", "turn.completed"], 7, True)

    shown = app.get(f"/v1/endpoints/{body['id']}", headers=ADMIN).json()
    assert shown["secret"] == "***"
    assert app.get("/v1/endpoints", headers=ADMIN).json()["endpoints"] == [shown]

    rotated = app.post(f"/v1/endpoints/{body['id']}/rotate-secret", headers=ADMIN).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != body["secret"]
    assert rotated["previous_secret_until"] is not None


def test_changing_disabling_and_deleting(app: TestClient) -> None:
    endpoint = app.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/a"}, headers=ADMIN).json()
    path = f"/v1/endpoints/{endpoint['id']}"
    patched = app.patch(path, json={"enabled": False, "description": "paused"}, headers=ADMIN).json()
    assert (patched["enabled"], patched["description"], patched["disabled_reason"]) == (
        False,
        "paused",
        "disabled through the API",
    )
    assert app.post(f"{path}/test", headers=ADMIN).status_code == 409
    assert app.patch(path, json={"enabled": True}, headers=ADMIN).json()["disabled_reason"] is None
    assert app.delete(path, headers=ADMIN).status_code == 204
    assert app.get(path, headers=ADMIN).status_code == 404


def test_a_test_event_is_queued_and_listed_with_its_attempts(app: TestClient) -> None:
    endpoint = app.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/a"}, headers=ADMIN).json()
    path = f"/v1/endpoints/{endpoint['id']}"
    sent = app.post(f"{path}/test", headers=ADMIN)
    assert sent.status_code == 202, sent.text
    delivery = sent.json()
    assert (delivery["type"], delivery["state"], delivery["attempts"]) == ("endpoint.test", "pending", 0)
    assert delivery["event"]["data"]["endpoint_id"] == endpoint["id"]
    listed = app.get(f"{path}/deliveries", params={"state": "pending"}, headers=ADMIN).json()
    assert [d["id"] for d in listed["deliveries"]] == [delivery["id"]]
    shown = app.get(f"{path}/deliveries/{delivery['id']}", headers=ADMIN).json()
    assert shown["attempt_log"] == [] and shown["webhook_id"] == f"evt_{delivery['event_id']}"
    assert app.get(f"{path}/deliveries", params={"state": "lost"}, headers=ADMIN).status_code == 400
    replay = app.post(f"{path}/replay", json={"since": "2026-01-01T00:00:00Z"}, headers=ADMIN)
    assert replay.status_code == 202 and replay.json()["replayed"] == 0  # tests are not broadcast


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": "gopher://x"}, "url"),
        ({"url": "http://127.0.0.1:9/a", "events": ["session.exploded"]}, "events"),
        ({"url": "http://127.0.0.1:9/a", "events": "session."}, "events"),
        ({"url": "http://127.0.0.1:9/a", "app_id": "7"}, "app_id"),
        ({"url": "http://127.0.0.1:9/a", "colour": "red"}, "colour"),
        ({"url": "http://127.0.0.1:9/a", "description": "x" * 513}, "description"),
    ],
)
def test_bad_endpoints_get_a_400_naming_the_field(
    app: TestClient, body: dict[str, object], field: str
) -> None:
    refused = app.post("/v1/endpoints", json=body, headers=ADMIN)
    assert refused.status_code == 400
    assert (refused.json()["error"], refused.json()["field"]) == ("invalid_request", field)
    assert app.get("/v1/endpoints", headers=ADMIN).json()["endpoints"] == []


def test_a_private_address_is_refused_unless_allowed(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    with receiver_client(settings) as app:
        refused = app.post("/v1/endpoints", json={"url": "http://169.254.169.254/latest"}, headers=ADMIN)
        assert refused.status_code == 400 and "link-local" in refused.json()["detail"]


def test_endpoints_are_admin_only(app: TestClient) -> None:
    assert app.get("/v1/endpoints").status_code == 401
    assert app.get("/v1/endpoints", headers=bearer(READ_TOKEN)).status_code == 403
    assert (
        app.post(
            "/v1/endpoints", json={"url": "http://127.0.0.1:9/a"}, headers=bearer(READ_TOKEN)
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "since"), ({"since": "yesterday"}, "since"), ({"since": "2026-01-01", "types": ["nope"]}, "types")],
)
def test_a_bad_replay_window_is_refused(app: TestClient, body: dict[str, object], field: str) -> None:
    endpoint = app.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/a"}, headers=ADMIN).json()
    refused = app.post(f"/v1/endpoints/{endpoint['id']}/replay", json=body, headers=ADMIN)
    assert refused.status_code == 400 and refused.json()["field"] == field


def test_an_endpoint_created_twice_under_one_key_is_one_endpoint(app: TestClient) -> None:
    """A retried create with its Idempotency-Key answers the first endpoint, secret included."""
    headers = {**ADMIN, "Idempotency-Key": "hook-1"}
    body = {"url": "http://127.0.0.1:9/a"}
    first = app.post("/v1/endpoints", json=body, headers=headers)
    again = app.post("/v1/endpoints", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len(app.get("/v1/endpoints", headers=ADMIN).json()["endpoints"]) == 1


@pytest.mark.parametrize("delivery_id", ["9223372036854775808", "99999999999999999999999", "-1", "1e3", "٣"])
def test_a_delivery_id_no_row_can_have_is_404_not_500(app: TestClient, delivery_id: str) -> None:
    """Found by schemathesis: 2**63 reached Postgres as a bigint and failed there."""
    endpoint = app.post("/v1/endpoints", json={"url": "http://127.0.0.1:9/a"}, headers=ADMIN).json()
    response = app.get(f"/v1/endpoints/{endpoint['id']}/deliveries/{delivery_id}", headers=ADMIN)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
