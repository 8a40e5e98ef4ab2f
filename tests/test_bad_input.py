"""Bad input, as an attacker or a careless client sends it, against a real deployment.

A receiver, a Celery worker and beat run as processes, on Postgres (with Redis) and on the
embedded SQLite (with its SQLite broker). Each class of bad input is sent between the callbacks
of a valid conversation; each gets its answer, and the conversation is applied in full anyway:
- what ZEGO documents as impossible (lengths, ranges, types, nesting) is refused with 400;
- what is merely odd (NUL, terminal escapes) is stored, answered 200, and applied;
- bad analyst queries are 400 ``invalid_query`` naming the field, exports included, and intake
  goes on meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session as DbSession

from tests.conftest import API_TOKEN
from tests.factories import APP_ID, INSTANCE, Signer
from tests.processes import RedisServer, Stack, stack_env, wait_until
from tests.worker.conversation import conversation
from worker.models import InboxCallback

pytestmark = pytest.mark.slow

ODD_INSTANCE = "1912122918452641999"
BAD_INSTANCE = "1912122918452641888"
NESTING = "__nested__"


def refused_callbacks(signer: Signer) -> dict[str, tuple[bytes, str]]:
    """Each documented impossibility, signed as ZEGO would sign it, and the field its 400 must name."""

    def cb(event: str, data: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
        return signer.callback(event, data, instance=BAD_INSTANCE, **top)

    asr = {"UserId": "user_1", "Round": 7, "Text": "hi"}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "room id over 128 characters": (cb("ASRResult", asr, RoomId="r" * 129), "RoomId"),
        "user id over 64 characters": (cb("ASRResult", {**asr, "UserId": "u" * 65}), "UserId"),
        "status over 16 characters": (cb("AgentInstanceStatus", {"Status": "S" * 17, "Round": 7}), "Status"),
        "round of 2^63": (cb("LLMResult", {"Round": 2**63, "Text": "x"}), "Round"),
        "exception code of 2^31": (cb("Exception", {"Code": 2**31, "Message": "m", "Round": 7}), "Code"),
        "deleted timestamp 1e20": (
            cb("AgentInstanceDeleted", {"Code": 1000, "DeletedTimestamp": 1e20}),
            "DeletedTimestamp",
        ),
        "created timestamp -1e15": (
            cb("AgentInstanceCreated", {"CreatedTimestamp": -1e15}),
            "CreatedTimestamp",
        ),
        "fractional sequence": (cb("LLMResult", {"Round": 7, "Text": "x"}, Sequence=1.5), "Sequence"),
        "boolean sequence": (cb("LLMResult", {"Round": 7, "Text": "x"}, Sequence=True), "Sequence"),
        "app id as a float": (cb("LLMResult", {"Round": 7, "Text": "x"}, AppId=float(APP_ID)), "AppId"),
        "app id as a JSON string": (cb("LLMResult", {"Round": 7, "Text": "x"}, AppId=str(APP_ID)), "AppId"),
        "nesting 300 levels deep": (
            cb("AgentInstanceMetaInfo", {"Round": 7, "MetaInfo": NESTING}),
            "",
        ),
    }
    bodies: dict[str, tuple[bytes, str]] = {}
    for name, (payload, field) in cases.items():
        body = orjson.dumps(payload)
        body = body.replace(f'"{NESTING}"'.encode(), b'{"a":' * 300 + b"1" + b"}" * 300)
        bodies[name] = (body, field)
    return bodies


def odd_callbacks(signer: Signer) -> list[dict[str, Any]]:
    """Odd but possible: NUL and an ANSI escape in the text, NUL in the room and user ids."""
    now = int(time.time() * 1000)
    return [
        signer.callback("AgentInstanceCreated", {"CreatedTimestamp": now - 5000}, instance=ODD_INSTANCE),
        signer.callback(
            "ASRResult",
            {"UserId": "user\x00_1", "Round": 11, "Text": "nul\x00inside \x1b[31mred"},
            instance=ODD_INSTANCE,
            RoomId="room\x00_1",
        ),
        signer.callback("LLMResult", {"Round": 11, "Text": "answer\x00too"}, instance=ODD_INSTANCE),
    ]


@pytest.fixture
def stack(
    tmp_path: Path, database_url: str, clean_engine: Engine, private_redis: RedisServer
) -> Iterator[Stack]:
    broker = (
        private_redis.url
        if database_url.startswith("postgresql")
        else f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    )
    stack = Stack(tmp_path, stack_env(database_url, broker))
    stack.start_receiver()
    stack.worker.start()
    stack.beat.start()
    yield stack
    stack.stop()


def applied(engine: Engine, instance: str) -> tuple[int, int]:
    """(callbacks of ``instance`` done, callbacks of ``instance`` in any other state)."""
    with DbSession(engine) as db:
        rows = db.execute(
            select(InboxCallback.state, func.count())
            .where(InboxCallback.agent_instance_id == instance)
            .group_by(InboxCallback.state)
        ).all()
    states = {state: int(n) for state, n in rows}
    done = states.pop("done", 0)
    return done, sum(states.values())


def test_bad_callbacks_are_refused_odd_ones_kept_and_valid_traffic_applied(
    stack: Stack, clean_engine: Engine
) -> None:
    signer = Signer()
    valid = conversation(Signer())
    refused = refused_callbacks(signer)
    odd = odd_callbacks(signer)
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        bad = iter(refused.items())
        for index, callback in enumerate(valid):
            assert client.post("/callbacks/zego", json=callback).status_code == 200
            name_body = next(bad, None)
            if name_body is not None:
                name, (body, _field) = name_body
                # A connection of its own: a crash must show as this answer, not the next one's.
                answers[name] = httpx.post(
                    f"{stack.url}/callbacks/zego",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=10,
                )
            if index < len(odd):
                answers[f"odd {index}"] = client.post("/callbacks/zego", json=odd[index])

    # Bigger than any callback: refused by its size, before anything is parsed.
    oversized = signer.callback("ASRResult", {"UserId": "u", "Round": 1, "Text": "x" * 2_000_000})
    answers["oversized"] = httpx.post(f"{stack.url}/callbacks/zego", json=oversized, timeout=10)
    assert answers["oversized"].status_code == 413
    # A forged body stored first under a genuine dedup key; the genuine one, re-signed, is kept too.
    forged = signer.callback("LLMResult", {"Round": 5, "Text": "forged"}, instance=ODD_INSTANCE, sequence=900)
    genuine = signer.resign({**forged, "Data": {"Round": 5, "Text": "genuine"}})
    assert httpx.post(f"{stack.url}/callbacks/zego", json=forged).json() == {"status": "stored"}
    assert httpx.post(f"{stack.url}/callbacks/zego", json=genuine).json() == {"status": "conflict"}

    for name, (_body, field) in refused.items():
        response = answers[name]
        assert response.status_code == 400, (name, response.status_code, response.text)
        assert field in response.json()["detail"], (name, response.json())
    for index in range(len(odd)):
        response = answers[f"odd {index}"]
        assert response.status_code == 200, (index, response.text)
        assert response.json()["status"] == "stored"

    wait_until(lambda: applied(clean_engine, INSTANCE) == (len(valid), 0), 60, "the conversation applied")
    # The odd ones and the forgery applied; the conflicting genuine one kept aside, not applied.
    wait_until(
        lambda: applied(clean_engine, ODD_INSTANCE) == (len(odd) + 1, 1), 60, "the odd callbacks applied"
    )
    assert applied(clean_engine, BAD_INSTANCE) == (0, 0), "a refused callback was stored"

    api = httpx.Client(base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"})
    with api:
        turns = api.get(f"/v1/sessions/{INSTANCE}/transcript").json()["turns"]
        assert len(turns) == 6
        odd_turns = [t["text"] for t in api.get(f"/v1/sessions/{ODD_INSTANCE}/transcript").json()["turns"]]
        session = api.get(f"/v1/sessions/{ODD_INSTANCE}").json()
    assert len(odd_turns) == 3
    forgery, user_text, agent_text = odd_turns  # Round 5 before Round 11
    assert forgery == "forged"
    assert "\x00" not in user_text + agent_text
    assert user_text.startswith("nul") and user_text.endswith("inside \x1b[31mred")
    assert agent_text.startswith("answer") and agent_text.endswith("too")
    assert "\x00" not in (session.get("room_id") or "")
    assert (session.get("room_id") or "").startswith("room")


BAD_QUERIES = [
    ("/v1/sessions", {"app_id": str(2**63)}, "app_id"),
    ("/v1/sessions", {"min_turns": str(2**63)}, "min_turns"),
    ("/v1/sessions", {"since": "9999-12-31T23:59:59-23:59"}, "since"),
    ("/v1/sessions", {"until": "0001-01-01T00:00:00+14:00"}, "until"),
    ("/v1/sessions", {"cursor": "eyJhIjogMX0"}, "cursor"),
    ("/v1/sessions", {"room_id": "room\x00"}, "room_id"),
    ("/v1/search", {"q": "\x00\x00\x00"}, "q"),
    ("/v1/search", {"q": " ".join(["ab"] * 1000)}, "q"),
    ("/v1/search", {"q": "a" * 1000}, "q"),
    ("/v1/exports/sessions.jsonl", {"app_id": str(2**63)}, "app_id"),
    ("/v1/exports/turns.csv", {"since": "9999-12-31T23:59:59-23:59"}, "since"),
]


def test_bad_queries_are_refused_before_any_byte_and_intake_goes_on(
    stack: Stack, clean_engine: Engine
) -> None:
    signer = Signer()
    valid = conversation(signer)
    api = httpx.Client(base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"})
    with api, httpx.Client(base_url=stack.url, timeout=10) as client:
        for index, (path, params, field) in enumerate(BAD_QUERIES):
            response = api.get(path, params=params)
            assert response.status_code == 400, (path, params, response.status_code, response.text[:200])
            body = response.json()
            assert body["error"] == "invalid_query", body
            assert field in body["detail"], (path, params, body)
            assert client.post("/callbacks/zego", json=valid[index]).status_code == 200
        for callback in valid[len(BAD_QUERIES) :]:
            assert client.post("/callbacks/zego", json=callback).status_code == 200
    wait_until(lambda: applied(clean_engine, INSTANCE) == (len(valid), 0), 60, "the conversation applied")
