"""The API contract: a valid OpenAPI 3.1 document that names every route, a reference page that
works offline, and schemathesis holding the live app on Postgres to it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from sqlalchemy import Engine
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.processes import Stack
from tests.seeded import seed_committed
from webhooks.app import ROUTES
from webhooks.contract.openapi import document
from worker.db import make_sessionmaker
from worker.settings import Settings

# Schemathesis's checks that together say "no 5xx, and every answer is what the document says",
# and that a method a path does not serve is a 405 naming the ones it does.
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)


def test_the_document_is_valid_openapi_3_1() -> None:
    """Checked by openapi-spec-validator, not by the code that wrote it."""
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_api_route_is_in_the_document_and_nothing_else() -> None:
    served = {
        (method.lower(), route.path)
        for route in ROUTES
        if isinstance(route, Route) and route.path.startswith(("/v1/", "/callbacks/"))
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert served == documented


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/sessions/s-1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("/v1/endpoints/ep_1", {"GET", "HEAD", "PATCH", "DELETE"}),
        ("/v1/sessions", {"GET", "HEAD", "POST"}),
    ],
)
def test_a_method_a_path_does_not_serve_is_405_naming_every_one_it_does(
    client: TestClient, path: str, allowed: set[str]
) -> None:
    """Found by schemathesis: with one route per method, the 405 named only the first route's."""
    answer = client.request("PUT", path, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed


def test_the_document_is_served_and_the_reference_page_loads_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    assert client.get("/openapi.json").json() == document()
    page = client.get("/docs")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    script = client.get("/ui/static/docs.js")
    assert script.status_code == 200
    for text in (page.text, script.text):
        assert not re.search(r"https?://", text), "the reference page must work with no way out"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_contract(
    clean_engine: Engine,
    settings: Settings,
    receiver_process: Callable[..., Stack],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if clean_engine.dialect.name != "postgresql":
        pytest.skip("run against the production database")
    seeds = seed_committed(make_sessionmaker(clean_engine), settings)
    stack = receiver_process(endpoints_allow_private="true")
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    endpoint = httpx.post(f"{stack.url}/v1/endpoints", json={"url": "http://127.0.0.1:9/"}, headers=auth)
    assert endpoint.status_code == 201
    sessions = httpx.get(f"{stack.url}/v1/sessions", headers=auth).json()["sessions"]
    assert len(sessions) == len(seeds)
    # Real ids half the time, so the answers about real sessions and endpoints are checked too.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[dictionaries.sessions]\n"
        f"values = {[s['id'] for s in sessions]!r}\n"
        "[dictionaries.endpoints]\n"
        f"values = [{endpoint.json()['id']!r}]\n"
        "[parameters]\n"
        '"path.session_id" = { dictionary = "sessions", probability = 0.5 }\n'
        '"path.endpoint_id" = { dictionary = "endpoints", probability = 0.5 }\n'
    )
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{stack.url}/openapi.json",
        *("--header", f"Authorization: Bearer {API_TOKEN}"),
        *("--checks", CHECKS),
        *("--max-examples", "40", "--workers", "1", "--seed", "20261204"),
        # The live streams never end: tests/webhooks/test_events_stream.py covers them.
        *("--exclude-path-regex", "/events$"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    (tmp_path / "schemathesis.log").write_text(run.stdout)
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    with capsys.disabled():
        sys.stdout.write("\n" + summary + "\n")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + stack.logs()
