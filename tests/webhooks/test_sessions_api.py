"""POST and DELETE /v1/sessions: what an app back end sees when it asks for, or ends, an agent session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session as DbSession
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import APP_ID
from worker.models import IdempotentRequest, Session
from worker.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
API_KEY = "sk-live-never-shown-77"


def zego_body(**params: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "AgentId": "concierge",
        "UserId": "user_1",
        "RTC": {
            "RoomId": "room_1",
            "AgentStreamId": "as_1",
            "AgentUserId": "agent_1",
            "UserStreamId": "us_1",
        },
        "LLM": {"Url": "https://llm.example/v1/chat/completions", "ApiKey": API_KEY, "Model": "m"},
    }
    base.update(params)
    return {"provider": "zego", "params": base}


@pytest.fixture
def api(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[TestClient]:
    from webhooks.app import create_app

    templates = tmp_path / "templates.toml"
    templates.write_text(
        '[templates.concierge]\nprovider = "zego"\n[templates.concierge.params]\nAgentId = "concierge"\n'
        'LLM = { Url = "https://llm.example/v1/chat/completions", ApiKey = "sk-from-template", Model = "m" }\n'
    )
    configured = settings.model_copy(
        update={
            "zego_server_secret": SecretStr("server-secret"),
            "secret_key": SecretStr(Fernet.generate_key().decode()),
            "templates_file": templates,
        }
    )
    with TestClient(create_app(configured)) as client:
        yield client


def test_a_session_request_is_stored_and_answered_at_once(api: TestClient, clean_engine: Engine) -> None:
    """202 with the new session in state starting; the ApiKey is stored sealed and shown as ***."""
    response = api.post("/v1/sessions", json=zego_body(), headers=AUTH)
    assert response.status_code == 202, response.text
    session = response.json()
    assert session["state"] == "starting" and session["provider"] == "zego"
    assert session["app_id"] == APP_ID and session["room_id"] == "room_1" and session["user_id"] == "user_1"
    assert session["spec"]["params"]["LLM"]["ApiKey"] == "***"
    assert API_KEY not in response.text
    with DbSession(clean_engine) as db:
        stored = db.get(Session, session["id"])
        assert stored is not None and API_KEY not in str(stored.spec)
    assert API_KEY not in api.get(f"/v1/sessions/{session['id']}", headers=AUTH).text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (
            {"LLM": {"Url": "https://x", "ApiKey": "k", "Model": "m", "Temperature": 2.5}},
            "params.LLM.Temperature",
        ),
        ({"UserId": "has space"}, "params.UserId"),
        (
            {"RTC": {"RoomId": "r", "AgentStreamId": "a", "AgentUserId": "x" * 33, "UserStreamId": "u"}},
            "params.RTC.AgentUserId",
        ),
        ({"TTS": {"Vendor": "Acme", "Params": {"app": {}}}}, "params.TTS.Vendor"),
        ({"AdvancedConfig": {"MaxIdleTime": 5}}, "params.AdvancedConfig.MaxIdleTime"),
    ],
)
def test_a_request_zego_would_refuse_is_refused_here_naming_the_field(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    """400 with the offending field named; no session is stored and nothing reaches ZEGO."""
    response = api.post("/v1/sessions", json=zego_body(**params), headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["field"] == field


LIVE_PARAMS: dict[str, Any] = {
    "AgentId": "anchor",
    "DigitalHuman": {"DigitalHumanId": "dh"},
    "RTC": {"RoomId": "news", "AgentStreamId": "anchor_stream", "AgentUserId": "anchor_1"},
    "CDN": {"Url": "rtmp://push.example.com/live/news"},
}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"RTC": {**LIVE_PARAMS["RTC"], "UserStreamId": "u"}}, "params.RTC.UserStreamId"),
        ({"UserId": "user_1"}, "params.UserId"),
        ({"CDN": {}}, "params.CDN.Url"),
        ({"AdvancedConfig": {"MaxIdleTime": 20}}, "params.AdvancedConfig.MaxIdleTime"),
        ({"LLM": {"Url": "https://x", "ApiKey": "k", "Model": "m"}}, "params.LLM"),
    ],
)
def test_a_live_digital_human_request_is_checked_by_its_own_rules(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    """zego_live_digital_human: no user, no user stream, a CDN Url, MaxIdleTime [30, 86400], TTS only."""
    body = {"provider": "zego_live_digital_human", "params": {**LIVE_PARAMS, **params}}
    response = api.post("/v1/sessions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    ok = api.post(
        "/v1/sessions", json={"provider": "zego_live_digital_human", "params": LIVE_PARAMS}, headers=AUTH
    )
    assert ok.status_code == 202, ok.text
    assert ok.json()["provider"] == "zego_live_digital_human"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "openai", "params": {}}, "provider"),
        ({"template": "nope"}, "template"),
        ({"provider": "zego", "app_id": 42, "params": {}}, "app_id"),
        (
            {"provider": "coze", "params": {"bot_id": "1", "config": {"prologue_delay_duration_ms": 9000}}},
            "params.config.prologue_delay_duration_ms",
        ),
        ({"provider": "zego", "params": {}, "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_request_says_which_part_is_wrong(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    """Unknown provider, template, app or field, or a Coze range broken: 400 naming it."""
    response = api.post("/v1/sessions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


def test_a_template_fills_in_what_the_request_leaves_out(api: TestClient) -> None:
    """Naming a template: its params are used, the request's override them, secrets still sealed."""
    body = {"template": "concierge", "params": zego_body()["params"] | {"LLM": {"Model": "m2"}}}
    del body["params"]["AgentId"]
    response = api.post("/v1/sessions", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    session = response.json()
    assert session["template"] == "concierge" and session["agent_id"] == "concierge"
    assert session["spec"]["params"]["LLM"] == {
        "Url": "https://llm.example/v1/chat/completions",
        "ApiKey": "***",
        "Model": "m2",
    }


def test_starting_sessions_needs_the_token(api: TestClient) -> None:
    """No bearer token, no session."""
    assert api.post("/v1/sessions", json=zego_body()).status_code == 401
    assert api.delete("/v1/sessions/whatever").status_code == 401


def test_ending_a_session_not_yet_started_cancels_it(api: TestClient) -> None:
    """DELETE before the vendor answered: ended at once as cancelled; a second DELETE is harmless."""
    session_id = api.post("/v1/sessions", json=zego_body(), headers=AUTH).json()["id"]
    first = api.delete(f"/v1/sessions/{session_id}", headers=AUTH)
    assert first.status_code == 200, first.text
    assert (first.json()["state"], first.json()["end_reason"]) == ("ended", "cancelled")
    again = api.delete(f"/v1/sessions/{session_id}", headers=AUTH)
    assert again.status_code == 200 and again.json()["end_reason"] == "cancelled"


def test_ending_an_unknown_session_is_404(api: TestClient) -> None:
    """DELETE of a session that does not exist says so."""
    assert api.delete("/v1/sessions/no-such-session", headers=AUTH).status_code == 404


def test_a_body_that_is_not_json_is_400(api: TestClient) -> None:
    """Garbage in: a clear 400, not a 500."""
    response = api.post("/v1/sessions", content=b"{nope", headers=AUTH)
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


def test_a_body_over_the_size_limit_is_413_and_nothing_is_started(
    api: TestClient, clean_engine: Engine
) -> None:
    """Admin bodies are bounded like callbacks (ROOMWARDEN_MAX_BODY_BYTES), declared length or not."""
    huge = zego_body(
        LLM={"Url": "https://llm.example/v1", "ApiKey": "k", "Model": "m", "SystemPrompt": "x" * 2_000_000}
    )
    response = api.post("/v1/sessions", json=huge, headers=AUTH)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:
        yield b'{"provider": "zego", "params": {"pad": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    response = api.post("/v1/sessions", content=chunks(), headers=AUTH)
    assert response.status_code == 413
    with DbSession(clean_engine) as db:
        assert db.scalar(select(func.count()).select_from(Session)) == 0


def test_a_body_nested_past_any_spec_is_400(api: TestClient) -> None:
    """A thousand levels of JSON is no session spec: 400, not a RecursionError further in."""
    body = b'{"provider": "zego", "params": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = api.post("/v1/sessions", content=body, headers=AUTH)
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


def test_credentials_in_free_form_params_are_sealed_and_shown_as_stars(
    api: TestClient, clean_engine: Engine
) -> None:
    """LLM.Params and ASR.Params pass through to other vendors: their keys, tokens and passwords
    are stored sealed and every reader sees ***; the rest of the spec stays readable."""
    body = zego_body(
        LLM={
            "Url": "https://llm.example/v1/chat/completions",
            "ApiKey": API_KEY,
            "Model": "m",
            "Params": {"api_key": "llm-params-key-99", "max_tokens": 256},
        },
        ASR={"Params": {"access_token": "asr-token-99", "hotwords": "refund"}},
    )
    response = api.post("/v1/sessions", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    session = response.json()
    shown = api.get(f"/v1/sessions/{session['id']}", headers=AUTH).json()["spec"]["params"]
    assert shown["LLM"]["Params"] == {"api_key": "***", "max_tokens": 256}
    assert shown["ASR"]["Params"] == {"access_token": "***", "hotwords": "refund"}
    with DbSession(clean_engine) as db:
        stored = db.get(Session, session["id"])
        assert stored is not None
        assert "llm-params-key-99" not in str(stored.spec) and "asr-token-99" not in str(stored.spec)


# --- Idempotency-Key: a client that retries a timed-out POST gets the first answer, not a twin.


def sessions_stored(engine: Engine) -> int:
    with DbSession(engine) as db:
        return int(db.scalar(select(func.count()).select_from(Session)) or 0)


def test_the_same_key_and_body_give_the_same_answer_and_one_session(
    api: TestClient, clean_engine: Engine
) -> None:
    headers = {**AUTH, "Idempotency-Key": "order-7781-start"}
    first = api.post("/v1/sessions", json=zego_body(), headers=headers)
    again = api.post("/v1/sessions", json=zego_body(), headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert sessions_stored(clean_engine) == 1


def test_the_same_key_with_another_body_is_422_and_starts_nothing(
    api: TestClient, clean_engine: Engine
) -> None:
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    assert api.post("/v1/sessions", json=zego_body(), headers=headers).status_code == 202
    other = api.post("/v1/sessions", json=zego_body(UserId="user_2"), headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert sessions_stored(clean_engine) == 1


def test_without_a_key_every_request_is_its_own(api: TestClient, clean_engine: Engine) -> None:
    for _ in range(2):
        assert api.post("/v1/sessions", json=zego_body(), headers=AUTH).status_code == 202
    assert sessions_stored(clean_engine) == 2


def test_retries_racing_each_other_still_make_one_session(api: TestClient, clean_engine: Engine) -> None:
    headers = {**AUTH, "Idempotency-Key": "racing"}
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: api.post("/v1/sessions", json=zego_body(), headers=headers), range(6))
        )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sessions_stored(clean_engine) == 1


def test_a_key_older_than_24_hours_starts_afresh(api: TestClient, clean_engine: Engine) -> None:
    headers = {**AUTH, "Idempotency-Key": "yesterday"}
    first = api.post("/v1/sessions", json=zego_body(), headers=headers).json()
    with DbSession(clean_engine) as db:
        yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
        db.execute(update(IdempotentRequest).values(created_at=yesterday))
        db.commit()
    later = api.post("/v1/sessions", json=zego_body(), headers=headers)
    assert later.status_code == 202 and later.json()["id"] != first["id"]
    assert sessions_stored(clean_engine) == 2


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"has space", "naïve".encode()])
def test_a_key_that_cannot_be_one_is_400(api: TestClient, clean_engine: Engine, key: bytes) -> None:
    response = api.post("/v1/sessions", json=zego_body(), headers={**AUTH, "Idempotency-Key": key})  # type: ignore[dict-item]
    assert response.status_code == 400 and response.json()["error"] == "invalid_idempotency_key"
    assert sessions_stored(clean_engine) == 0


def test_a_request_that_failed_validation_does_not_use_up_the_key(
    api: TestClient, clean_engine: Engine
) -> None:
    headers = {**AUTH, "Idempotency-Key": "fix-and-retry"}
    assert api.post("/v1/sessions", json={"provider": "zego"}, headers=headers).status_code == 400
    assert api.post("/v1/sessions", json=zego_body(), headers=headers).status_code == 202
