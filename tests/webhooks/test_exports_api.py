"""GET /v1/exports/{kind}.{format} as an analyst's script uses it: a read token, filters, a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select, text, update
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.processes import Stack, stack_env
from tests.seeded import SEEDS, seed_committed
from tests.worker.analysis.test_exports import expected_turns, parse
from webhooks.app import create_app
from worker.analysis import exports
from worker.db import make_sessionmaker
from worker.models import Session, Turn
from worker.settings import Settings

READ_TOKEN = "test-read-token-0123456789"
READ = {"authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture
def reader(settings: Settings, clean_engine: Engine) -> Iterator[TestClient]:
    """The real app over the committed seed, with a read token configured beside the admin one."""
    with_read = settings.model_copy(update={"read_token": SecretStr(READ_TOKEN)})
    seed_committed(make_sessionmaker(clean_engine), with_read)
    with TestClient(create_app(with_read)) as client:
        yield client


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("jsonl", "application/x-ndjson"),
        ("csv", "text/csv; charset=utf-8"),
        ("parquet", "application/vnd.apache.parquet"),
    ],
)
def test_a_read_token_downloads_every_turn_as_an_attachment(
    reader: TestClient, fmt: str, media_type: str
) -> None:
    """Each format comes with its content type and a file name, and holds every seeded turn."""
    response = reader.get(f"/v1/exports/turns.{fmt}", headers=READ)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["content-disposition"] == f'attachment; filename="roomwarden-turns.{fmt}"'
    assert parse("turns", fmt, response.content) == expected_turns(SEEDS)


def test_filters_in_the_query_narrow_the_export(reader: TestClient) -> None:
    """?has_exceptions=true&app_id=... exports only those sessions, as the session list would show."""
    response = reader.get(
        "/v1/exports/sessions.csv",
        params={"has_exceptions": "true", "app_id": str(SEEDS[0].app_id)},
        headers=READ,
    )
    assert response.status_code == 200
    wanted = sorted((s for s in SEEDS if s.exceptions and s.app_id == SEEDS[0].app_id), key=lambda s: s.start)
    assert [r["id"] for r in parse("sessions", "csv", response.content)] == [s.session_id for s in wanted]


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_the_sessions_export_carries_time_with_no_user(
    reader: TestClient, clean_engine: Engine, fmt: str
) -> None:
    """A script downloading sessions gets 12.5 billed seconds with no user for the one session a
    room callback told about, and an empty value, not 0, for the others."""
    told = SEEDS[3].session_id
    with make_sessionmaker(clean_engine)() as db, db.begin():
        db.execute(update(Session).where(Session.id == told).values(no_user_seconds=12.5))
    response = reader.get(f"/v1/exports/sessions.{fmt}", headers=READ)
    assert response.status_code == 200, response.text
    got = {r["id"]: r["no_user_seconds"] for r in parse("sessions", fmt, response.content)}
    assert got == {s.session_id: 12.5 if s.session_id == told else None for s in SEEDS}


def test_the_admin_token_may_export_too(reader: TestClient) -> None:
    """Admin is a wider scope than read."""
    response = reader.get("/v1/exports/sessions.jsonl", headers={"authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200
    assert len(parse("sessions", "jsonl", response.content)) == len(SEEDS)


def test_no_token_no_export(reader: TestClient) -> None:
    """Without a valid bearer token an export is refused with 401."""
    assert reader.get("/v1/exports/turns.csv").status_code == 401
    assert reader.get("/v1/exports/turns.csv", headers={"authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"min_turns": "many"}, "min_turns"),
        ({"has_interruptions": "maybe"}, "has_interruptions"),
        ({"provider": "acme"}, "provider"),
        ({"hass_interruptions": "true"}, "hass_interruptions"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(reader: TestClient, query: dict[str, str], field: str) -> None:
    """A filter that cannot be understood (or a misspelt one) is refused before any byte is sent."""
    response = reader.get("/v1/exports/turns.jsonl", params=query, headers=READ)
    assert response.status_code == 400
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_query", field)


@pytest.mark.parametrize(
    "path", ["/v1/exports/events.csv", "/v1/exports/turns.xlsx", "/v1/exports/turns.json"]
)
def test_an_unknown_kind_or_format_is_a_404(reader: TestClient, path: str) -> None:
    """There is no such export: 404, with the choices in the detail."""
    response = reader.get(path, headers=READ)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_a_client_that_leaves_mid_export_frees_its_database_connection(
    reader: TestClient, spec_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's session closes as soon as the client goes away, not when the collector gets to it.

    ASGI 2.3 servers (uvicorn) report the disconnect through ``receive``; 2.4 ones make ``send``
    fail. Either way the connection is back in the pool when the response returns.
    """
    monkeypatch.setattr(exports, "CHUNK_BYTES", 1)  # a chunk per row: plenty left when it leaves
    app: Starlette = reader.app  # type: ignore[assignment]
    engine: Engine = app.state.engine
    chunks: list[bytes] = []

    async def run() -> None:
        first_chunk = anyio.Event()

        async def receive() -> dict[str, Any]:
            if spec_version == "2.3":
                await first_chunk.wait()
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                chunks.append(message["body"])
                if len(chunks) == 1:
                    first_chunk.set()
                    # Let the iterator be busy in its thread when the disconnect lands.
                    await anyio.sleep(0.05)
                elif spec_version == "2.4":
                    raise OSError("connection reset by peer")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": spec_version},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/v1/exports/turns.jsonl",
            "raw_path": b"/v1/exports/turns.jsonl",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"authorization", READ["authorization"].encode())],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "state": {},
        }
        if spec_version == "2.4":
            with pytest.raises(ClientDisconnect):
                await app(scope, receive, send)  # type: ignore[arg-type]
        else:
            await app(scope, receive, send)  # type: ignore[arg-type]
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    reader.portal.call(run)  # type: ignore[union-attr]
    total = sum(s.turns for s in SEEDS)
    assert 1 <= len(chunks) < total


@pytest.fixture
def served(tmp_path: Path, database_url: str, settings: Settings, clean_engine: Engine) -> Iterator[Stack]:
    """A real uvicorn over the seed, so what the client sees is what goes over the wire."""
    seed_committed(make_sessionmaker(clean_engine), settings)
    env = {**stack_env(database_url, "redis://127.0.0.1:1/0"), "ROOMWARDEN_READ_TOKEN": READ_TOKEN}
    stack = Stack(tmp_path, env)
    stack.start_receiver()
    yield stack
    stack.stop()


def break_the_last_session(engine: Engine) -> None:
    """Thousands of turns in the first session, then a turn no driver can read in the last one (a
    time past year 9999: 'infinity' on Postgres, garbage text on SQLite): the failure comes after
    the first rows have been sent."""
    first, last = sorted(SEEDS, key=lambda s: s.start)[0], sorted(SEEDS, key=lambda s: s.start)[-1]
    with engine.begin() as conn:
        instance = conn.execute(
            select(Turn.instance_id).where(Turn.session_id == first.session_id).limit(1)
        ).scalar_one()
        conn.execute(
            insert(Turn),
            [
                {"session_id": first.session_id, "instance_id": instance, "round": 10_000 + n, "speaker": "user",
                 "text": f"filler turn number {n} " * 3, "interrupted": False}
                for n in range(3000)
            ],
        )  # fmt: skip
        broken = "'infinity'" if engine.dialect.name == "postgresql" else "'not a time'"
        conn.execute(
            text(f"UPDATE turns SET spoken_at = {broken} WHERE session_id = :id"), {"id": last.session_id}
        )


def download(url: str) -> tuple[int, bytes, Exception | None]:
    """Status, body and the error that ended it (None for a clean end), as a script would save it."""
    status, received = 0, bytearray()
    try:
        with httpx.stream("GET", url, headers=READ, timeout=30) as response:
            status = response.status_code
            for chunk in response.iter_raw():
                received += chunk
    except httpx.RemoteProtocolError as exc:
        return status, bytes(received), exc
    return status, bytes(received), None


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_an_export_that_fails_midway_cannot_pass_for_a_whole_file(
    served: Stack, clean_engine: Engine, fmt: str
) -> None:
    """The status went out with the first rows; the failure still reaches the client: the HTTP body
    ends without its last chunk (an error to every HTTP client), and JSON Lines ends with a trailer."""
    break_the_last_session(clean_engine)
    status, received, failure = download(f"{served.url}/v1/exports/turns.{fmt}")
    assert status == 200
    assert isinstance(failure, httpx.RemoteProtocolError), "the body ended as if it were whole"
    if fmt != "parquet":  # Parquet holds a row group (10,000 rows) before its first byte
        assert len(received) > exports.CHUNK_BYTES  # rows before the failure did arrive
    if fmt == "jsonl":
        *rows, last = received.decode().splitlines()
        assert orjson.loads(last)["error"] == "export_failed"
        assert all("error" not in orjson.loads(row) for row in rows)
    logged = served.receiver.output()
    assert "export_failed" in logged
    assert "not a time" not in logged  # the log names the error, never the data
