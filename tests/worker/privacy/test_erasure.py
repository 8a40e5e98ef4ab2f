"""A user's erasure, end to end: what they said is on no surface and in no file; stats stay the same.

The conversation goes through the real receiver (HTTP, in process) and the worker's drain; an
endpoint that never answers keeps its events pending. Then ``DELETE /v1/users/{id}``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session as DbSession
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.database_files import sqlite_file_bytes
from tests.factories import APP_ID, Signer, changed, receiver_client
from tests.sinks import dead_url
from tests.worker.privacy.conversation import AUDIO, CARD, EMAIL, PHONE, RAW, USER, conversation
from worker.db import session_scope, utcnow
from worker.events import dispatch, endpoints
from worker.inbox.drain import drain_until_done
from worker.jobs.context import JobContext
from worker.models import Delivery, Erasure, OutboxEvent, Session, Turn
from worker.privacy.erasure import user_hash
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-erasure"
ADMIN = {"authorization": f"Bearer {API_TOKEN}"}
READ = {"authorization": f"Bearer {READ_TOKEN}"}
MINE, OTHER = "7100000000000000001", "7100000000000000002"
NEEDLES = [*RAW, base64.b64encode(AUDIO).decode()]


@pytest.fixture
def deployment(
    settings: Settings,
    clean_engine: Engine,
    redis_client: redis.Redis,
    run_tasks_with: Callable[[JobContext], JobContext],
) -> Iterator[tuple[TestClient, JobContext]]:
    """The receiver and API over the conversation of two users (the same words), drained, events
    fanned out to an endpoint that refuses every connection (so they stay pending)."""
    ours = changed(settings, read_token=READ_TOKEN, store_user_audio=True, endpoints_allow_private=True)
    job = run_tasks_with(JobContext.from_settings(ours))
    with session_scope(job.sessions) as db:
        wanted = endpoints.parse({"url": dead_url()}, creating=True, allow_private=True)
        endpoints.create(db, wanted, sealer=job.sealer, now=utcnow())
    with receiver_client(ours, read_token=READ_TOKEN) as client:
        signer = Signer()
        for instance, user in ((MINE, USER), (OTHER, "someone_else")):
            for cb in conversation(signer, instance=instance, user=user):
                answer = client.post("/callbacks/zego", json=cb)
                assert answer.status_code == 200, answer.text
        drain_until_done(job.sessions, [(APP_ID, MINE), (APP_ID, OTHER)], settings=job.settings)
        dispatch.fan_out(job)
        yield client, job


def surfaces(client: TestClient, job: JobContext, session_id: str) -> dict[str, str]:
    """Everything a reader can get about the session, as text, keyed by where it came from."""
    seen: dict[str, str] = {}
    for token, headers in (("admin", ADMIN), ("read", READ)):
        seen[f"detail/{token}"] = client.get(f"/v1/sessions/{session_id}", headers=headers).text
    for fmt in ("json", "text", "vtt"):
        seen[f"transcript.{fmt}"] = client.get(
            f"/v1/sessions/{session_id}/transcript", params={"format": fmt}, headers=READ
        ).text
    for term in ("liddell", "7946", "4111", "example.com"):
        # The hits only: the answer repeats the query itself.
        seen[f"search {term}"] = repr(
            client.get("/v1/search", params={"q": term}, headers=READ).json()["hits"]
        )
    for kind in ("sessions", "turns"):
        for fmt in ("jsonl", "csv"):
            seen[f"export {kind}.{fmt}"] = client.get(f"/v1/exports/{kind}.{fmt}", headers=READ).text
    with session_scope(job.sessions) as db:
        # What the event stream (SSE) and the deliveries send: the outbox rows' data.
        seen["events"] = repr(db.execute(text("SELECT type, data FROM outbox_events")).all())
        prefix = "bi." if db.get_bind().dialect.name == "postgresql" else "bi_"
        for view in ("sessions", "turns", "events", "latency"):
            rows = db.execute(text(f"SELECT * FROM {prefix}{view}")).all()
            seen[f"bi {view}"] = repr(rows)
    return seen


def tables_as_text(db: DbSession) -> str:
    """Every live row of every table, as the database renders it (a logical dump, in effect)."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        names = db.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
        return "\n".join(repr(db.execute(text(f'SELECT t::text FROM "{n}" t')).all()) for n in names)
    names = db.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'")).all()
    return "\n".join(repr(db.execute(text(f'SELECT * FROM "{n}"')).all()) for n in names)


def stats(client: TestClient) -> dict[str, Any]:
    body = client.get("/v1/stats", headers=READ).json()
    return {k: body[k] for k in ("sessions", "turns", "user_turns", "agent_turns", "interrupted_turns")} | {
        "durations": body.get("duration_seconds"),
        "response": body.get("response_ms"),
    }


def summary(client: TestClient, session_id: str) -> dict[str, Any]:
    body = client.get(f"/v1/sessions/{session_id}", headers=READ).json()
    return {"summary": body["summary"], "rounds": body["rounds"]}


def test_an_erased_user_s_words_are_on_no_surface_and_the_stats_stay(
    deployment: tuple[TestClient, JobContext], database_url: str
) -> None:
    """DELETE /v1/users/{id}: e-mail, phone and card are gone from API, search, exports, BI views,
    events and the database; counts, durations and response times read the same; the other
    user's identical words stay."""
    client, job = deployment
    with session_scope(job.sessions) as db:
        mine = db.scalars(select(Session.id).where(Session.user_id == USER)).one()
        other = db.scalars(select(Session.id).where(Session.user_id == "someone_else")).one()
        pending = db.scalars(select(Delivery).where(Delivery.state == "pending")).all()
        assert pending, "the endpoint's deliveries should be waiting"
    before = surfaces(client, job, mine)
    assert any(EMAIL in page for page in before.values()) and "liddell" in before["search liddell"]
    figures, shape = stats(client), summary(client, mine)

    assert client.delete(f"/v1/users/{USER}", headers=READ).status_code == 403
    answer = client.delete(f"/v1/users/{USER}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["user_id"] == USER and record["user_hash"] == user_hash(USER)
    assert record["sessions"] == 1 and record["erased_anything"] is True
    assert record["requested_by"] == "api:admin" and record["finished_at"] is not None
    counts = record["counts"]
    assert counts["turns"] == 6 and counts["agent_sentences"] == 4 and counts["user_audio"] == 1
    assert counts["payloads"] == 20 and counts["events"] >= 5 and counts["deliveries_cancelled"] >= 1

    after = surfaces(client, job, mine)
    for where, page in after.items():
        found = [needle for needle in RAW if needle in page and "search" not in where]
        # The other user said the same words: only the erased session must be clean, so the
        # shared pages (search, exports, BI, events) are checked for the erased session below.
        if where.startswith(("detail", "transcript")):
            assert not found, f"{found} still in {where}"
    for term in ("liddell", "7946", "4111"):
        hits = client.get("/v1/search", params={"q": term}, headers=READ).json()["hits"]
        assert {h["session"]["id"] for h in hits} == {other}, term
    with session_scope(job.sessions) as db:
        words = [t.text for t in db.scalars(select(Turn).where(Turn.session_id == mine))]
        assert words == [""] * 6
        leftovers = db.execute(
            text("SELECT data FROM outbox_events WHERE session_id = :s"), {"s": mine}
        ).all()
        assert not [row for row in leftovers if any(n in str(row) for n in RAW)]
        # Only events without words (session.*) may still go out for the erased session.
        still = db.scalars(
            select(OutboxEvent.type)
            .join(Delivery, Delivery.event_id == OutboxEvent.id)
            .where(Delivery.session_id == mine, Delivery.state == "pending")
        ).all()
        assert "turn.completed" not in still
    assert stats(client) == figures
    assert summary(client, mine) == shape
    shown = client.get(f"/v1/sessions/{mine}", headers=READ).json()["transcript_removed"]
    assert shown["by"] == "erasure"

    # A second erasure finds nothing left and says so; an unknown user is a clear 404.
    again = client.delete(f"/v1/users/{USER}", headers=ADMIN).json()
    assert again["erased_anything"] is False and set(again["counts"].values()) == {0}
    unknown = client.delete("/v1/users/nobody-by-that-name", headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    with session_scope(job.sessions) as db:
        records = db.scalars(select(Erasure).order_by(Erasure.id)).all()
        assert [r.user_hash for r in records] == [user_hash(USER)] * 2
        assert records[0].counts["turns"] == 6 and records[1].counts["turns"] == 0


def test_after_erasing_both_users_no_raw_value_is_in_any_table_or_file(
    deployment: tuple[TestClient, JobContext], database_url: str
) -> None:
    """With both users erased the words are in no live row, and on SQLite in no byte of the
    database file or its WAL (secure_delete, FTS segments merged, WAL truncated)."""
    client, job = deployment
    with session_scope(job.sessions) as db:
        assert EMAIL in tables_as_text(db)
    for user in (USER, "someone_else"):
        answer = client.delete(f"/v1/users/{user}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
    for where, page in surfaces(client, job, "none").items():
        assert not [n for n in RAW if n in page], where
    with session_scope(job.sessions) as db:
        dump = tables_as_text(db)
    assert not [n for n in NEEDLES if n in dump]
    if database_url.startswith("sqlite"):
        assert answer.json()["files_scrubbed"] is True
        raw = sqlite_file_bytes(database_url.split("///", 1)[1])
        for needle in [*NEEDLES, PHONE.replace(" ", ""), CARD.replace(" ", "")]:
            assert needle.encode() not in raw, needle
