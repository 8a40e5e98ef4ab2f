"""GET /v1/search and GET /v1/stats (read scope): thin over worker/analysis/ (search, stats).

Both take the session filters every analyst view shares (``catalog.SessionFilter`` names), and
answer 400 ``invalid_query`` naming the parameter when one cannot be understood.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webhooks.auth import readable, sees_raw_text
from webhooks.queries import bounded, invalid_query, json, read
from worker.analysis import catalog
from worker.analysis import search as searching
from worker.analysis import stats as statistics
from worker.postcall import search as summary_search
from worker.settings import Settings


@readable
async def search(request: Request) -> Response:
    """GET /v1/search?q=&limit=1..100&context=0..10&<filters>: matching turns, best first."""
    q = request.query_params.get("q", "").strip()
    try:
        if not q:
            raise catalog.FilterError("q", "q, the text to look for, is required")
        searching.terms_of(q)
        limit = bounded(request, "limit", 20, low=1, high=searching.MAX_LIMIT)
        context = bounded(request, "context", 2, low=0, high=searching.MAX_CONTEXT)
        wanted = catalog.SessionFilter.from_query(request.query_params)
    except catalog.FilterError as exc:
        return invalid_query(exc)
    return await read(
        request,
        lambda db: json(
            {
                "query": q,
                "hits": [
                    h.as_dict()
                    for h in searching.search(
                        db, q, wanted, limit=limit, context=context, raw=sees_raw_text(request)
                    )
                ],
                # Post-call analysis summaries that match (worker/postcall/search.py).
                "summaries": summary_search.summary_matches(db, q, wanted, limit=limit),
            }
        ),
    )


@readable
async def stats(request: Request) -> Response:
    """GET /v1/stats?<filters>: volume, durations, outcomes, latency percentiles, cost, per day."""
    try:
        wanted = catalog.SessionFilter.from_query(request.query_params)
    except catalog.FilterError as exc:
        return invalid_query(exc)
    settings: Settings = request.app.state.settings
    return await read(
        request,
        lambda db: json(
            statistics.compute(db, wanted, rates=settings.cost_per_minute, currency=settings.cost_currency)
        ),
    )
