"""Optional OpenTelemetry traces of requests, tasks, SQL and vendor calls.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the ``otel`` extra is installed
(``pip install 'roomwarden[otel]'``). Then every web process traces its Starlette requests, every
worker its Celery tasks (the trace crosses from the request that published a task to the task),
and both their SQLAlchemy statements and httpx calls (ZEGO, Coze, the app's endpoints). Spans go
to the OTLP/HTTP endpoint; the standard ``OTEL_*`` variables (service name, headers, sampler)
apply as the OpenTelemetry SDK reads them.

Nothing here runs on the default path: without the variable, no OpenTelemetry module is imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

_provider: Any = None
_instrumented: list[Any] = []


def configure(service: str, *, exporter: Any = None) -> bool:
    """Start tracing in this process (once); ``exporter`` replaces OTLP (tests: in memory).

    Returns False when tracing is not wanted or the extra is not installed.
    """
    global _provider
    if _provider is not None:
        return True
    if exporter is None and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        import structlog

        structlog.get_logger(__name__).warning(
            "tracing_unavailable", detail="OTEL_EXPORTER_OTLP_ENDPOINT is set; install roomwarden[otel]"
        )
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or f"roomwarden-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    for instrumentor in (CeleryInstrumentor(), HTTPXClientInstrumentor()):  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        _instrumented.append(instrumentor)
    # Engines made from now on are traced (worker/db.py). The package declares SQLAlchemy < 2.1;
    # its event hooks are the same in 2.1, which the test of this module shows.
    sql = SQLAlchemyInstrumentor()
    sql.instrument(tracer_provider=provider, skip_dep_check=True)
    _instrumented.append(sql)
    return True


def instrument_app(app: Starlette) -> None:
    if _provider is None:
        return
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor

    StarletteInstrumentor.instrument_app(app, tracer_provider=_provider)


def shutdown() -> None:
    """Stop tracing in this process (tests; a process that exits flushes on its own)."""
    global _provider
    for instrumentor in _instrumented:
        instrumentor.uninstrument()
    _instrumented.clear()
    if _provider is not None:
        _provider.shutdown()
    _provider = None
