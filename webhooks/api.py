"""The read API for app back ends and analysts: sessions and transcripts, behind a bearer token."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webhooks.receiver import error
from worker import provisioning, sessions, transcripts
from worker.db import session_scope, utcnow
from worker.tasks import enqueue_end, enqueue_start

Endpoint = Callable[[Request], Awaitable[Response]]


def json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def authorized(endpoint: Endpoint) -> Endpoint:
    async def wrapper(request: Request) -> Response:
        token = request.app.state.settings.api_token
        if token is None:
            return error(503, "api_disabled", "set ROOMWARDEN_API_TOKEN to enable the API")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            return error(401, "unauthorized", "a valid bearer token is required")
        return await endpoint(request)

    return wrapper


async def _read(request: Request, fn: Callable[[DbSession], Response]) -> Response:
    def run() -> Response:
        with session_scope(request.app.state.sessions) as db:
            return fn(db)

    return await run_in_threadpool(run)


@authorized
async def get_session(request: Request) -> Response:
    key = request.path_params["session_id"]

    def fn(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        return json(sessions.describe(db, session))

    return await _read(request, fn)


@authorized
async def get_transcript(request: Request) -> Response:
    key = request.path_params["session_id"]

    def fn(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        turns = transcripts.transcript(db, session.id)
        return json({"session_id": session.id, "turns": [t.as_dict() for t in turns]})

    return await _read(request, fn)


@authorized
async def list_sessions(request: Request) -> Response:
    instance = request.query_params.get("agent_instance_id")
    if not instance:
        return error(400, "missing_filter", "agent_instance_id is required")

    def fn(db: DbSession) -> Response:
        found = sessions.sessions_by_instance(db, instance)
        return json({"sessions": [sessions.describe(db, s) for s in found]})

    return await _read(request, fn)


def _invalid(exc: provisioning.RequestError) -> Response:
    return json(
        {
            "error": "invalid_request",
            "detail": exc.message,
            "field": exc.field,
            "errors": [{"field": f, "message": m} for f, m in exc.errors],
        },
        status=400,
    )


@authorized
async def create_session(request: Request) -> Response:
    """Start an agent session: stored at once, the vendor called by a worker; poll GET for the outcome."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error(400, "invalid_json", "the body must be a JSON object")
    state = request.app.state
    try:
        wanted = provisioning.parse_request(body, settings=state.settings, known_templates=state.templates)
    except provisioning.RequestError as exc:
        return _invalid(exc)
    session_id = str(uuid.uuid4())

    def store() -> Response:
        with session_scope(state.sessions) as db:
            session = provisioning.request_session(
                db, wanted, session_id=session_id, sealer=state.sealer, now=utcnow()
            )
            described = sessions.describe(db, session)
        enqueue_start(session_id)  # after the commit, or a worker may not see the row yet
        return json(described, status=202)

    try:
        return await run_in_threadpool(store)
    except provisioning.RequestError as exc:
        return _invalid(exc)


@authorized
async def delete_session(request: Request) -> Response:
    """End a session: DeleteAgentInstance (``?graceful=true`` lets the agent finish speaking)."""
    key = request.path_params["session_id"]
    graceful = request.query_params.get("graceful", "false").lower() in ("1", "true", "yes")

    def end() -> Response:
        with session_scope(request.app.state.sessions) as db:
            session = sessions.find_session(db, key)
            if session is None:
                return error(404, "not_found", "no session with that id or agent instance id")
            outcome = provisioning.request_end(db, session, now=utcnow())
            described = sessions.describe(db, session)
            session_id = session.id
        if outcome == "deleting":
            enqueue_end(session_id, graceful=graceful)
        return json(described, status=202 if outcome == "deleting" else 200)

    try:
        return await run_in_threadpool(end)
    except provisioning.RequestError as exc:
        return error(409, "cannot_end", exc.message)
