"""The app's endpoints for events (admin scope): register, change, rotate, test, replay, inspect.

Each route is a few lines around one ``worker.events`` call. A secret appears in full only in
the answers to POST /v1/endpoints and POST .../rotate-secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webhooks import idempotency
from webhooks.api import guarded_body, json_body
from webhooks.auth import authorized
from webhooks.queries import bounded, choice, invalid_query, json, read
from webhooks.receiver import error
from worker.analysis import catalog
from worker.db import session_scope, utcnow
from worker.events import endpoints, history
from worker.models import DeliveryState, Endpoint
from worker.tasks import enqueue_delivery


def _invalid(exc: endpoints.EndpointError) -> Response:
    return json({"error": "invalid_request", "detail": exc.message, "field": exc.field}, status=400)


def _not_found() -> Response:
    return error(404, "not_found", "no endpoint with that id")


async def _write(request: Request, fn: Callable[[DbSession], Response]) -> Response:
    """Run ``fn`` in a worker thread, in one transaction committed before the answer goes out."""

    def run() -> Response:
        with session_scope(request.app.state.sessions) as db:
            return fn(db)

    return await run_in_threadpool(run)


def _with_endpoint(
    request: Request, fn: Callable[[DbSession, Endpoint], Response]
) -> Callable[[DbSession], Response]:
    def found(db: DbSession) -> Response:
        endpoint = endpoints.find(db, request.path_params["endpoint_id"])
        return _not_found() if endpoint is None else fn(db, endpoint)

    return found


async def _changes(request: Request, *, creating: bool) -> endpoints.Changes | Response:
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    return await _parsed(request, body, creating=creating)


async def _parsed(request: Request, body: Any, *, creating: bool) -> endpoints.Changes | Response:
    allow = request.app.state.settings.endpoints_allow_private
    try:
        # Resolving the host blocks: off the event loop.
        return await run_in_threadpool(lambda: endpoints.parse(body, creating=creating, allow_private=allow))
    except endpoints.EndpointError as exc:
        return _invalid(exc)


@authorized
async def create_endpoint(request: Request) -> Response:
    """POST /v1/endpoints {"url", "events"?, "app_id"?, "description"?}: 201, the secret shown once.

    Under an Idempotency-Key the replayed answer shows the secret again: it is the same answer."""
    asked = await guarded_body(request)
    if isinstance(asked, Response):
        return asked
    body, guard = asked
    wanted = await _parsed(request, body, creating=True)
    if isinstance(wanted, Response):
        return wanted
    sealer = request.app.state.sealer

    def create(db: DbSession) -> Response:
        endpoint, secret = endpoints.create(db, wanted, sealer=sealer, now=utcnow())
        return json(endpoints.describe(endpoint, secret), status=201)

    return await _write(request, idempotency.guarded(guard, create))


@authorized
async def list_endpoints(request: Request) -> Response:
    return await read(
        request, lambda db: json({"endpoints": [endpoints.describe(e) for e in endpoints.listed(db)]})
    )


@authorized
async def get_endpoint(request: Request) -> Response:
    return await read(request, _with_endpoint(request, lambda db, e: json(endpoints.describe(e))))


@authorized
async def update_endpoint(request: Request) -> Response:
    """PATCH /v1/endpoints/{id}: url, events, app_id, description, enabled (true re-enables)."""
    changes = await _changes(request, creating=False)
    if isinstance(changes, Response):
        return changes

    def update(db: DbSession, endpoint: Endpoint) -> Response:
        endpoints.update(endpoint, changes, now=utcnow())
        return json(endpoints.describe(endpoint))

    return await _write(request, _with_endpoint(request, update))


@authorized
async def delete_endpoint(request: Request) -> Response:
    """Its pending deliveries go with it."""

    def delete(db: DbSession, endpoint: Endpoint) -> Response:
        db.delete(endpoint)
        return Response(status_code=204)

    return await _write(request, _with_endpoint(request, delete))


@authorized
async def rotate_secret(request: Request) -> Response:
    """A new secret, shown once; the old one keeps signing beside it for 24 hours."""
    sealer = request.app.state.sealer

    def rotate(db: DbSession, endpoint: Endpoint) -> Response:
        secret = endpoints.rotate(endpoint, sealer=sealer, now=utcnow())
        return json(endpoints.describe(endpoint, secret))

    return await _write(request, _with_endpoint(request, rotate))


@authorized
async def test_endpoint(request: Request) -> Response:
    """Send an ``endpoint.test`` event to this endpoint now; 202 and the delivery to follow."""
    guard = idempotency.guard_for(request, None)
    if isinstance(guard, Response):
        return guard
    sent: dict[str, Any] = {}

    def test(db: DbSession, endpoint: Endpoint) -> Response:
        if not endpoint.enabled:
            return error(409, "endpoint_disabled", f"the endpoint is disabled: {endpoint.disabled_reason}")
        delivery_id = history.send_test(db, endpoint, now=utcnow())
        sent["endpoint"] = endpoint.id
        db.flush()
        shown = history.detail(db, endpoint.id, delivery_id)
        return json(shown, status=202)

    response = await _write(request, idempotency.guarded(guard, _with_endpoint(request, test)))
    if sent:
        enqueue_delivery(sent["endpoint"])  # after the commit: the sender must see the row
    return response


@authorized
async def list_deliveries(request: Request) -> Response:
    """GET /v1/endpoints/{id}/deliveries?state=pending|succeeded|failed&limit=&before="""
    try:
        state = choice(request, "state", (s.value for s in DeliveryState))
        limit = bounded(request, "limit", 50, low=1, high=500)
        before = bounded(request, "before", None, low=1, high=2**63 - 1)
    except catalog.FilterError as exc:
        return invalid_query(exc)

    def page(db: DbSession, endpoint: Endpoint) -> Response:
        found = history.listed(db, endpoint.id, state=state, limit=limit, before=before)
        next_before = found[-1]["id"] if len(found) == limit else None
        return json({"deliveries": found, "next_before": next_before})

    return await read(request, _with_endpoint(request, page))


@authorized
async def get_delivery(request: Request) -> Response:
    """One delivery with the event it carries and every attempt (status, time, latency, excerpt)."""
    raw = request.path_params["delivery_id"]
    # Ids are 64-bit: anything else (not a number, or past 2**63 - 1) names no delivery.
    delivery_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else 0
    if not 1 <= delivery_id <= 2**63 - 1:
        return error(404, "not_found", "no delivery with that id")

    def show(db: DbSession, endpoint: Endpoint) -> Response:
        found = history.detail(db, endpoint.id, delivery_id)
        return error(404, "not_found", "no delivery with that id") if found is None else json(found)

    return await read(request, _with_endpoint(request, show))


@authorized
async def replay(request: Request) -> Response:
    """POST /v1/endpoints/{id}/replay {"since", "until"?, "types"?}: the window's events sent again."""
    asked = await guarded_body(request)
    if isinstance(asked, Response):
        return asked
    body, guard = asked
    try:
        window = _window(body)
    except catalog.FilterError as exc:
        return json({"error": "invalid_request", "detail": exc.message, "field": exc.field}, status=400)
    replayed: dict[str, int] = {}

    def run(db: DbSession, endpoint: Endpoint) -> Response:
        count = history.replay(db, endpoint, **window, now=utcnow())
        replayed[endpoint.id] = count
        return json({"endpoint_id": endpoint.id, "replayed": count}, status=202)

    response = await _write(request, idempotency.guarded(guard, _with_endpoint(request, run)))
    for endpoint_id, count in replayed.items():
        if count:
            enqueue_delivery(endpoint_id)
    return response


def _window(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise catalog.FilterError("body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"since", "until", "types"})
    if unknown:
        raise catalog.FilterError(unknown[0], "unknown field; expected since, until, types")
    since, until, types = body.get("since"), body.get("until"), body.get("types")
    if not isinstance(since, str):
        raise catalog.FilterError("since", "since is required: an ISO 8601 time")
    if until is not None and not isinstance(until, str):
        raise catalog.FilterError("until", "until must be an ISO 8601 time")
    if types is not None:
        try:
            types = endpoints.patterns(types)
        except endpoints.EndpointError as exc:
            raise catalog.FilterError("types", exc.message) from None
    return {
        "since": catalog.parse_time("since", since),
        "until": catalog.parse_time("until", until) if until else None,
        "types": types,
    }
