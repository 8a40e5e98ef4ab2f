"""What every read endpoint shares: JSON answers, reads in a worker thread, query parameters.

One parsing path (``worker.analysis.catalog``'s ``FilterError``) and one 400 answer,
``{"error": "invalid_query", "detail": ..., "field": ...}``, whichever endpoint a client calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import anyio
import orjson
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from worker.analysis import reads
from worker.analysis.catalog import FilterError


def json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read(request: Request, fn: Callable[[DbSession], Response]) -> Response:
    """Run ``fn`` in a worker thread (the event loop never waits on SQL) with a read-only session on
    the settings' time budget (worker/analysis/reads.py), and stop it as soon as the client disconnects."""
    handle = reads.ReadHandle()
    budget = request.app.state.settings.read_timeout_seconds

    def run() -> Response:
        with reads.budgeted(request.app.state.sessions, budget, handle) as db:
            return fn(db)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        handle.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            response = await run_in_threadpool(run)
        except reads.ReadTimeout as exc:
            response = json({"error": "read_timeout", "detail": str(exc)}, status=503)
        except reads.ReadCancelled:
            response = Response(status_code=499)  # nobody listens; nginx's "client closed request"
        finally:
            tasks.cancel_scope.cancel()
    return response


def invalid_query(exc: FilterError) -> Response:
    return json({"error": "invalid_query", "detail": exc.message, "field": exc.field}, status=400)


@overload
def bounded(request: Request, name: str, default: int, *, low: int, high: int) -> int: ...
@overload
def bounded(request: Request, name: str, default: None, *, low: int, high: int) -> int | None: ...
def bounded(request: Request, name: str, default: int | None, *, low: int, high: int) -> int | None:
    """An integer parameter within [low, high], ``default`` when absent; FilterError otherwise."""
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(name, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise FilterError(name, f"{name} must be between {low} and {high}")
    return value


def choice(request: Request, name: str, allowed: Iterable[str]) -> str | None:
    """One of ``allowed``, or None when absent; FilterError naming the choices otherwise."""
    value = request.query_params.get(name)
    if not value:
        return None
    options = list(allowed)
    if value not in options:
        raise FilterError(name, f"{name} must be one of {', '.join(options)}")
    return value
