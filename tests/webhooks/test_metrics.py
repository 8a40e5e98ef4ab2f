"""``/metrics`` as an operator's Prometheus sees it: parsed by prometheus_client, linted by promtool."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.conftest import REDIS_URL
from tests.factories import Signer, apply_pending, encode_body, receiver_client
from tests.processes import Stack, stack_env, wait_until
from worker.db import make_sessionmaker, session_scope
from worker.settings import Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def post(client: TestClient | httpx.Client, payload: dict[str, object]) -> int:
    response = client.post(
        "/callbacks/zego", content=encode_body(payload), headers={"content-type": "application/json"}
    )
    return response.status_code


def test_callbacks_are_counted_by_outcome_and_the_inbox_backlog_is_read_from_the_database(
    client: TestClient, clean_engine: Engine, signer: Signer, settings: Settings
) -> None:
    before = scrape(client.get("/metrics").text)
    first = signer.callback("ASRResult", {"UserId": "u1", "Round": 1, "Text": "hello"})
    assert post(client, first) == 200
    assert post(client, first) == 200  # ZEGO's retry: a duplicate
    assert post(client, signer.callback("AgentInstanceCreated")) == 200
    assert post(client, Signer(secret="forged").callback("ASRResult")) == 401
    time.sleep(0.05)
    after = scrape(client.get("/metrics").text)

    def delta(outcome: str) -> float:
        name = "roomwarden_callbacks_received_total"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (delta("stored"), delta("duplicate"), delta("rejected")) == (2, 1, 1)
    assert value(after, "roomwarden_inbox_pending") == 2  # no worker in this test
    assert value(after, "roomwarden_inbox_oldest_pending_seconds") > 0
    assert value(after, "roomwarden_inbox_failed") == 0

    with session_scope(make_sessionmaker(clean_engine)) as db:
        apply_pending(db, settings)
    applied = scrape(client.get("/metrics").text)
    assert value(applied, "roomwarden_inbox_pending") == 0
    assert value(applied, "roomwarden_inbox_oldest_pending_seconds") == 0
    assert value(applied, "roomwarden_sessions", state="active") == 1
    assert value(applied, "roomwarden_agent_slots_in_use", app_id=str(signer.app_id), kind="voice") == 1
    assert value(applied, "roomwarden_agent_slots_limit", app_id=str(signer.app_id), kind="voice") > 0
    assert value(applied, "roomwarden_outbound_pending") == 0


def test_a_metrics_token_keeps_them_from_whoever_reaches_the_port(
    settings: Settings, clean_engine: Engine
) -> None:
    with receiver_client(settings, metrics_token="scrape-me") as app:
        assert app.get("/metrics").status_code == 401
        assert app.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = app.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert allowed.status_code == 200 and "roomwarden_inbox_pending" in allowed.text


def test_promtool_finds_nothing_wrong_with_the_exposition(client: TestClient, signer: Signer) -> None:
    """Prometheus's own linter, not our parser: names, types, units, help text."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    post(client, signer.callback("AgentInstanceCreated"))
    text = client.get("/metrics").text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_one_scrape_sums_the_receiver_and_the_worker_processes(
    clean_engine: Engine, database_url: str, tmp_path: Path, signer: Signer
) -> None:
    """The apply lag is observed in the worker's pool processes; the receiver's /metrics shows it
    (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR shared on the host)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**stack_env(database_url, REDIS_URL), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    stack = Stack(tmp_path, env)
    sent = [signer.callback("AgentInstanceCreated")] + [
        signer.callback("ASRResult", {"UserId": "u1", "Round": n, "Text": f"line {n}"}) for n in range(1, 20)
    ]
    try:
        stack.start_receiver()
        stack.worker.start()
        with httpx.Client(base_url=stack.url, timeout=10) as http:
            assert all(post(http, payload) == 200 for payload in sent)

            def applied() -> bool:
                samples = scrape(http.get("/metrics").text)
                return value(samples, "roomwarden_apply_lag_seconds_count") == len(sent)

            wait_until(applied, 30, "the worker's apply lag to show in the receiver's /metrics")
            samples = scrape(http.get("/metrics").text)
    finally:
        stack.stop()
    assert value(samples, "roomwarden_callbacks_received_total", outcome="stored") == len(sent)
    assert value(samples, "roomwarden_inbox_pending") == 0
    assert value(samples, "roomwarden_apply_lag_seconds_bucket", le="+Inf") == len(sent)
