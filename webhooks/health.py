"""Liveness, readiness, metrics and the API document: what machines ask a web process about itself."""

from __future__ import annotations

import hmac
from functools import cache

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webhooks.contract.openapi import document
from worker.celery_app import app as celery
from worker.db import describe_failure
from worker.metrics import exposition

log = structlog.get_logger(__name__)


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document (webhooks/contract/openapi.py), built once per process."""
    return Response(_openapi_bytes(), media_type="application/json")


@cache
def _openapi_bytes() -> bytes:
    return orjson.dumps(document())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """Prometheus text format: this host's counters and the database's state (worker/metrics.py).

    Counts and ages only, never content; still, ``ROOMWARDEN_METRICS_TOKEN`` (a bearer token)
    keeps them from whoever can reach the port.
    """
    token = request.app.state.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            return JSONResponse(
                {"error": "unauthorized", "detail": "a metrics token is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    try:
        body = await run_in_threadpool(exposition, request.app.state.gauges)
    except Exception as exc:  # the database away: the counters still answer, the state says so
        log.warning("metrics_state_unavailable", error=describe_failure(exc))
        body = await run_in_threadpool(exposition, None)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


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
