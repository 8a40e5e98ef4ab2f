"""GET /v1/search and GET /v1/stats (read scope): thin over worker/search.py and worker/stats.py.

Both take the session filters every analyst view shares (``catalog.SessionFilter`` names), and
answer 400 ``invalid_query`` naming the parameter when one cannot be understood.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhooks.api import _read, json
from webhooks.auth import readable
from worker import catalog
from worker import search as searching
from worker import stats as statistics
from worker.settings import Settings


def _invalid(exc: catalog.FilterError) -> Response:
    return json({"error": "invalid_query", "detail": exc.message, "field": exc.field}, status=400)


def _bounded(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise catalog.FilterError(name, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise catalog.FilterError(name, f"{name} must be between {low} and {high}")
    return value


@readable
async def search(request: Request) -> Response:
    """GET /v1/search?q=&limit=1..100&context=0..10&<filters>: matching turns, best first."""
    q = request.query_params.get("q", "").strip()
    try:
        if not q:
            raise catalog.FilterError("q", "q, the text to look for, is required")
        limit = _bounded(request, "limit", 20, low=1, high=searching.MAX_LIMIT)
        context = _bounded(request, "context", 2, low=0, high=searching.MAX_CONTEXT)
        wanted = catalog.SessionFilter.from_query(request.query_params)
    except catalog.FilterError as exc:
        return _invalid(exc)
    return await _read(
        request,
        lambda db: json(
            {
                "query": q,
                "hits": [h.as_dict() for h in searching.search(db, q, wanted, limit=limit, context=context)],
            }
        ),
    )


@readable
async def stats(request: Request) -> Response:
    """GET /v1/stats?<filters>: volume, durations, outcomes, latency percentiles, cost, per day."""
    try:
        wanted = catalog.SessionFilter.from_query(request.query_params)
    except catalog.FilterError as exc:
        return _invalid(exc)
    settings: Settings = request.app.state.settings
    return await _read(
        request,
        lambda db: json(
            statistics.compute(db, wanted, rates=settings.cost_per_minute, currency=settings.cost_currency)
        ),
    )
