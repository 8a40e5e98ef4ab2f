"""Optional OpenTelemetry traces, caught by the SDK's in-memory exporter: a request and its SQL in
one trace, a task and the vendor call it makes in another."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.sinks import Sink
from worker import tracing
from worker.celery_app import app as celery
from worker.settings import Settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.configure("web") is False


def test_a_request_and_its_statements_are_one_trace(
    spans: InMemorySpanExporter, settings: Settings, clean_engine: Engine
) -> None:
    from webhooks.app import create_app

    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/sessions", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind == SpanKind.SERVER and "/v1/sessions" in s.name]
    assert server, [s.name for s in finished]
    trace_id = server[0].context.trace_id
    statements = [s for s in finished if s.kind == SpanKind.CLIENT and s.context.trace_id == trace_id]
    assert any("SELECT" in s.name or "sessions" in s.name for s in statements), [s.name for s in finished]


@celery.task(name="tests.traced_probe")
def traced_probe(url: str) -> int:
    return httpx.post(url, json={"probe": True}, timeout=5).status_code


def test_a_task_and_the_call_it_makes_are_one_trace(
    spans: InMemorySpanExporter, sinks: Callable[..., Sink]
) -> None:
    sink = sinks()
    assert traced_probe.apply(args=(sink.url,)).get() < 500
    finished = spans.get_finished_spans()
    task = [s for s in finished if "tests.traced_probe" in s.name]
    assert task, [s.name for s in finished]
    calls = [
        s for s in finished if s.kind == SpanKind.CLIENT and s.context.trace_id == task[0].context.trace_id
    ]
    assert any(s.name.startswith("POST") for s in calls), [(s.name, s.kind) for s in finished]
