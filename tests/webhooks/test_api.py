"""The read API as an app back end uses it: sessions and transcripts behind a bearer token."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session as DbSession
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import APP_ID, EVENT_DATA, INSTANCE, Signer, apply_pending, encode_body, receiver_client
from worker.sessions.lifecycle import session_id_for
from worker.settings import Settings

AUTH = {"authorization": f"Bearer {API_TOKEN}"}
SESSION_ID = session_id_for(APP_ID, INSTANCE)


def deliver(client: TestClient, payloads: list[dict[str, Any]]) -> None:
    """Post callbacks to the receiver, as ZEGO would."""
    for payload in payloads:
        response = client.post("/callbacks/zego", content=encode_body(payload))
        assert response.json() == {"status": "stored"}, response.text


def apply(engine: Engine, settings: Settings, instance: str = INSTANCE) -> None:
    """Apply what the receiver stored, as the worker would, and commit."""
    with DbSession(bind=engine) as db:
        assert apply_pending(db, settings, instance=instance) > 0
        db.commit()


def a_conversation(signer: Signer) -> list[dict[str, Any]]:
    """Created, two user turns (the second reply cut off by the user), an LLM error, then deleted."""
    return [
        signer.callback("AgentInstanceCreated", {"CreatedTimestamp": 1_745_000_000_000}),
        signer.callback("ASRResult", {"UserId": "user_1", "Round": 10, "Text": "What's the weather like?"}),
        signer.callback("LLMResult", {"Round": 10, "Text": "It is sunny today."}),
        signer.callback("LLMResult", {"Round": 10, "Text": "Take a hat."}),
        signer.callback("ASRResult", {"UserId": "user_1", "Round": 20, "Text": "Tell me a long story"}),
        signer.callback("LLMResult", {"Round": 20, "Text": "Once upon a time, there was a king."}),
        signer.callback("Interrupted", {"Round": 20, "Reason": 1, "PlayedText": "Once upon a time"}),
        signer.callback("Exception", {"Code": 2203, "Message": "LLM authentication failed", "Round": 30}),
        signer.callback("AgentInstanceDeleted"),
    ]


@pytest.fixture
def conversation(client: TestClient, clean_engine: Engine, settings: Settings, signer: Signer) -> TestClient:
    """The receiver's client, after a whole conversation was delivered and applied."""
    deliver(client, a_conversation(signer))
    apply(clean_engine, settings)
    return client


def test_session_shows_state_end_reason_instances_and_exceptions(conversation: TestClient) -> None:
    """GET /v1/sessions/{id} shows how the session ended, its instance with latency, and its errors.

    The LLM authentication failure (2203) made the policy end the session and flag it, so that,
    not the user's absence that deleted the agent first, is its end reason.
    """
    response = conversation.get(f"/v1/sessions/{SESSION_ID}", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    view = response.json()
    assert view["id"] == SESSION_ID
    assert view["app_id"] == APP_ID
    assert (view["state"], view["end_reason"], view["end_code"]) == ("ended", "llm_auth_failed", 1202)
    assert view["flag"] == "llm_auth_failed"
    assert (view["room_id"], view["user_id"], view["agent_id"], view["agent_name"]) == (
        "room_1",
        "user_1",
        "weather-bot",
        "Weather bot",
    )
    assert view["started_at"].startswith("2025-04-18")
    assert view["ended_at"] is not None
    [instance] = view["instances"]
    assert instance["agent_instance_id"] == INSTANCE
    assert instance["agent_user_id"] == "agent_1"
    assert instance["delete_code"] == 1202
    assert instance["latency"] == EVENT_DATA["AgentInstanceDeleted"]["LatencyData"]
    assert instance["deleted_at"].startswith("2025-04-18")
    assert [(e["code"], e["family"], e["message"], e["round"]) for e in view["exceptions"]] == [
        (2203, "llm", "LLM authentication failed", 30)
    ]
    assert view["exceptions"][0]["agent_instance_id"] == INSTANCE


def test_session_can_be_looked_up_by_agent_instance_id(conversation: TestClient) -> None:
    """The AgentInstanceId ZEGO returned works in place of the session id."""
    by_instance = conversation.get(f"/v1/sessions/{INSTANCE}", headers=AUTH)
    by_id = conversation.get(f"/v1/sessions/{SESSION_ID}", headers=AUTH)
    assert by_instance.status_code == 200
    assert by_instance.json() == by_id.json()
    assert by_instance.json()["id"] == SESSION_ID


def test_transcript_lists_turns_in_order_with_interruptions(conversation: TestClient) -> None:
    """The transcript alternates user and agent by Round, joins sentences, and marks the cut-off reply."""
    response = conversation.get(f"/v1/sessions/{SESSION_ID}/transcript", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == SESSION_ID
    turns = body["turns"]
    assert [(t["round"], t["speaker"], t["text"]) for t in turns] == [
        (10, "user", "What's the weather like?"),
        (10, "agent", "It is sunny today. Take a hat."),
        (20, "user", "Tell me a long story"),
        (20, "agent", "Once upon a time, there was a king."),
    ]
    assert [t["interrupted"] for t in turns] == [False, False, False, True]
    assert turns[3]["played_text"] == "Once upon a time"
    assert turns[3]["interrupt_reason"] == 1
    assert turns[1]["played_text"] is None
    assert turns[0]["user_id"] == "user_1"
    assert {t["agent_instance_id"] for t in turns} == {INSTANCE}
    assert not any(t["new_instance"] for t in turns)


def test_transcript_by_agent_instance_id(conversation: TestClient) -> None:
    """The transcript is also found through the AgentInstanceId."""
    response = conversation.get(f"/v1/sessions/{INSTANCE}/transcript", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["session_id"] == SESSION_ID
    assert len(response.json()["turns"]) == 4


def test_sessions_can_be_listed_by_agent_instance_id(conversation: TestClient) -> None:
    """GET /v1/sessions?agent_instance_id=... finds the session the instance belongs to."""
    response = conversation.get("/v1/sessions", params={"agent_instance_id": INSTANCE}, headers=AUTH)
    assert response.status_code == 200
    [found] = response.json()["sessions"]
    assert found["id"] == SESSION_ID
    assert found["state"] == "ended"


def test_listing_an_unknown_instance_is_empty(conversation: TestClient) -> None:
    """Listing by an AgentInstanceId nobody has seen gives an empty list, not an error."""
    response = conversation.get("/v1/sessions", params={"agent_instance_id": "no-such"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"sessions": [], "next_cursor": None}


def test_sessions_of_other_instances_are_kept_apart(
    client: TestClient, clean_engine: Engine, settings: Settings, signer: Signer
) -> None:
    """Two agent instances make two sessions; each lookup returns only its own."""
    other = "2000000000000000001"
    deliver(
        client,
        [signer.callback("AgentInstanceCreated"), signer.callback("AgentInstanceCreated", instance=other)],
    )
    apply(clean_engine, settings)
    apply(clean_engine, settings, instance=other)
    mine = client.get(f"/v1/sessions/{INSTANCE}", headers=AUTH).json()
    theirs = client.get(f"/v1/sessions/{other}", headers=AUTH).json()
    assert mine["id"] == SESSION_ID
    assert theirs["id"] == session_id_for(APP_ID, other)
    assert [i["agent_instance_id"] for i in theirs["instances"]] == [other]
    assert mine["state"] == theirs["state"] == "active"


def test_unknown_session_is_not_found(client: TestClient) -> None:
    """An id that is neither a session nor an agent instance is 404, for the session and its transcript."""
    for path in ("/v1/sessions/does-not-exist", "/v1/sessions/does-not-exist/transcript"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_listing_without_a_filter_lists_every_session(conversation: TestClient) -> None:
    """Without filters GET /v1/sessions lists every session, newest first, a page at a time."""
    for params in ({}, {"agent_instance_id": ""}):
        response = conversation.get("/v1/sessions", params=params, headers=AUTH)
        assert response.status_code == 200
        assert [s["id"] for s in response.json()["sessions"]] == [SESSION_ID]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {API_TOKEN}x"},
        {"authorization": f"Basic {API_TOKEN}"},
        {"authorization": API_TOKEN},
        {"authorization": "Bearer "},
    ],
    ids=["none", "wrong", "longer", "basic-scheme", "no-scheme", "empty"],
)
def test_requests_without_the_right_token_are_unauthorized(
    conversation: TestClient, headers: dict[str, str]
) -> None:
    """Without exactly the configured bearer token every API route is 401 and shows no data."""
    for path in (f"/v1/sessions/{SESSION_ID}", f"/v1/sessions/{SESSION_ID}/transcript", "/v1/sessions"):
        response = conversation.get(path, params={"agent_instance_id": INSTANCE}, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized", "detail": "a valid bearer token is required"}


def test_bearer_scheme_is_case_insensitive(conversation: TestClient) -> None:
    """'bearer' in lower case is the same scheme."""
    response = conversation.get(
        f"/v1/sessions/{SESSION_ID}", headers={"authorization": f"bearer {API_TOKEN}"}
    )
    assert response.status_code == 200


def test_api_is_disabled_without_a_token(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """With no API token configured every API route answers 503 api_disabled, whatever is sent.

    Only in the embedded default: production refuses to start so (tests/webhooks/test_production.py)."""
    if settings.production:
        pytest.skip("production (Postgres) refuses to start without a token")
    with receiver_client(settings, api_token=None) as app:
        for path in (f"/v1/sessions/{SESSION_ID}", f"/v1/sessions/{SESSION_ID}/transcript", "/v1/sessions"):
            response = app.get(path, headers=AUTH)
            assert response.status_code == 503
            assert response.json()["error"] == "api_disabled"
        assert app.get("/healthz").status_code == 200
