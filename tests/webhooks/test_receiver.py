"""``POST /callbacks/zego`` as ZEGO sees it: what is answered, and what ends up in the inbox."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from tests.conftest import REDIS_URL
from tests.factories import (
    APP_ID,
    BODY_FORMS,
    CALLBACK_SECRET,
    EVENT_DATA,
    INSTANCE,
    Signer,
    content_type,
    encode_body,
    inbox_rows,
    receiver_client,
)
from tests.processes import Stack, wait_until
from worker.settings import Settings

URL = "/callbacks/zego"
DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
DEAD_BROKER = "redis://127.0.0.1:1/0"
STORED = {"status": "stored"}
DUPLICATE = {"status": "duplicate"}


def post(client: TestClient, payload: dict[str, Any], form: str = "json") -> httpx.Response:
    return client.post(URL, content=encode_body(payload, form), headers={"content-type": content_type(form)})


def post_raw(client: TestClient, body: bytes) -> httpx.Response:
    return client.post(URL, content=body, headers={"content-type": "application/json"})


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert body["detail"]


def minutes_ago(minutes: float) -> int:
    return int((time.time() - minutes * 60) * 1000)


@contextlib.contextmanager
def inbox_locked(engine: Engine) -> Iterator[None]:
    """Hold a lock that makes every insert into the inbox wait, as a busy database would."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("LOCK TABLE inbox IN EXCLUSIVE MODE"))
        # On SQLite the engine's BEGIN IMMEDIATE already holds the database's write lock.
        yield


# --- Storing every kind of callback ---


@pytest.mark.parametrize("form", BODY_FORMS)
@pytest.mark.parametrize("event", sorted(EVENT_DATA))
def test_every_event_is_stored_as_pending(
    client: TestClient, clean_engine: Engine, signer: Signer, event: str, form: str
) -> None:
    """Each event type, in each body form ZEGO may use, is answered 200 stored and kept in the inbox."""
    payload = signer.callback(event, sequence=41)
    response = post(client, payload, form)
    assert response.status_code == 200
    assert response.json() == STORED
    [row] = inbox_rows(clean_engine)
    assert (row.event, row.app_id, row.agent_instance_id, row.sequence) == (event, APP_ID, INSTANCE, 41)
    assert row.state == "pending"
    assert row.attempts == 0
    assert row.content_type == ("json" if form == "json" else "form")
    assert row.callback_ts == payload["Timestamp"]
    assert row.signature == payload["Signature"]
    assert row.dedup_key == f"{APP_ID}:{INSTANCE}:{event}:41"
    assert orjson.loads(row.payload) == payload
    assert row.received_at is not None


def test_json_body_is_stored_byte_for_byte(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A JSON callback is kept exactly as it arrived, whitespace and key order included."""
    body = b'{ "Sequence": 3,\n  ' + encode_body(signer.callback("ASRResult", with_sequence=False))[1:]
    assert post_raw(client, body).json() == STORED
    [row] = inbox_rows(clean_engine)
    assert row.payload == body.decode()
    assert row.sequence == 3


def test_unknown_event_and_fields_are_stored_verbatim(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """An event or field ZEGO adds tomorrow is accepted and kept, not dropped or refused."""
    payload = signer.callback(
        "AgentInstanceFutureEvent",
        {"Whatever": [1, 2, 3], "Nested": {"Deep": True}},
        NewTopLevel={"x": 1},
        Flag="on",
    )
    response = post(client, payload)
    assert response.status_code == 200
    assert response.json() == STORED
    [row] = inbox_rows(clean_engine)
    assert row.event == "AgentInstanceFutureEvent"
    stored = orjson.loads(row.payload)
    assert stored["NewTopLevel"] == {"x": 1}
    assert stored["Flag"] == "on"
    assert stored["Data"] == {"Whatever": [1, 2, 3], "Nested": {"Deep": True}}


def test_unknown_fields_in_a_form_body_are_stored(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Extra fields of a form-encoded callback survive into the stored payload."""
    payload = signer.callback("ASRResult", TtsLogId="abc-123")
    assert post(client, payload, "form").json() == STORED
    [row] = inbox_rows(clean_engine)
    assert orjson.loads(row.payload)["TtsLogId"] == "abc-123"


def test_large_user_audio_under_the_limit_is_accepted(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """A UserAudioData callback of about 700 kB fits the default 1 MiB limit and is stored."""
    audio = "QUJD" * 175_000
    body = encode_body(signer.callback("UserAudioData", {**EVENT_DATA["UserAudioData"], "Audio": audio}))
    assert 690_000 < len(body) < 1024 * 1024
    response = post_raw(client, body)
    assert response.status_code == 200
    assert response.json() == STORED
    [row] = inbox_rows(clean_engine)
    assert row.event == "UserAudioData"
    assert orjson.loads(row.payload)["Data"]["Audio"] == audio


# --- Duplicates, retries and replays ---


@pytest.mark.parametrize("form", BODY_FORMS)
def test_same_callback_twice_is_stored_once(
    client: TestClient, clean_engine: Engine, signer: Signer, form: str
) -> None:
    """A redelivered callback is acknowledged as a duplicate and not stored again."""
    payload = signer.callback("ASRResult")
    first, second = post(client, payload, form), post(client, payload, form)
    assert (first.status_code, first.json()) == (200, STORED)
    assert (second.status_code, second.json()) == (200, DUPLICATE)
    assert len(inbox_rows(clean_engine)) == 1


def test_resigned_retry_is_a_duplicate(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """ZEGO's retry of a callback, with a new Nonce, Timestamp and Signature, is stored once."""
    payload = signer.callback("LLMResult")
    retry = signer.resign(payload)
    assert retry["Signature"] != payload["Signature"]
    assert post(client, payload).json() == STORED
    response = post(client, retry)
    assert (response.status_code, response.json()) == (200, DUPLICATE)
    [row] = inbox_rows(clean_engine)
    assert row.signature == payload["Signature"]


def test_callback_without_sequence_is_stored_once(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Without a Sequence, a content hash still recognises a callback sent twice or re-signed."""
    payload = signer.callback("ASRResult", with_sequence=False)
    assert post(client, payload).json() == STORED
    assert post(client, payload).json() == DUPLICATE
    assert post(client, signer.resign(payload)).json() == DUPLICATE
    [row] = inbox_rows(clean_engine)
    assert row.sequence is None
    assert ":h:" in row.dedup_key


def test_different_callbacks_without_sequence_are_both_stored(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Two callbacks that say different things are two rows, Sequence or not."""
    first = signer.callback("LLMResult", {"Round": 1, "Text": "Hello."}, with_sequence=False)
    second = signer.callback("LLMResult", {"Round": 1, "Text": "How are you?"}, with_sequence=False)
    assert [post(client, p).json() for p in (first, second)] == [STORED, STORED]
    assert sorted(orjson.loads(r.payload)["Data"]["Text"] for r in inbox_rows(clean_engine)) == [
        "Hello.",
        "How are you?",
    ]


def test_replayed_signature_with_another_body_is_refused(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """A captured signature reused on a changed body is 401 and the original text is kept."""
    payload = signer.callback("ASRResult", {"UserId": "user_1", "Round": 7, "Text": "Hi"})
    assert post(client, payload).json() == STORED
    forged = {**payload, "Data": {**payload["Data"], "Text": "Transfer all my money"}}
    assert_error(post(client, forged), 401, "replayed_signature")
    [row] = inbox_rows(clean_engine)
    assert orjson.loads(row.payload)["Data"]["Text"] == "Hi"


def test_replayed_signature_on_another_sequence_is_refused(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Reusing a signature for a callback with a new Sequence (so a new key) is still a replay."""
    payload = signer.callback("ASRResult", sequence=1)
    assert post(client, payload).json() == STORED
    assert_error(post(client, {**payload, "Sequence": 2, "Event": "LLMResult"}), 401, "replayed_signature")
    [row] = inbox_rows(clean_engine)
    assert (row.event, row.sequence) == ("ASRResult", 1)


def test_replayed_signature_without_sequence_is_refused(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Without a Sequence a changed body has another content key, and the reused signature still gives it away."""
    payload = signer.callback("LLMResult", {"Round": 3, "Text": "Fine."}, with_sequence=False)
    assert post(client, payload).json() == STORED
    forged = {**payload, "Data": {"Round": 3, "Text": "Not fine."}}
    assert_error(post(client, forged), 401, "replayed_signature")
    [row] = inbox_rows(clean_engine)
    assert orjson.loads(row.payload)["Data"]["Text"] == "Fine."


# --- Signatures ---


def test_unknown_app_id_is_unauthorized(client: TestClient, clean_engine: Engine) -> None:
    """A callback for an AppId this deployment does not serve is 401 unknown_app and not stored."""
    stranger = Signer(app_id=999_999, secret=CALLBACK_SECRET)
    assert_error(post(client, stranger.callback("ASRResult")), 401, "unknown_app")
    assert inbox_rows(clean_engine) == []


def test_missing_signature_is_unauthorized(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A callback without a Signature is 401 missing_fields, naming the field, and not stored."""
    payload = signer.callback("ASRResult")
    del payload["Signature"]
    response = post(client, payload)
    assert_error(response, 401, "missing_fields")
    assert "Signature" in response.json()["detail"]
    assert inbox_rows(clean_engine) == []


def test_stale_timestamp_is_unauthorized(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A correctly signed callback from eleven minutes ago is 401 stale_timestamp and not stored."""
    assert_error(
        post(client, signer.callback("ASRResult", timestamp=minutes_ago(11))), 401, "stale_timestamp"
    )
    assert inbox_rows(clean_engine) == []


def test_future_timestamp_is_unauthorized(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A callback dated eleven minutes ahead is 401 stale_timestamp too."""
    assert_error(
        post(client, signer.callback("ASRResult", timestamp=minutes_ago(-11))), 401, "stale_timestamp"
    )
    assert inbox_rows(clean_engine) == []


def test_bad_signature_is_unauthorized(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A callback signed with the wrong secret is 401 bad_signature and not stored."""
    forger = Signer(secret="not-the-secret")
    assert_error(post(client, forger.callback("ASRResult")), 401, "bad_signature")
    payload = signer.callback("ASRResult")
    assert_error(post(client, {**payload, "Nonce": payload["Nonce"] + "0"}), 401, "bad_signature")
    assert inbox_rows(clean_engine) == []


def test_bad_signature_in_a_form_body_is_unauthorized(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Form-encoded callbacks are verified just like JSON ones."""
    payload = {**signer.callback("ASRResult"), "Signature": "0" * 40}
    assert_error(post(client, payload, "form"), 401, "bad_signature")
    assert inbox_rows(clean_engine) == []


def test_timestamp_window_setting_is_honoured(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """With a one-minute window, a two-minute-old callback is refused and a 30-second-old one stored."""
    with receiver_client(settings, timestamp_window_seconds=60) as strict:
        assert_error(
            post(strict, signer.callback("ASRResult", timestamp=minutes_ago(2))), 401, "stale_timestamp"
        )
        assert post(strict, signer.callback("ASRResult", timestamp=minutes_ago(0.5))).json() == STORED
    assert len(inbox_rows(clean_engine)) == 1


def test_default_window_accepts_a_two_minute_old_callback(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Under the default ten-minute window a callback delayed by two minutes is stored."""
    assert post(client, signer.callback("ASRResult", timestamp=minutes_ago(2))).json() == STORED
    assert len(inbox_rows(clean_engine)) == 1


def test_second_configured_app_is_accepted(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """Several AppIds can be served at once, each verified with its own callback secret."""
    other = Signer(app_id=7_654_321, secret="second-app-secret")
    apps = {7_654_321: {"callback_secret": "second-app-secret"}}
    with receiver_client(settings, zego_apps=Settings(zego_apps=apps, _env_file=None).zego_apps) as multi:
        assert post(multi, other.callback("ASRResult")).json() == STORED
        assert post(multi, Signer().callback("ASRResult")).json() == STORED
        forged = Signer(app_id=7_654_321, secret=CALLBACK_SECRET).callback("ASRResult")
        assert_error(post(multi, forged), 401, "bad_signature")
    assert sorted(r.app_id for r in inbox_rows(clean_engine)) == [APP_ID, 7_654_321]


# --- Malformed and oversized bodies ---


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b'{"AppId": 1234567,}', b"[1, 2, 3]", b'"just a string"', b"hello world"],
    ids=["empty", "broken-json", "trailing-comma", "json-array", "json-string", "garbage"],
)
def test_unreadable_body_is_bad_request(client: TestClient, clean_engine: Engine, body: bytes) -> None:
    """A body that is not a JSON object is 400 malformed (ZEGO should not retry it) and not stored."""
    assert_error(post_raw(client, body), 400, "malformed")
    assert inbox_rows(clean_engine) == []


@pytest.mark.parametrize("field", ["Event", "AgentInstanceId"])
def test_signed_body_missing_a_routing_field_is_bad_request(
    client: TestClient, clean_engine: Engine, signer: Signer, field: str
) -> None:
    """A correctly signed callback without Event or AgentInstanceId is 400 naming the field."""
    payload = signer.callback("ASRResult")
    del payload[field]
    response = post(client, payload)
    assert_error(response, 400, "malformed")
    assert field in response.json()["detail"]
    assert inbox_rows(clean_engine) == []


def test_signed_body_with_non_object_data_is_bad_request(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """A signed callback whose Data is not an object is 400 and not stored."""
    assert_error(post(client, signer.callback("ASRResult", data=None, Data="text")), 400, "malformed")
    assert inbox_rows(clean_engine) == []


@pytest.mark.parametrize("app_id", [b"--1", b"%C2%B2"], ids=["double-minus", "superscript-two"])
def test_form_body_with_a_garbled_number_is_refused_not_a_crash(
    client: TestClient, clean_engine: Engine, signer: Signer, app_id: bytes
) -> None:
    """A form body whose AppId only looks numeric is refused as a bad field (401), never a 500."""
    body = encode_body(signer.callback("ASRResult"), "form").replace(
        f"AppId={APP_ID}".encode(), b"AppId=" + app_id
    )
    response = client.post(URL, content=body, headers={"content-type": content_type("form")})
    assert_error(response, 401, "bad_fields")
    assert inbox_rows(clean_engine) == []


def test_form_body_with_bracketed_text_is_stored(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """A form callback whose agent Name starts with a bracket is stored like its JSON twin."""
    payload = signer.callback("ASRResult", Name="[beta] Weather bot")
    assert post(client, payload, "form").json() == STORED
    [row] = inbox_rows(clean_engine)
    assert orjson.loads(row.payload)["Name"] == "[beta] Weather bot"


def test_body_over_the_limit_is_refused_by_its_length(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """With a Content-Length above max_body_bytes the callback is 413 and not stored."""
    payload = signer.callback("ASRResult", Padding="x" * 4000)
    body = encode_body(payload)
    with receiver_client(settings, max_body_bytes=2048) as small:
        response = small.post(URL, content=body, headers={"content-type": "application/json"})
        assert response.request.headers["content-length"] == str(len(body))
        assert_error(response, 413, "body_too_large")
        assert "2048" in response.json()["detail"]
    assert inbox_rows(clean_engine) == []


def test_chunked_body_over_the_limit_is_refused(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """A chunked upload with no Content-Length is cut off at max_body_bytes: 413, nothing stored."""
    body = encode_body(signer.callback("ASRResult", Padding="x" * 4000))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with receiver_client(settings, max_body_bytes=2048) as small:
        response = small.post(URL, content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_error(response, 413, "body_too_large")
    assert inbox_rows(clean_engine) == []


def test_body_of_exactly_the_limit_is_accepted(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """max_body_bytes is inclusive: a body of exactly that size is stored, one byte more is 413."""
    payload = signer.callback("ASRResult", Padding="")
    payload["Padding"] = "x" * (2048 - len(encode_body(payload)))
    body = encode_body(payload)
    assert len(body) == 2048
    with receiver_client(settings, max_body_bytes=2048) as small:
        assert_error(post_raw(small, body + b" "), 413, "body_too_large")
        assert post_raw(small, body).json() == STORED
    assert len(inbox_rows(clean_engine)) == 1


def test_small_chunked_body_is_accepted(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """A chunked upload under the limit is read in full and stored."""
    body = encode_body(signer.callback("ASRResult"))
    response = client.post(
        URL, content=iter([body[:100], body[100:]]), headers={"content-type": "application/json"}
    )
    assert response.json() == STORED
    assert len(inbox_rows(clean_engine)) == 1


# --- When the database or the broker is away ---


def test_database_unavailable_is_service_unavailable_and_retry_succeeds(
    settings: Settings, client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """With the database down the answer is 503 (ZEGO retries) and the retry, once it is back, is stored."""
    payload = signer.callback("AgentInstanceCreated")
    with receiver_client(settings, database_url=DEAD_DATABASE, ingest_timeout_seconds=3) as down:
        started = time.monotonic()
        assert_error(post(down, payload), 503, "storage_unavailable")
        assert time.monotonic() - started < 3
    assert inbox_rows(clean_engine) == []
    response = post(client, payload)
    assert (response.status_code, response.json()) == (200, STORED)
    [row] = inbox_rows(clean_engine)
    assert row.event == "AgentInstanceCreated"


def test_slow_database_times_out_with_503_and_the_retry_is_stored_once(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """A commit that outlasts ingest_timeout_seconds is answered 503; ZEGO's retry leaves exactly one row."""
    payload = signer.callback("ASRResult")
    with receiver_client(settings, ingest_timeout_seconds=0.3) as app:
        with inbox_locked(clean_engine):
            started = time.monotonic()
            response = post(app, payload)
            assert time.monotonic() - started < 5
        assert_error(response, 503, "storage_unavailable")
        retry = post(app, signer.resign(payload))
        assert retry.status_code == 200
        assert retry.json() in (STORED, DUPLICATE)
    [row] = inbox_rows(clean_engine)
    assert row.sequence == payload["Sequence"]


def test_largest_64_bit_sequence_is_stored(client: TestClient, clean_engine: Engine, signer: Signer) -> None:
    """Sequences up to the signed 64-bit maximum are stored and read back exactly."""
    assert post(client, signer.callback("ASRResult", sequence=2**63 - 1)).json() == STORED
    [row] = inbox_rows(clean_engine)
    assert row.sequence == 2**63 - 1


def test_out_of_range_sequence_is_refused_without_harming_other_callbacks(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """A signed callback whose Sequence does not fit 64 bits is 400; callbacks beside and after it are stored."""
    poison = signer.callback("ASRResult", sequence=2**63)
    others = [signer.callback("ASRResult", sequence=i) for i in range(1, 8)]
    responses = post_concurrently(client, [poison, *others])
    after = post(client, signer.callback("ASRResult", sequence=8))
    assert [(r.status_code, r.json()) for r in responses[1:]] == [(200, STORED)] * 7
    assert (after.status_code, after.json()) == (200, STORED)
    assert_error(responses[0], 400, "malformed")
    assert "Sequence" in responses[0].json()["detail"]
    assert sorted(r.sequence for r in inbox_rows(clean_engine)) == list(range(1, 9))


@pytest.mark.parametrize("field", ["Event", "AgentInstanceId"])
def test_nul_character_in_a_routing_field_is_bad_request(
    client: TestClient, clean_engine: Engine, signer: Signer, field: str
) -> None:
    """A signed callback with a NUL character in Event or AgentInstanceId is 400 on either database."""
    payload = signer.callback("ASRResult")
    payload[field] = "ASR\u0000Result" if field == "Event" else "1912\u00002641792"
    response = post(client, payload)
    assert_error(response, 400, "malformed")
    assert inbox_rows(clean_engine) == []


def pg_waiters_on_inbox(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'inbox'::regclass"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalar_one()
        )


def _drop_refusal(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE inbox DROP CONSTRAINT IF EXISTS test_refuse"))


def test_a_row_the_database_refuses_does_not_fail_its_batch(
    settings: Settings,
    clean_engine: Engine,
    redis_client: redis.Redis,
    signer: Signer,
    request: pytest.FixtureRequest,
) -> None:
    """When one callback of a group commit cannot be stored, the others in that commit are still stored."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("adds a CHECK constraint with ALTER TABLE, which SQLite cannot do")
    refused = signer.callback("RefusedByTheDatabase")
    with clean_engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE inbox ADD CONSTRAINT test_refuse CHECK (event <> 'RefusedByTheDatabase')")
        )
    request.addfinalizer(lambda: _drop_refusal(clean_engine))
    neighbours = [signer.callback("LLMResult", {"Round": 1, "Text": f"s{i}"}) for i in range(6)]
    with receiver_client(settings, ingest_writers=1) as app, ThreadPoolExecutor(max_workers=2) as pool:
        writer = app.app.state.writer  # type: ignore[attr-defined]
        with inbox_locked(clean_engine):
            blocker = pool.submit(post, app, signer.callback("AgentInstanceCreated"))
            deadline = time.monotonic() + 10
            while pg_waiters_on_inbox(clean_engine) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            batch = pool.submit(post_concurrently, app, [refused, *neighbours])
            while writer.queued() < 7 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert writer.queued() == 7, "the seven callbacks should be waiting for one commit"
        assert blocker.result(timeout=30).json() == STORED
        responses = batch.result(timeout=30)
    assert [(r.status_code, r.json()) for r in responses[1:]] == [(200, STORED)] * 6
    assert responses[0].status_code != 200
    rows = inbox_rows(clean_engine)
    assert sorted(r.event for r in rows) == ["AgentInstanceCreated"] + ["LLMResult"] * 6


def wait_for_queued(app: TestClient, count: int) -> None:
    writer = app.app.state.writer  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while writer.queued() < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.queued() == count, f"{count} callbacks should be waiting for one commit"


def test_one_commit_holding_a_duplicate_a_copy_and_fresh_callbacks_answers_each_rightly(
    settings: Settings, clean_engine: Engine, signer: Signer
) -> None:
    """A group commit that holds a callback stored earlier, two copies of a new one and another new
    one: the earlier one and the second copy are duplicates, the others stored, each row kept once."""
    earlier = signer.callback("ASRResult", sequence=1)
    fresh = signer.callback("ASRResult", sequence=2)
    other = signer.callback("ASRResult", sequence=3)
    with receiver_client(settings, ingest_writers=1) as app, ThreadPoolExecutor(max_workers=2) as pool:
        assert post(app, earlier).json() == STORED
        with inbox_locked(clean_engine):
            blocker = pool.submit(post, app, signer.callback("AgentInstanceCreated"))
            time.sleep(0.3)  # the writer has taken it and waits for the lock
            batch = pool.submit(post_concurrently, app, [signer.resign(earlier), fresh, fresh, other])
            wait_for_queued(app, 4)
        assert blocker.result(timeout=30).json() == STORED
        responses = batch.result(timeout=30)
    answers = [r.json()["status"] for r in responses]
    assert answers[0] == "duplicate" and answers[3] == "stored"
    assert sorted(answers[1:3]) == ["duplicate", "stored"]
    assert sorted(r.sequence for r in inbox_rows(clean_engine) if r.event == "ASRResult") == [1, 2, 3]


def _terminate_inbox_writers(engine: Engine) -> int:
    """End the backends whose INSERT INTO inbox waits for the lock: the database dropping them."""
    with engine.connect() as connection:
        return len(
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO inbox%'"
                )
            ).all()
        )


def test_a_commit_the_database_drops_answers_all_its_callbacks_503_and_loses_none(
    settings: Settings, clean_engine: Engine, signer: Signer
) -> None:
    """The database drops the writer's connections mid-commit (the kept one, the fresh one it retries
    on, and the next): every callback waiting on those commits is answered 503, none is half-stored,
    and ZEGO's retries store each exactly once."""
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("ends the writer's Postgres backends with pg_terminate_backend")
    first = signer.callback("AgentInstanceCreated")
    payloads = [signer.callback("LLMResult", {"Round": 1, "Text": f"s{i}"}) for i in range(6)]
    with receiver_client(settings, ingest_writers=1) as app, ThreadPoolExecutor(max_workers=2) as pool:
        assert post(app, signer.callback("AgentInstanceStatus")).json() == STORED  # a kept connection
        with inbox_locked(clean_engine):
            blocker = pool.submit(post, app, first)
            time.sleep(0.3)
            batch = pool.submit(post_concurrently, app, payloads)
            wait_for_queued(app, 6)
            terminated = 0
            deadline = time.monotonic() + 20
            while not (blocker.done() and batch.done()) and time.monotonic() < deadline:
                terminated += _terminate_inbox_writers(clean_engine)
                time.sleep(0.05)
            responses = [blocker.result(timeout=1), *batch.result(timeout=1)]
        assert terminated == 3  # the blocker's commit twice (kept, then fresh), the six's once (fresh)
        assert [(r.status_code, r.json()["error"]) for r in responses] == [(503, "storage_unavailable")] * 7
        assert [r.event for r in inbox_rows(clean_engine)] == ["AgentInstanceStatus"]
        retries = [post(app, signer.resign(payload)) for payload in [first, *payloads]]
    assert [(r.status_code, r.json()) for r in retries] == [(200, STORED)] * 7
    rows = inbox_rows(clean_engine)
    assert len(rows) == 8 and len({r.dedup_key for r in rows}) == 8


@pytest.mark.slow
def test_broker_unavailable_still_stores_and_answers(
    receiver_process: Callable[..., Stack], clean_engine: Engine, signer: Signer
) -> None:
    """With Redis unreachable the receiver still answers 200 stored: the row waits for the sweeper."""
    stack = receiver_process(broker_url=DEAD_BROKER)
    payloads = [signer.callback("AgentInstanceCreated"), signer.callback("ASRResult")]
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        responses = [http.post(URL, content=encode_body(p)) for p in payloads]
        wait_until(lambda: '"enqueue_failed"' in stack.receiver.output(), 15, "a failed publish")
        ready = http.get("/readyz")
    assert [(r.status_code, r.json()) for r in responses] == [(200, STORED), (200, STORED)]
    assert [(r.event, r.state) for r in inbox_rows(clean_engine)] == [
        ("AgentInstanceCreated", "pending"),
        ("ASRResult", "pending"),
    ]
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["broker"] != "ok"


@pytest.mark.slow
def test_hung_broker_does_not_delay_the_answer(
    receiver_process: Callable[..., Stack], clean_engine: Engine, signer: Signer
) -> None:
    """A broker that accepts connections but never replies does not hold up ZEGO's 200."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
        stack = receiver_process(broker_url=f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
        timings = []
        with httpx.Client(base_url=stack.url, timeout=10) as http:
            for payload in [signer.callback("ASRResult") for _ in range(3)]:
                started = time.monotonic()
                response = http.post(URL, content=encode_body(payload))
                timings.append(time.monotonic() - started)
                assert (response.status_code, response.json()) == (200, STORED)
        stack.stop()
    assert max(timings) < 1, timings
    assert len(inbox_rows(clean_engine)) == 3


@pytest.mark.slow
def test_chunked_upload_over_a_real_socket_is_cut_off(
    receiver_process: Callable[..., Stack], clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """Over real HTTP, a chunked body past max_body_bytes is 413 and the server keeps serving."""
    stack = receiver_process(broker_url=REDIS_URL, max_body_bytes="4096")
    big = encode_body(signer.callback("ASRResult", Padding="x" * 20_000))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1024):
            yield big[start : start + 1024]

    with httpx.Client(base_url=stack.url, timeout=10) as http:
        refused = http.post(URL, content=chunks(), headers={"content-type": "application/json"})
        stored = http.post(URL, content=encode_body(signer.callback("ASRResult")))
    assert "content-length" not in refused.request.headers
    assert_error(refused, 413, "body_too_large")
    assert (stored.status_code, stored.json()) == (200, STORED)
    assert len(inbox_rows(clean_engine)) == 1


# --- Many callbacks at once: the group commit ---


def post_concurrently(client: TestClient, payloads: list[dict[str, Any]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(payloads))

    def send(payload: dict[str, Any]) -> httpx.Response:
        barrier.wait(timeout=10)
        return post(client, payload)

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(send, payloads))


def test_concurrent_callbacks_are_all_stored(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """32 callbacks posted at the same moment are all answered 200 stored and all kept."""
    payloads = [signer.callback("LLMResult", {"Round": 1, "Text": f"sentence {i}"}) for i in range(32)]
    responses = post_concurrently(client, payloads)
    assert [(r.status_code, r.json()) for r in responses] == [(200, STORED)] * 32
    rows = inbox_rows(clean_engine)
    assert sorted(r.sequence for r in rows) == list(range(1, 33))
    assert {r.state for r in rows} == {"pending"}


def test_concurrent_copies_of_one_callback_are_stored_once(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """The same callback delivered 16 times at once (some re-signed) is stored once, the rest duplicates."""
    payload = signer.callback("ASRResult")
    copies = [payload if i % 2 else signer.resign(payload) for i in range(16)]
    responses = post_concurrently(client, copies)
    assert {r.status_code for r in responses} == {200}
    assert Counter(r.json()["status"] for r in responses) == {"stored": 1, "duplicate": 15}
    assert len(inbox_rows(clean_engine)) == 1


def test_callbacks_arriving_during_a_commit_share_the_next_one(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """While the database is busy, waiting callbacks queue up and are committed together, all stored."""
    writer = client.app.state.writer  # type: ignore[attr-defined]
    payloads = [signer.callback("LLMResult", {"Round": 2, "Text": f"s{i}"}) for i in range(32)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        with inbox_locked(clean_engine):
            pending = pool.submit(post_concurrently, client, payloads)
            deadline = time.monotonic() + 5  # well inside the 10 s ingest timeout
            while writer.queued() < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
        responses = pending.result(timeout=30)
    assert [(r.status_code, r.json()) for r in responses] == [(200, STORED)] * 32
    rows = inbox_rows(clean_engine)
    assert len(rows) == 32
    commits = Counter(r.received_at for r in rows)
    assert max(commits.values()) >= 8, commits


@pytest.mark.parametrize("form", ["percent-encoded", "form"])
def test_the_same_callback_in_another_encoding_is_a_duplicate_not_a_replay(
    client: TestClient, clean_engine: Engine, signer: Signer, form: str
) -> None:
    """One callback sent as JSON and again URL-encoded, same signature, is stored once and not refused."""
    payload = signer.callback("ASRResult")
    assert post(client, payload).json() == STORED
    again = post(client, payload, form)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert len(inbox_rows(clean_engine)) == 1


# What ZEGO documents as impossible is refused at the door, the same on both databases: a
# callback answered "stored" must be applicable, and Postgres would refuse these in the drain.
IMPOSSIBLE: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "room id over 128": ("ASRResult", {}, {"RoomId": "r" * 129}, "RoomId"),
    "agent user id over 64": ("ASRResult", {}, {"AgentUserId": "a" * 65}, "AgentUserId"),
    "agent name over 256": ("ASRResult", {}, {"Name": "n" * 257}, "Name"),
    "user id over 64": ("ASRResult", {"UserId": "u" * 65}, {}, "Data.UserId"),
    "status over 16": ("AgentInstanceStatus", {"Status": "S" * 17}, {}, "Data.Status"),
    "round of 2^63": ("LLMResult", {"Round": 2**63}, {}, "Data.Round"),
    "negative round": ("LLMResult", {"Round": -1}, {}, "Data.Round"),
    "round as text": ("LLMResult", {"Round": "7"}, {}, "Data.Round"),
    "code of 2^31": ("Exception", {"Code": 2**31}, {}, "Data.Code"),
    "deleted at 1e20": ("AgentInstanceDeleted", {"DeletedTimestamp": 1e20}, {}, "Data.DeletedTimestamp"),
    "created at -1e15": ("AgentInstanceCreated", {"CreatedTimestamp": -1e15}, {}, "Data.CreatedTimestamp"),
    "created after year 9999": (
        "AgentInstanceCreated",
        {"CreatedTimestamp": 253_402_300_800_000},
        {},
        "Data.CreatedTimestamp",
    ),
    "text as a number": ("ASRResult", {"Text": 42}, {}, "Data.Text"),
    "audio not base64": ("UserAudioData", {"Audio": "%%%not-base64"}, {}, "Data.Audio"),
    "sequence 1.5": ("LLMResult", {}, {"Sequence": 1.5}, "Sequence"),
    "sequence true": ("LLMResult", {}, {"Sequence": True}, "Sequence"),
    "sequence as JSON text": ("LLMResult", {}, {"Sequence": "12"}, "Sequence"),
    "app id as JSON text": ("LLMResult", {}, {"AppId": str(APP_ID)}, "AppId"),
    "app id as a float": ("LLMResult", {}, {"AppId": float(APP_ID)}, "AppId"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE), ids=list(IMPOSSIBLE))
def test_a_documented_impossibility_is_refused_naming_the_field(
    client: TestClient, clean_engine: Engine, signer: Signer, case: str
) -> None:
    """A signed callback carrying a value ZEGO never sends is 400 naming the field, and not stored."""
    event, data, top, field = IMPOSSIBLE[case]
    payload = signer.callback(event, {**EVENT_DATA[event], **data}, **top)
    response = post(client, payload)
    assert_error(response, 400, "malformed")
    assert response.json()["detail"].startswith(field + " ")
    assert inbox_rows(clean_engine) == []


def test_the_largest_documented_values_are_stored(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """Right at the bounds is still a callback: 128-character RoomId, 2^63-1 Round, int32 codes."""
    payloads = [
        signer.callback("LLMResult", {"Round": 2**63 - 1, "Text": "x"}, RoomId="r" * 128),
        signer.callback("Exception", {"Code": 2**31 - 1, "Message": "m", "Round": 0}),
        signer.callback("AgentInstanceDeleted", {"Code": 1000, "DeletedTimestamp": 253_402_300_799_999}),
    ]
    assert [post(client, p).json() for p in payloads] == [STORED] * 3


def test_numeric_strings_are_numbers_in_a_form_body(
    client: TestClient, clean_engine: Engine, signer: Signer
) -> None:
    """URL-encoded fields are text by nature: AppId, Timestamp and Sequence written as digits are taken."""
    assert post(client, signer.callback("ASRResult"), "form").json() == STORED
    assert inbox_rows(clean_engine)[0].sequence is not None


@pytest.mark.parametrize("depth", [33, 255, 1024])
def test_deep_nesting_is_bad_request(
    client: TestClient, clean_engine: Engine, signer: Signer, depth: int
) -> None:
    """A signed callback nested deeper than any ZEGO callback is 400, however deep (orjson reads 1,024
    levels but writes 254: hashing it used to crash with a 500)."""
    payload = signer.callback("AgentInstanceMetaInfo", {"Round": 1, "MetaInfo": "__deep__"})
    body = orjson.dumps(payload).replace(b'"__deep__"', b"[" * (depth - 2) + b"]" * (depth - 2))
    response = post_raw(client, body)
    assert_error(response, 400, "malformed")
    assert "nested" in response.json()["detail"]
    assert inbox_rows(clean_engine) == []


def conflicts_counted(client: TestClient) -> float:
    """roomwarden_inbox_conflicts_total as Prometheus would read it (its own parser, not ours)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "roomwarden_inbox_conflicts":
            return sum(s.value for s in family.samples if s.name == "roomwarden_inbox_conflicts_total")
    raise AssertionError("roomwarden_inbox_conflicts_total is not exposed")


@pytest.mark.parametrize("form", BODY_FORMS)
def test_a_leaked_signature_cannot_make_the_genuine_callback_vanish(
    client: TestClient, clean_engine: Engine, signer: Signer, form: str
) -> None:
    """Someone with a leaked signature stores a forged body first. The genuine callback, carrying
    that signature, is refused as a replay; ZEGO's re-signed retry then collides on the dedup key
    with other content: it is kept beside the forgery as a conflict, counted, and never applied."""
    genuine = signer.callback("ASRResult", {"UserId": "user_1", "Round": 7, "Text": "Cancel my order"})
    forged = {**genuine, "Data": {**genuine["Data"], "Text": "Upgrade me to the premium plan"}}
    before = conflicts_counted(client)
    assert post(client, forged, form).json() == STORED
    assert_error(post(client, genuine, form), 401, "replayed_signature")
    retry = signer.resign(genuine)
    assert post(client, retry, form).json() == {"status": "conflict"}
    assert post(client, signer.resign(genuine), form).json() == {"status": "conflict"}  # kept once
    assert post(client, signer.resign(forged), form).json() == DUPLICATE  # the stored one, re-signed

    rows = inbox_rows(clean_engine)
    assert [row.state for row in rows] == ["pending", "conflict"]
    assert orjson.loads(rows[1].payload)["Data"]["Text"] == "Cancel my order"
    assert rows[1].dedup_key.startswith(rows[0].dedup_key + ":conflict:")
    assert conflicts_counted(client) == before + 2


def test_a_stream_whose_drain_message_is_waiting_gets_no_second_one(
    client: TestClient, clean_engine: Engine, redis_client: redis.Redis, signer: Signer
) -> None:
    """No worker is running: the first callback's drain message waits in the queue. More
    callbacks of the same conversation add nothing to the queue (that message will find them);
    another conversation's callback gets a message of its own."""

    def queued() -> int:
        return int(redis_client.llen("roomwarden"))

    assert post(client, signer.callback("ASRResult", {"Round": 1, "Text": "hello"})).status_code == 200
    wait_until(lambda: queued() == 1, 5, "the first drain message")
    for n in range(2, 5):
        assert post(client, signer.callback("ASRResult", {"Round": n, "Text": "more"})).status_code == 200
    time.sleep(0.5)  # ten times the enqueuer's gathering interval
    assert queued() == 1
    assert post(client, signer.callback("ASRResult", instance="another")).status_code == 200
    wait_until(lambda: queued() == 2, 5, "the other conversation's message")
    assert len(inbox_rows(clean_engine)) == 5
