"""The analyst's read API: list, filter and page sessions, see one in full, read its transcript.

Served by the real app over a committed seed (``tests/seeded.py``), with a read-scope token.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, update
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import receiver_client
from tests.seeded import OTHER_APP_ID, SEEDS, seed_committed
from worker.db import make_sessionmaker, session_scope
from worker.models import Session
from worker.settings import Settings

READ_TOKEN = "test-read-token-9876543210"
READ = {"authorization": f"Bearer {READ_TOKEN}"}
WEATHER = next(s for s in SEEDS if s.key == "inst-en-weather")


@pytest.fixture
def api(settings: Settings, clean_engine: Engine, redis_client: redis.Redis) -> Iterator[TestClient]:
    """The app with an admin and a read token, over the committed seed."""
    seed_committed(make_sessionmaker(clean_engine), settings)
    with receiver_client(settings, read_token=READ_TOKEN) as client:
        yield client


def all_pages(api: TestClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(len(SEEDS) + 1):
        response = api.get(
            "/v1/sessions", params={**params, **({"cursor": cursor} if cursor else {})}, headers=READ
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"sessions", "next_cursor"}
        found += body["sessions"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("the pages never ended")


def test_a_read_token_lists_filtered_sessions_page_by_page(api: TestClient) -> None:
    """Filters and paging arrive as query parameters; every matching session comes once, newest first."""
    interrupted = sorted((s for s in SEEDS if s.interrupted), key=lambda s: s.start, reverse=True)
    found = all_pages(api, {"has_interruptions": "true", "limit": "1"})
    assert [s["id"] for s in found] == [s.session_id for s in interrupted]
    assert [s["interruptions"] for s in found] == [
        sum(r.played is not None for r in s.rounds) for s in interrupted
    ]

    other_app = all_pages(api, {"app_id": str(OTHER_APP_ID), "since": "2026-11-17", "until": "2026-11-19"})
    assert {s["id"] for s in other_app} == {s.session_id for s in SEEDS if s.app_id == OTHER_APP_ID}

    ended = sorted(
        (s for s in SEEDS if s.duration_seconds is not None), key=lambda s: (s.duration_seconds, s.session_id)
    )
    by_length = all_pages(api, {"sort": "duration", "order": "asc", "limit": "3", "state": "ended"})
    assert [s["id"] for s in by_length] == [s.session_id for s in ended]
    assert [s["duration_seconds"] for s in by_length] == [s.duration_seconds for s in ended]


def test_listing_by_agent_instance_id_still_works(api: TestClient) -> None:
    """?agent_instance_id= (what app back ends used before the filters) finds the instance's session."""
    response = api.get("/v1/sessions", params={"agent_instance_id": "inst-en-short"}, headers=READ)
    assert response.status_code == 200
    [found] = response.json()["sessions"]
    short = next(s for s in SEEDS if s.key == "inst-en-short")
    assert (found["id"], found["turns"], found["end_reason"]) == (short.session_id, 2, "user_absent")
    assert response.json()["next_cursor"] is None


BAD = [
    ({"since": "last week"}, "since"),
    ({"until": "2026-02-30"}, "until"),
    ({"app_id": "one"}, "app_id"),
    ({"min_turns": "many"}, "min_turns"),
    ({"has_interruptions": "perhaps"}, "has_interruptions"),
    ({"has_exceptions": "2"}, "has_exceptions"),
    ({"provider": "openai"}, "provider"),
    ({"sort": "name"}, "sort"),
    ({"order": "random"}, "order"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "garbage"}, "cursor"),
]


def test_bad_query_parameters_are_400_naming_the_parameter(api: TestClient) -> None:
    """A parameter that cannot be understood is a 400 invalid_query naming it, never a 500 or a guess."""
    for params, field in BAD:
        response = api.get("/v1/sessions", params=params, headers=READ)
        assert response.status_code == 400, params
        body = response.json()
        assert (body["error"], body["field"]) == ("invalid_query", field), params
        assert body["detail"]
    page = api.get("/v1/sessions", params={"sort": "duration", "limit": "2"}, headers=READ).json()
    other_order = api.get("/v1/sessions", params={"cursor": page["next_cursor"]}, headers=READ)
    assert (other_order.status_code, other_order.json()["field"]) == (400, "cursor")


def test_session_detail_shows_summary_timeline_and_round_latency(api: TestClient) -> None:
    """GET /v1/sessions/{id} adds to the session its summary, time-ordered events and each round's wait."""
    response = api.get(f"/v1/sessions/{WEATHER.session_id}", headers=READ)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == WEATHER.session_id
    assert [i["agent_instance_id"] for i in body["instances"]] == [WEATHER.key]
    assert "actions" in body and "exceptions" in body
    summary = body["summary"]
    assert (summary["turns"], summary["interruptions"], summary["duration_seconds"]) == (
        WEATHER.turns,
        1,
        WEATHER.duration_seconds,
    )
    times = [dt.datetime.fromisoformat(e["at"]) for e in body["timeline"]]
    assert times == sorted(times)
    assert (times[0], times[-1]) == (WEATHER.started_at, WEATHER.ended_at)
    assert {"at", "event", "round", "agent_instance_id", "detail"} == set(body["timeline"][0])
    assert [r["round"] for r in body["rounds"]] == [
        WEATHER.round_number(i) for i in range(len(WEATHER.rounds))
    ]
    assert [r["response_ms"] for r in body["rounds"]] == [
        pytest.approx(r.response_ms) for r in WEATHER.rounds
    ]
    by_instance = api.get(f"/v1/sessions/{WEATHER.key}", headers=READ)
    assert by_instance.json() == body


def test_detail_and_list_show_time_with_no_user_and_where_the_user_is(
    api: TestClient, clean_engine: Engine
) -> None:
    """The weather caller left the room (logout reason "2") and 25 s were billed without them: the
    detail says so with its presence, the list carries the figure; a session no room callback
    told about reads null in both, not 0 and not "present"."""
    out_since = WEATHER.start + dt.timedelta(seconds=4)
    with session_scope(make_sessionmaker(clean_engine)) as db:
        db.execute(
            update(Session)
            .where(Session.id == WEATHER.session_id)
            .values(
                user_present=False, user_absent_since=out_since, user_logout_reason="2", no_user_seconds=25.0
            )
        )
    body = api.get(f"/v1/sessions/{WEATHER.session_id}", headers=READ).json()
    assert (body["no_user_seconds"], body["summary"]["no_user_seconds"]) == (25.0, 25.0)
    presence = body["presence"]
    assert (presence["user_present"], presence["logout_reason"]) == (False, "2")
    assert dt.datetime.fromisoformat(presence["absent_since"]) == out_since

    other = next(s for s in SEEDS if s.key == "inst-en-short")
    body = api.get(f"/v1/sessions/{other.session_id}", headers=READ).json()
    assert body["no_user_seconds"] is None
    assert body["presence"] == {"user_present": None, "absent_since": None, "logout_reason": None}

    listed = {s["id"]: s["no_user_seconds"] for s in all_pages(api, {})}
    assert listed == {s.session_id: 25.0 if s is WEATHER else None for s in SEEDS}


def test_transcript_in_each_format(api: TestClient) -> None:
    """The transcript comes as JSON (default), text or WebVTT, chosen by ?format= or the Accept header."""
    path = f"/v1/sessions/{WEATHER.session_id}/transcript"
    as_json = api.get(path, headers=READ)
    assert as_json.headers["content-type"] == "application/json"
    body = as_json.json()
    assert dt.datetime.fromisoformat(body["started_at"]) == WEATHER.start
    first = WEATHER.rounds[0]
    assert body["turns"][0]["offset_seconds"] == (2000 + first.speech_ms + 80) / 1000
    assert body["turns"][1]["offset_seconds"] == (2000 + first.speech_ms + first.response_ms) / 1000

    text = api.get(path, params={"format": "text"}, headers=READ)
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    lines = text.text.splitlines()
    assert lines[0] == f"[00:00:03] user: {first.user}"
    assert len(lines) == WEATHER.turns
    assert lines[3].endswith(
        "[interrupted] (not played: the rain starts around noon and lasts into the evening.)"
    )

    vtt = api.get(path, headers={**READ, "accept": "text/vtt"})
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.text.startswith("WEBVTT\n\n")
    assert (
        len(re.findall(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$", vtt.text, re.M))
        == WEATHER.turns
    )
    assert "00:00:03.280 --> 00:00:03.900\n<v user>" + first.user in vtt.text

    plain = api.get(path, headers={**READ, "accept": "text/plain, */*"})
    assert plain.text == text.text
    assert api.get(path, params={"format": "vtt"}, headers={**READ, "accept": "text/plain"}).text == vtt.text

    bad = api.get(path, params={"format": "srt"}, headers=READ)
    assert (bad.status_code, bad.json()["error"], bad.json()["field"]) == (400, "invalid_query", "format")
    missing = api.get("/v1/sessions/nobody/transcript", params={"format": "vtt"}, headers=READ)
    assert missing.status_code == 404


def test_no_token_is_401_and_a_read_token_cannot_end_a_session(api: TestClient) -> None:
    """Without a token nothing is shown; the read token reads everything here but cannot act."""
    paths = [
        "/v1/sessions",
        f"/v1/sessions/{WEATHER.session_id}",
        f"/v1/sessions/{WEATHER.session_id}/transcript?format=text",
    ]
    for path in paths:
        denied = api.get(path)
        assert denied.status_code == 401
        assert WEATHER.session_id not in denied.text
        assert api.get(path, headers={"authorization": "Bearer not-the-token"}).status_code == 401
        assert api.get(path, headers=READ).status_code == 200
        assert api.get(path, headers={"authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    ended = api.delete(f"/v1/sessions/{WEATHER.session_id}", headers=READ)
    assert ended.status_code == 403
