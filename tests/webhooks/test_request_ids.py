"""``X-Request-ID``: each response carries one, and the lines logged for the request name it."""

from __future__ import annotations

import orjson
import pytest
from starlette.testclient import TestClient

from tests.factories import Signer, content_type, encode_body


def test_a_request_without_an_id_gets_a_fresh_one(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert len(first) == 32 and first != second


def test_an_id_from_the_load_balancer_is_kept(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42"})
    assert response.headers["x-request-id"] == "lb-7f3a:42"


@pytest.mark.parametrize("given", ["has space", "x" * 129, "line\tbreak", ""])
def test_an_id_that_could_garble_logs_is_replaced(client: TestClient, given: str) -> None:
    returned = client.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"]
    assert returned != given and len(returned) == 32


def test_lines_logged_for_a_request_carry_its_id(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejected callback logs a warning; the warning names the request that caused it."""
    forged = Signer(secret="not-the-secret").callback("ASRResult")
    capsys.readouterr()
    response = client.post(
        "/callbacks/zego",
        content=encode_body(forged, "json"),
        headers={"content-type": content_type("json"), "X-Request-ID": "req-abc-123"},
    )
    assert response.status_code == 401 and response.headers["x-request-id"] == "req-abc-123"
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    rejected = [line for line in lines if line.get("event") == "callback_rejected"]
    assert rejected and rejected[0]["request_id"] == "req-abc-123"
    # ...and the next request's lines do not.
    client.get("/healthz")
    assert "req-abc-123" not in capsys.readouterr().err
