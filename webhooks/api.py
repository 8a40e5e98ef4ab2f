"""The read API for app back ends and analysts: sessions and transcripts, behind a bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webhooks.receiver import error
from worker import sessions, transcripts
from worker.db import session_scope

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
