"""Policy actions over the API: listing them, why a session ended, what a policy would do, running one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as DbSession
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.worker.policies.rows import deleted, live_session
from worker.db import utcnow
from worker.models import PolicyAction
from worker.policies import decisions
from worker.policies.config import PolicyError, load
from worker.sessions import lifecycle
from worker.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
POLICIES = """
[defaults.idle]
after_seconds = 300
[templates.careful]
dry_run = true
"""


def _app(settings: Settings, policies: str, tmp_path: Path) -> TestClient:
    from webhooks.app import create_app

    path = tmp_path / "policies.toml"
    path.write_text(policies)
    return TestClient(create_app(settings.model_copy(update={"policies_file": path})))


@pytest.fixture
def api(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[TestClient]:
    with _app(settings, POLICIES, tmp_path) as client:
        yield client


def _gave_up(engine: Engine) -> tuple[str, str]:
    """A session whose third recreation failed: END gave_up recorded, its instance deleted (1205)."""
    with DbSession(engine) as db:
        session, agent = live_session(db)
        decision = decisions.on_deleted(
            load(None).defaults, session, agent, 1205, recent_recreations=3, others_live=False
        )
        assert decision is not None
        decisions.record(db, session, decision, now=utcnow())
        deleted(db, agent, 1205)
        lifecycle.refresh(db, session, learned="policy")
        db.commit()
        return session.id, agent.agent_instance_id


def _live(engine: Engine, **kwargs: object) -> tuple[str, str]:
    with DbSession(engine) as db:
        session, agent = live_session(db, **kwargs)  # type: ignore[arg-type]
        db.commit()
        return session.id, agent.agent_instance_id


def _actions(engine: Engine) -> int:
    with DbSession(engine) as db:
        return int(db.scalar(select(func.count()).select_from(PolicyAction)) or 0)


def test_why_names_the_policy_and_action_that_ended_a_session(api: TestClient, clean_engine: Engine) -> None:
    """A session given up after repeated faults: /why says gave_up, the action, and the 1205 codes."""
    session_id, instance = _gave_up(clean_engine)
    answer = api.get(f"/v1/sessions/{instance}/why", headers=AUTH)
    assert answer.status_code == 200, answer.text
    told = answer.json()
    assert (told["state"], told["end_reason"], told["policy_reason"]) == ("ended", "gave_up", "gave_up")
    assert "on_deleted policy ended it: gave_up" in told["because"]
    assert told["deciding_action"]["action"] == "end" and told["deciding_action"]["inputs"]["code"] == 1205
    assert told["instances"][0]["delete_code"] == 1205
    assert told["instances"][0]["delete_reason"] == "disconnected"
    described = api.get(f"/v1/sessions/{session_id}", headers=AUTH).json()
    assert described["policy_reason"] == "gave_up" and described["flag"] is None
    assert described["recovering_since"] is None and described["queued_at"] is None
    assert [(a["action"], a["reason"]) for a in described["actions"]] == [("end", "gave_up")]


def test_actions_are_listed_newest_first_with_filters_and_a_cursor(
    api: TestClient, clean_engine: Engine
) -> None:
    """Filters by session, state, action and reason; limit pages with next_before."""
    gave_up_id, _ = _gave_up(clean_engine)
    live_id, _ = _live(clean_engine)
    assert (
        api.post(f"/v1/sessions/{live_id}/policy/run", json={"action": "recycle"}, headers=AUTH).status_code
        == 202
    )
    everything = api.get("/v1/actions", headers=AUTH).json()
    assert [(a["session_id"], a["action"]) for a in everything["actions"]] == [
        (live_id, "recycle"),
        (gave_up_id, "end"),
    ]
    assert everything["next_before"] is None
    assert len(api.get("/v1/actions?action=end&reason=gave_up", headers=AUTH).json()["actions"]) == 1
    assert api.get("/v1/actions?state=dry_run", headers=AUTH).json()["actions"] == []
    assert len(api.get(f"/v1/actions?session_id={live_id}", headers=AUTH).json()["actions"]) == 1
    first = api.get("/v1/actions?limit=1", headers=AUTH).json()
    assert first["actions"][0]["action"] == "recycle" and first["next_before"] is not None
    second = api.get(f"/v1/actions?limit=1&before={first['next_before']}", headers=AUTH).json()
    assert second["actions"][0]["action"] == "end"
    later = (utcnow() + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert api.get(f"/v1/actions?since={later}", headers=AUTH).json()["actions"] == []
    of_session = api.get(f"/v1/sessions/{gave_up_id}/actions", headers=AUTH).json()
    assert of_session["session_id"] == gave_up_id and len(of_session["actions"]) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=finished", "state"),
        ("action=explode", "action"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
    ],
)
def test_a_bad_filter_is_400_naming_it(api: TestClient, query: str, field: str) -> None:
    """An unknown state or action, a malformed time or limit: 400 with the parameter named."""
    answer = api.get(f"/v1/actions?{query}", headers=AUTH)
    assert answer.status_code == 400 and answer.json()["field"] == field


def test_explain_shows_what_each_rule_would_decide_now_and_records_nothing(
    api: TestClient, clean_engine: Engine
) -> None:
    """A user silent past idle.after_seconds: explain shows a recycle; 1205 would recreate; no rows."""
    session_id, instance = _live(clean_engine, started_ago=1000.0, quiet_for=400.0)
    answer = api.get(f"/v1/sessions/{session_id}/policy", headers=AUTH)
    assert answer.status_code == 200, answer.text
    told = answer.json()
    assert told["policy"]["idle"]["after_seconds"] == 300 and told["agent_instance_id"] == instance
    assert told["rules"]["idle"]["action"] == "recycle" and told["rules"]["idle"]["policy"] == "idle"
    assert told["rules"]["on_deleted"]["1205"]["action"] == "recreate"
    assert told["rules"]["on_deleted"]["1202"]["action"] == "close_room"
    assert told["rules"]["on_exception"]["2203"]["reason"] == "llm_auth_failed"
    assert told["rules"]["on_exception"]["llm (2201)"].startswith("nothing: 1 of 5 llm exceptions")
    assert told["rules"]["max_length"].startswith("nothing: started ")
    assert _actions(clean_engine) == 0
    fresh_id, _ = _live(clean_engine, quiet_for=10.0)
    fresh = api.get(f"/v1/sessions/{fresh_id}/policy", headers=AUTH).json()
    assert fresh["rules"]["idle"].startswith("nothing: quiet since")


def test_explain_says_when_roomwarden_cannot_hear_the_user(api: TestClient, clean_engine: Engine) -> None:
    """A session whose callbacks carry no speech is never judged idle, and explain says why."""
    session_id, _ = _live(clean_engine, origin="callback", started_ago=10.0, quiet_for=None)
    told = api.get(f"/v1/sessions/{session_id}/policy", headers=AUTH).json()
    assert told["rules"]["idle"].startswith("nothing: roomwarden does not hear this user's speech")


def test_running_a_policy_by_hand_records_an_action_and_queues_it(
    api: TestClient, clean_engine: Engine
) -> None:
    """POST policy/run end: 202, a pending manual END; a second one while it is pending is 409."""
    session_id, instance = _live(clean_engine)
    answer = api.post(f"/v1/sessions/{session_id}/policy/run", json={"action": "end"}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    action = answer.json()
    assert (action["action"], action["reason"], action["policy"], action["state"]) == (
        "end",
        "manual",
        "manual",
        "pending",
    )
    assert action["agent_instance_id"] == instance
    assert api.get(f"/v1/sessions/{session_id}", headers=AUTH).json()["policy_reason"] == "manual"
    again = api.post(f"/v1/sessions/{session_id}/policy/run", json={"action": "end"}, headers=AUTH)
    assert again.status_code == 409 and "already under way" in again.json()["detail"]


def test_running_by_hand_under_a_dry_run_policy_only_records(api: TestClient, clean_engine: Engine) -> None:
    """A template with dry_run: the action is stored as dry_run (200), and the session is untouched."""
    session_id, _ = _live(clean_engine, template="careful")
    answer = api.post(f"/v1/sessions/{session_id}/policy/run", json={"action": "recreate"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "dry_run" and answer.json()["dry_run"] is True
    session = api.get(f"/v1/sessions/{session_id}", headers=AUTH).json()
    assert (session["state"], session["recovering_since"], session["policy_reason"]) == ("active", None, None)


def test_running_by_hand_what_cannot_apply_is_refused(api: TestClient, clean_engine: Engine) -> None:
    """Unknown action: 400; ending an ended session: 409 saying why; an unknown session: 404."""
    session_id, _ = _gave_up(clean_engine)
    url = f"/v1/sessions/{session_id}/policy/run"
    assert api.post(url, json={"action": "explode"}, headers=AUTH).json()["field"] == "action"
    refused = api.post(url, json={"action": "recycle"}, headers=AUTH)
    assert refused.status_code == 409 and "no live agent" in refused.json()["detail"]
    assert api.post("/v1/sessions/nope/policy/run", json={"action": "end"}, headers=AUTH).status_code == 404
    assert api.post(url, content=b"{", headers=AUTH).status_code == 400


def test_the_policy_routes_need_the_token(api: TestClient) -> None:
    """No bearer token, no actions, no explanations, no manual runs."""
    assert api.get("/v1/actions").status_code == 401
    assert api.get("/v1/sessions/x/why").status_code == 401
    assert api.get("/v1/sessions/x/policy").status_code == 401
    assert api.post("/v1/sessions/x/policy/run", json={"action": "end"}).status_code == 401


def test_a_second_coze_room_for_the_same_user_and_bot_is_refused(api: TestClient) -> None:
    """Coze bills each room: while one is live for this uid and bot, a second POST is 409 naming it."""
    body = {"provider": "coze", "params": {"bot_id": "7348293334459310001", "uid": "user_1"}}
    first = api.post("/v1/sessions", json=body, headers=AUTH)
    assert first.status_code == 202, first.text
    second = api.post("/v1/sessions", json=body, headers=AUTH)
    assert second.status_code == 409, second.text
    assert second.json()["error"] == "duplicate_room" and second.json()["session_id"] == first.json()["id"]
    other_user = {"provider": "coze", "params": {"bot_id": "7348293334459310001", "uid": "user_2"}}
    assert api.post("/v1/sessions", json=other_user, headers=AUTH).status_code == 202


def test_an_invalid_policy_file_stops_the_start_up_naming_the_key(
    settings: Settings, clean_engine: Engine, tmp_path: Path
) -> None:
    """A wrong value in the policy file: the app does not start, and the error names the key."""
    with (
        pytest.raises(PolicyError, match=r"templates\.concierge\.idle\.after_seconds"),
        _app(settings, '[templates.concierge.idle]\nafter_seconds = "soon"\n', tmp_path),
    ):
        pass
