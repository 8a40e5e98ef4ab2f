"""Scopes: an analyst's read token looks at everything and changes nothing; admin does both."""

from __future__ import annotations

import redis
import structlog
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.factories import APP_ID, INSTANCE, changed, receiver_client
from worker.sessions.lifecycle import session_id_for
from worker.settings import Settings

READ_TOKEN = "analyst-read-token-4242"
SESSION_ID = session_id_for(APP_ID, INSTANCE)
READS = (
    f"/v1/sessions/{SESSION_ID}",
    f"/v1/sessions/{SESSION_ID}/transcript",
    f"/v1/sessions/{SESSION_ID}/actions",
    f"/v1/sessions/{SESSION_ID}/why",
    "/v1/actions",
)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def writes(app: TestClient, token: str) -> list[int]:
    """The status of every route that changes something, called with ``token``."""
    headers = bearer(token)
    return [
        app.post("/v1/sessions", json={"template": "x"}, headers=headers).status_code,
        app.delete(f"/v1/sessions/{SESSION_ID}", headers=headers).status_code,
        app.post(
            f"/v1/sessions/{SESSION_ID}/policy/run", json={"action": "end"}, headers=headers
        ).status_code,
    ]


def test_read_token_reads_but_cannot_start_end_or_run_policies(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """Every read route answers the read token as it answers admin; every write route says 403."""
    with receiver_client(settings, read_token=READ_TOKEN) as app:
        for path in READS:
            as_admin = app.get(path, headers=bearer(API_TOKEN))
            as_reader = app.get(path, headers=bearer(READ_TOKEN))
            assert (path, as_reader.status_code, as_reader.json()) == (
                path,
                as_admin.status_code,
                as_admin.json(),
            )
            assert as_reader.status_code != 401
        assert writes(app, READ_TOKEN) == [403, 403, 403]
        refused = app.delete(f"/v1/sessions/{SESSION_ID}", headers=bearer(READ_TOKEN)).json()
        assert refused == {"error": "forbidden", "detail": "this token has the read scope; this needs admin"}
        # The admin token reaches the same routes' own checks (a 404 or a 400, not a refusal).
        assert all(status not in (401, 403) for status in writes(app, API_TOKEN))


def test_with_only_a_read_token_configured_reads_work_and_writes_are_disabled(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """A read-only deployment (say, the analysts' replica) has no admin API at all."""
    with receiver_client(settings, api_token=None, read_token=READ_TOKEN) as app:
        assert app.get("/v1/actions", headers=bearer(READ_TOKEN)).status_code == 200
        assert writes(app, READ_TOKEN) == [503, 503, 503]
        assert app.get("/v1/actions", headers=bearer(API_TOKEN)).status_code == 401


def test_several_read_tokens_rotate(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """Comma-separated tokens are all valid, so a new one can be handed out before the old is removed."""
    with receiver_client(settings, read_token=f"old-token-1, {READ_TOKEN}") as app:
        assert app.get("/v1/actions", headers=bearer("old-token-1")).status_code == 200
        assert app.get("/v1/actions", headers=bearer(READ_TOKEN)).status_code == 200
        assert app.get("/v1/actions", headers=bearer("old-token-1, " + READ_TOKEN)).status_code == 401
        assert app.get("/v1/actions", headers=bearer("")).status_code == 401


def test_tokens_never_reach_the_log(
    settings: Settings, clean_engine: Engine, redis_client: redis.Redis
) -> None:
    """Neither the settings nor a refused request put a token into a log line."""
    with structlog.testing.capture_logs() as logs, receiver_client(settings, read_token=READ_TOKEN) as app:
        app.delete(f"/v1/sessions/{SESSION_ID}", headers=bearer(READ_TOKEN))
        app.get("/v1/actions", headers=bearer("a-wrong-token"))
    assert READ_TOKEN not in repr(logs)
    assert API_TOKEN not in repr(logs)
    assert READ_TOKEN not in repr(changed(settings, read_token=READ_TOKEN))
