"""Live control over the API, in process on both databases: refusals before ZEGO, and a ZEGO
that cannot be reached, which is a 503 to retry and a failed action, never a lost request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as DbSession
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import receiver_client
from tests.worker.policies.rows import deleted, live_session
from worker.models import PolicyAction, Provider
from worker.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
READ_TOKEN = "analyst-read-token-4242"


@pytest.fixture
def api(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    unreachable = {"zego_api_url": "http://127.0.0.1:9", "control_timeout_seconds": 1.0}
    with receiver_client(settings, zego_server_secret="s" * 32, read_token=READ_TOKEN, **unreachable) as app:
        yield app


def _session(engine: Engine, *, ended: bool = False, provider: Provider = Provider.ZEGO) -> str:
    with DbSession(engine) as db:
        session, agent = live_session(db, provider=provider)
        if ended:
            deleted(db, agent, 0)
            session.state = "ended"
        db.commit()
        return session.id


def _actions(engine: Engine) -> list[PolicyAction]:
    with DbSession(engine) as db:
        return list(db.scalars(select(PolicyAction)))


def test_an_unreachable_zego_is_a_503_to_retry_and_a_failed_action(
    api: TestClient, clean_engine: Engine
) -> None:
    """The request reached roomwarden but not ZEGO: the caller is told to retry, the action says so."""
    session_id = _session(clean_engine)
    answer = api.post(f"/v1/sessions/{session_id}/say", json={"text": "Hello"}, headers=AUTH)
    assert answer.status_code == 503 and answer.json()["error"] == "vendor_unavailable", answer.text
    assert answer.headers["Retry-After"] == "2"
    [action] = _actions(clean_engine)
    assert (action.kind, action.state, action.policy) == ("say", "failed", "control")
    assert action.result == {"status": 503, "error": "vendor_unavailable"} and action.finished_at is not None
    timeline = api.get(f"/v1/sessions/{session_id}", headers=AUTH).json()["timeline"]
    assert [e["detail"]["state"] for e in timeline if e["event"] == "Control"] == ["failed"]


def test_refusals_before_zego_record_nothing(api: TestClient, clean_engine: Engine) -> None:
    """Not live, a Coze room, unknown, a read token, a bad body: clear answers, no action."""
    ended = _session(clean_engine, ended=True)
    coze = _session(clean_engine, provider=Provider.COZE)
    live = _session(clean_engine)
    for session_id, words in ((ended, "ended, not live"), (coze, "Coze room has no control API")):
        answer = api.post(f"/v1/sessions/{session_id}/interrupt", headers=AUTH)
        assert answer.status_code == 409 and words in answer.json()["detail"], answer.text
    assert api.get("/v1/sessions/nope/context", headers=AUTH).status_code == 404
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert api.post(f"/v1/sessions/{live}/messages", json={"text": "hi"}, headers=reader).status_code == 403
    assert (
        api.patch(f"/v1/sessions/{live}", json={"ASR": {"Vendor": "Tencent"}}, headers=reader).status_code
        == 403
    )
    bad = api.post(f"/v1/sessions/{live}/say", json={"text": ""}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["detail"] == "text is required: a non-empty string"
    patch = api.patch(f"/v1/sessions/{live}", json={"ASR": {"Vendor": "Nobody"}}, headers=AUTH)
    assert patch.status_code == 400 and patch.json()["field"].startswith("ASR.Vendor"), patch.text
    assert _actions(clean_engine) == []


def test_a_live_digital_human_takes_only_say(api: TestClient, clean_engine: Engine) -> None:
    """Interrupt, messages, context and PATCH on a zego_live_digital_human are a 409 naming the
    provider, before ZEGO and with no action; say goes on to ZEGO (unreachable here: 503)."""
    live = _session(clean_engine, provider=Provider.ZEGO_LIVE_DIGITAL_HUMAN)
    refusals = (
        api.post(f"/v1/sessions/{live}/interrupt", headers=AUTH),
        api.post(f"/v1/sessions/{live}/messages", json={"text": "hi"}, headers=AUTH),
        api.get(f"/v1/sessions/{live}/context", headers=AUTH),
        api.patch(f"/v1/sessions/{live}", json={"TTS": {"Vendor": "MiniMax", "Params": {"app": {"api_key": "k"}}}},
                  headers=AUTH),
    )  # fmt: skip
    for answer in refusals:
        assert answer.status_code == 409 and answer.json()["error"] == "not_supported", answer.text
        assert "zego_live_digital_human" in answer.json()["detail"]
    assert _actions(clean_engine) == []
    said = api.post(f"/v1/sessions/{live}/say", json={"text": "Good evening."}, headers=AUTH)
    assert said.status_code == 503, said.text
    assert [a.kind for a in _actions(clean_engine)] == ["say"]
