"""Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.celery_app import app as celery


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """This process's Prometheus metrics, text exposition format (no token: counts only)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return type(exc).__name__
    return None


def _check_broker() -> str | None:
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return type(exc).__name__
    return None


async def readyz(request: Request) -> Response:
    database = await run_in_threadpool(_check_database, request)
    broker = await run_in_threadpool(_check_broker)
    checks = {"database": database or "ok", "broker": broker or "ok"}
    ready = database is None and broker is None
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
