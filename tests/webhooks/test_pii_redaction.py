"""PII redaction as a user's words travel: a caller says an e-mail address, a phone number and a
card number; each surface shows them only where the mode allows.

The callbacks go through the real receiver (in process, real database and Redis) and are applied
by the drain, as in the worker; then every reader looks: the API with the admin and the read token
(the page reads the same API with a read token), each transcript and export format, search, the
BI view, the outbound events, and the database itself (the SQLite file's bytes, a pg_dump).
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import Engine, select, text
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN, migrate
from tests.database_files import sqlite_file_bytes
from tests.factories import APP_ID, INSTANCE, Signer, apply_pending, encode_body
from tests.processes import postgres_bin
from webhooks.app import create_app
from worker.db import make_engine, make_sessionmaker
from worker.models import OutboxEvent, Session
from worker.settings import Settings

READ_TOKEN = "test-read-token-0123456789"
ADMIN = {"authorization": f"Bearer {API_TOKEN}"}
READ = {"authorization": f"Bearer {READ_TOKEN}"}

EMAIL, PHONE, CARD = "jane.doe@example.com", "13812345678", "4111 1111 1111 1111"
RAW_VALUES = (EMAIL, PHONE, CARD)
SAID = f"My email is {EMAIL}, my phone is {PHONE} and my card is {CARD}."
REDACTED = "My email is [EMAIL], my phone is [PHONE] and my card is [CARD]."
ANSWER = f"Thank you, I will write to {EMAIL}."


def conversation(signer: Signer) -> list[dict[str, object]]:
    base = int(time.time() * 1000) - 30_000
    script: list[tuple[str, dict[str, object]]] = [
        ("AgentInstanceCreated", {"CreatedTimestamp": base}),
        ("ASRResult", {"UserId": "user_1", "Round": 1, "Text": SAID}),
        ("LLMResult", {"Round": 1, "Text": ANSWER}),
        ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": 1}),
        ("Interrupted", {"Round": 1, "Reason": 1, "PlayedText": f"Thank you, I will write to {EMAIL}"}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": 1}),
        ("AgentInstanceDeleted", {"Code": 0, "DeletedTimestamp": base + 20_000}),
    ]
    return [
        signer.callback(event, data, sequence=10 + i, timestamp=base + 1_000 * i)
        for i, (event, data) in enumerate(script)
    ]


@dataclass
class Told:
    client: TestClient
    engine: Engine
    settings: Settings
    session_id: str


@pytest.fixture(params=["off", "read", "store"])
def told(
    request: pytest.FixtureRequest,
    settings: Settings,
    clean_engine: Engine,
    redis_client: redis.Redis,
    signer: Signer,
) -> Iterator[Told]:
    """The conversation received, stored and applied under one redaction mode."""
    mode = request.param
    configured = settings.model_copy(update={"read_token": SecretStr(READ_TOKEN), "pii_redaction": mode})
    with TestClient(create_app(configured)) as client:
        for payload in conversation(signer):
            answer = client.post(
                "/callbacks/zego", content=encode_body(payload), headers={"content-type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
        # A retry of the first callback, as ZEGO re-sends it: still a duplicate in every mode.
        first = conversation(signer)[1]
        factory = make_sessionmaker(clean_engine)
        with factory() as db:
            apply_pending(db, configured, instance=INSTANCE, app_id=APP_ID)
            db.commit()
            session_id = db.scalars(select(Session.id)).one()
        assert first["Data"] == {"UserId": "user_1", "Round": 1, "Text": SAID}
        yield Told(client, clean_engine, configured, session_id)


def raw_allowed(mode: str, admin: bool) -> bool:
    return mode == "off" or (mode == "read" and admin)


def assert_shown(body: str, raw: bool) -> None:
    if raw:
        assert all(value in body for value in RAW_VALUES), body
    else:
        assert not any(value in body for value in RAW_VALUES), body
        assert "[EMAIL]" in body and "[CARD]" in body and "[PHONE]" in body, body


def mode_of(told: Told) -> str:
    return told.settings.pii_redaction


@pytest.mark.parametrize("fmt", ["json", "text", "vtt"])
def test_the_transcript_shows_raw_words_to_the_admin_token_only_in_read_mode(told: Told, fmt: str) -> None:
    """Each transcript format, with each token: the raw values only where the mode allows."""
    for headers, admin in ((ADMIN, True), (READ, False)):
        answer = told.client.get(f"/v1/sessions/{told.session_id}/transcript?format={fmt}", headers=headers)
        assert answer.status_code == 200
        assert_shown(answer.text, raw_allowed(mode_of(told), admin))


def test_the_session_detail_and_list_hold_no_spoken_values_for_a_read_token(told: Told) -> None:
    """What the page shows beside the transcript (detail, timeline, list) never quotes a value."""
    for path in (f"/v1/sessions/{told.session_id}", "/v1/sessions"):
        answer = told.client.get(path, headers=READ)
        assert answer.status_code == 200
        if told.settings.pii_redaction != "off":
            assert not any(value in answer.text for value in RAW_VALUES), answer.text


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_exports_follow_the_callers_token(told: Told, fmt: str) -> None:
    """An analyst's export holds what the analyst's token may see; the admin's, per the mode."""
    for headers, admin in ((ADMIN, True), (READ, False)):
        answer = told.client.get(f"/v1/exports/turns.{fmt}", headers=headers)
        assert answer.status_code == 200
        if fmt == "parquet":
            body = "\n".join(
                str(v) for v in pq.read_table(io.BytesIO(answer.content)).to_pydict()["text"] if v is not None
            )
        else:
            body = answer.text
        assert_shown(body, raw_allowed(mode_of(told), admin))


def test_search_cannot_confirm_a_value_it_does_not_show(told: Told) -> None:
    """A read token searching for the e-mail address finds nothing once it is redacted; searching
    for the words around it still finds the turn, redacted."""
    mode = mode_of(told)
    for headers, admin in ((ADMIN, True), (READ, False)):
        hits = told.client.get("/v1/search", params={"q": "jane.doe"}, headers=headers).json()["hits"]
        assert bool(hits) == raw_allowed(mode, admin)
        around = told.client.get("/v1/search", params={"q": "email"}, headers=headers).json()["hits"]
        assert around, mode
        said = [h["turn"]["text"] for h in around if h["turn"]["speaker"] == "user"]
        assert said == [SAID if raw_allowed(mode, admin) else REDACTED]


def test_the_bi_view_shows_the_redacted_text_unless_redaction_is_off(told: Told) -> None:
    """A dashboard reading bi.turns never sees the raw values once redaction is on."""
    name = "bi.turns" if told.engine.dialect.name == "postgresql" else "bi_turns"
    with told.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT text, played_text FROM {name}")).all()
    body = "\n".join(str(v) for row in rows for v in row if v)
    assert_shown(body, mode_of(told) == "off")


def test_outbound_events_carry_the_redacted_text_unless_redaction_is_off(told: Told) -> None:
    """turn.completed, as app endpoints receive it (the stored event is the body sent)."""
    with told.engine.connect() as conn:
        events = conn.execute(select(OutboxEvent.type, OutboxEvent.data)).all()
    turns = [data for type_, data in events if type_ == "turn.completed"]
    assert {t["speaker"] for t in turns} == {"user", "agent"}
    # The same rows feed deliveries to endpoints and the live stream (GET /v1/events).
    assert_shown(repr(turns), mode_of(told) == "off")


def test_the_raw_values_reach_the_database_files_only_when_not_in_store_mode(told: Told) -> None:
    """store: not in a pg_dump; the other modes keep them stored (SQLite: see the next test)."""
    if told.engine.dialect.name == "sqlite" and mode_of(told) == "store":
        pytest.skip("this SQLite file held other tests' raw words: a fresh one is checked below")
    if told.engine.dialect.name == "sqlite":
        # The main file and its write-ahead log: whatever is committed is in one of them.
        path = told.engine.url.database
        assert path is not None
        dump = sqlite_file_bytes(path).decode("utf-8", "replace")
    else:
        bin_dir = postgres_bin()
        pg_dump = str(bin_dir / "pg_dump") if bin_dir is not None else "pg_dump"
        url = told.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        dump = subprocess.run([pg_dump, url], check=True, capture_output=True, text=True).stdout
    stored = [value in dump for value in RAW_VALUES]
    assert stored == [mode_of(told) != "store"] * len(RAW_VALUES)


def test_in_store_mode_a_fresh_sqlite_file_never_holds_the_raw_values(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis, signer: Signer
) -> None:
    """The whole conversation received and applied in store mode: not one raw value in the file's
    bytes (main file and write-ahead log), though the transcript is there, redacted."""
    path = tmp_path / "store.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url)
    configured = settings.model_copy(
        update={"database_url": url, "read_token": SecretStr(READ_TOKEN), "pii_redaction": "store"}
    )
    engine = make_engine(url)
    try:
        with TestClient(create_app(configured)) as client:
            for payload in conversation(signer):
                answer = client.post(
                    "/callbacks/zego",
                    content=encode_body(payload),
                    headers={"content-type": "application/json"},
                )
                assert answer.status_code == 200
            with make_sessionmaker(engine)() as db:
                apply_pending(db, configured, instance=INSTANCE, app_id=APP_ID)
                db.commit()
            session_id = client.get("/v1/sessions", headers=ADMIN).json()["sessions"][0]["id"]
            shown = client.get(f"/v1/sessions/{session_id}/transcript?format=text", headers=ADMIN).text
            assert "[EMAIL]" in shown
    finally:
        engine.dispose()
    dump = sqlite_file_bytes(path)
    assert not any(value.encode() in dump for value in RAW_VALUES)
    assert b"[CARD]" in dump


def test_a_retried_callback_is_still_a_duplicate_when_stored_redacted(told: Told, signer: Signer) -> None:
    """Dedup and the replay guard work on the original body: a re-sent callback is not a conflict."""
    payload = signer.callback(
        "ASRResult", {"UserId": "user_1", "Round": 2, "Text": f"again {EMAIL}"}, sequence=99
    )
    for expected in ("stored", "duplicate"):
        answer = told.client.post(
            "/callbacks/zego", content=encode_body(payload), headers={"content-type": "application/json"}
        )
        assert answer.json()["status"] == expected
    replay = {**payload, "Data": {**payload["Data"], "Text": "something else"}}
    answer = told.client.post(
        "/callbacks/zego", content=encode_body(replay), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 401
