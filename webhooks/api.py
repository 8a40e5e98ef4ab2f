"""The API for app back ends and analysts: sessions, transcripts, policy actions; bearer token."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy.orm import Session as DbSession
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from webhooks import idempotency
from webhooks.auth import authorized, readable, sees_raw_text
from webhooks.queries import bounded, choice, invalid_query, json, read
from webhooks.receiver import BodyTimeout, BodyTooLarge, error, read_body
from worker.analysis import catalog, detail, transcript_formats
from worker.db import session_scope, utcnow
from worker.inbox.callbacks import MAX_DEPTH, MalformedCallback, check_depth
from worker.models import ActionKind, ActionState, Provider
from worker.policies import quotas, reports
from worker.policies.config import PolicyBook
from worker.sessions import reading as sessions
from worker.sessions import repair, requesting, transcripts
from worker.tasks import enqueue_actions, enqueue_end, enqueue_start


@readable
async def get_session(request: Request) -> Response:
    """One session in full: what it is, its summary, timeline, per-round latency and actions."""
    key = request.path_params["session_id"]

    def fn(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        return json(detail.session_detail(db, session))

    return await read(request, fn)


TRANSCRIPT_TYPES = {"json": "application/json", "text": "text/plain", "vtt": "text/vtt"}


def _transcript_format(request: Request) -> str:
    """``?format=`` wins; else the first of text/vtt or text/plain the Accept header names; else JSON."""
    asked = request.query_params.get("format")
    if asked:
        if asked not in TRANSCRIPT_TYPES:
            raise catalog.FilterError("format", f"format must be one of {', '.join(TRANSCRIPT_TYPES)}")
        return asked
    for part in request.headers.get("accept", "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/json":
            return "json"
        if media == "text/vtt":
            return "vtt"
        if media == "text/plain":
            return "text"
    return "json"


@readable
async def get_transcript(request: Request) -> Response:
    """GET /v1/sessions/{id}/transcript?format=json|text|vtt (or Accept: text/vtt, text/plain)."""
    key = request.path_params["session_id"]
    try:
        fmt = _transcript_format(request)
    except catalog.FilterError as exc:
        return invalid_query(exc)

    def fn(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        turns = transcripts.transcript(db, session.id, raw=sees_raw_text(request))
        start = session.started_at or session.created_at
        if fmt == "json":
            rounds = repair.round_statuses(db, session.id)
            return json(transcript_formats.as_json(session.id, turns, start, rounds))
        body = (
            transcript_formats.as_text(turns, start)
            if fmt == "text"
            else transcript_formats.as_webvtt(turns, start)
        )
        return Response(body, media_type=f"{TRANSCRIPT_TYPES[fmt]}; charset=utf-8")

    return await read(request, fn)


@readable
async def list_sessions(request: Request) -> Response:
    """GET /v1/sessions?<filters>&sort=started_at|duration&order=desc|asc&limit=1..500&cursor="""
    params = request.query_params
    try:
        wanted = catalog.SessionFilter.from_query(params)
        limit = bounded(request, "limit", 50, low=1, high=catalog.MAX_LIMIT)
    except catalog.FilterError as exc:
        return invalid_query(exc)

    def fn(db: DbSession) -> Response:
        try:
            page = catalog.list_sessions(
                db,
                wanted,
                sort=params.get("sort") or "started_at",
                order=params.get("order") or "desc",
                limit=limit,
                cursor=params.get("cursor") or None,
            )
        except catalog.FilterError as exc:
            return invalid_query(exc)
        return json({"sessions": page.sessions, "next_cursor": page.next_cursor})

    return await read(request, fn)


def _invalid(exc: requesting.RequestError) -> Response:
    return json(
        {
            "error": "invalid_request",
            "detail": exc.message,
            "field": exc.field,
            "errors": [{"field": f, "message": m} for f, m in exc.errors],
        },
        status=400,
    )


async def json_body(request: Request) -> Any:
    """The request's JSON, or the error Response to answer instead: bounded like callbacks
    (413 past ``ROOMWARDEN_MAX_BODY_BYTES``, 400 past the nesting any spec needs)."""
    limit = request.app.state.settings.max_body_bytes
    try:
        body = orjson.loads(await read_body(request, limit))
        check_depth(body)
    except BodyTooLarge:
        return error(413, "body_too_large", f"body exceeds {limit} bytes")
    except BodyTimeout:
        return error(408, "body_timeout", "body not received in time")
    except ClientDisconnect:
        return error(400, "client_disconnected", "request body was not received in full")
    except (orjson.JSONDecodeError, MalformedCallback):
        return error(400, "invalid_json", f"the body must be a JSON object nested at most {MAX_DEPTH} levels")
    return body


async def guarded_body(request: Request) -> tuple[Any, idempotency.Guard | None] | Response:
    """The JSON body and its Idempotency-Key guard (None without the header), or the error answer."""
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    guard = idempotency.guard_for(request, body)
    return guard if isinstance(guard, Response) else (body, guard)


@authorized
async def create_session(request: Request) -> Response:
    """Start an agent session: stored at once, the vendor called by a worker; poll GET for the outcome."""
    asked = await guarded_body(request)
    if isinstance(asked, Response):
        return asked
    body, guard = asked
    state = request.app.state
    try:
        wanted = requesting.parse_request(body, settings=state.settings, known_templates=state.templates)
    except requesting.RequestError as exc:
        return _invalid(exc)
    session_id = str(uuid.uuid4())

    def create(db: DbSession) -> Response:
        live = _duplicate_coze_room(db, wanted, state.policies)
        if live is not None:
            return json(
                {
                    "error": "duplicate_room",
                    "detail": f"session {live} is a live Coze room for this uid and bot_id; "
                    "end it or use it (coze.one_room_window_seconds)",
                    "session_id": live,
                },
                status=409,
            )
        session = requesting.request_session(
            db, wanted, session_id=session_id, sealer=state.sealer, now=utcnow()
        )
        return json(sessions.describe(db, session), status=202)

    def store() -> Response:
        with session_scope(state.sessions) as db:
            response, fresh = idempotency.once(db, guard, lambda: create(db))
        if fresh and response.status_code == 202:
            enqueue_start(session_id)  # after the commit, or a worker may not see the row yet
        return response

    try:
        return await run_in_threadpool(store)
    except requesting.RequestError as exc:
        return _invalid(exc)


def _duplicate_coze_room(db: DbSession, wanted: requesting.SessionRequest, book: PolicyBook) -> str | None:
    """The cost guard: Coze bills every room from creation, three minutes at least."""
    if wanted.provider is not Provider.COZE or not wanted.params.get("uid"):
        return None  # without a uid every request is a different user
    policy = book.for_session(wanted.app_id, wanted.template)
    live = quotas.duplicate_coze_room(
        db, str(wanted.params["uid"]), str(wanted.params.get("bot_id")), policy, utcnow()
    )
    return live.id if live is not None else None


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
            outcome = requesting.request_end(db, session, now=utcnow())
            described = sessions.describe(db, session)
            session_id = session.id
        if outcome == "deleting":
            enqueue_end(session_id, graceful=graceful)
        return json(described, status=202 if outcome == "deleting" else 200)

    try:
        return await run_in_threadpool(end)
    except requesting.RequestError as exc:
        return error(409, "cannot_end", exc.message)


# --- Policy actions: what the policies decided, why a session ended, running one by hand. ---


def _page(db: DbSession, request: Request, session_id: str | None) -> Response:
    """One page of actions, newest first; ``next_before`` is the cursor for the next page."""
    try:
        limit = bounded(request, "limit", 50, low=1, high=500)
        since = request.query_params.get("since")
        asked_session = request.query_params.get("session_id")
        reason = request.query_params.get("reason")
        found = reports.list_actions(
            db,
            session_id=session_id
            or (catalog.text_value("session_id", asked_session) if asked_session else None),
            state=choice(request, "state", (m.value for m in ActionState)),
            kind=choice(request, "action", (m.value for m in ActionKind)),
            reason=catalog.text_value("reason", reason) if reason else None,
            since=catalog.parse_time("since", since) if since else None,
            limit=limit,
            before_id=bounded(request, "before", None, low=1, high=2**63 - 1),
        )
    except catalog.FilterError as exc:
        return invalid_query(exc)
    body: dict[str, Any] = {"actions": [reports.action_dict(a) for a in found]}
    if session_id is not None:
        body["session_id"] = session_id
    body["next_before"] = found[-1].id if len(found) == limit else None
    return json(body)


@readable
async def list_actions(request: Request) -> Response:
    """GET /v1/actions?session_id=&state=&action=&reason=&since=&limit=&before="""
    return await read(request, lambda db: _page(db, request, None))


def _about_session(
    request: Request, fn: Callable[[DbSession, Any], Response]
) -> Callable[[DbSession], Response]:
    key = request.path_params["session_id"]

    def found(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        return fn(db, session)

    return found


@readable
async def session_actions(request: Request) -> Response:
    return await read(request, _about_session(request, lambda db, s: _page(db, request, s.id)))


@readable
async def session_why(request: Request) -> Response:
    """Why the session is in its state: the deciding action, or the vendor's deletion code."""
    return await read(request, _about_session(request, lambda db, s: json(reports.why(db, s))))


@readable
async def session_policy(request: Request) -> Response:
    """The session's resolved policy and what each rule would decide now; records nothing."""
    book = request.app.state.policies
    return await read(
        request, _about_session(request, lambda db, s: json(reports.explain(db, s, book, utcnow())))
    )


@authorized
async def run_policy(request: Request) -> Response:
    """Run a policy action by hand: 202 and the action (200 when a dry-run policy only records it)."""
    asked = await guarded_body(request)
    if isinstance(asked, Response):
        return asked
    body, guard = asked
    what = body.get("action") if isinstance(body, dict) else None
    if what not in reports.MANUAL_ACTIONS:
        return json(
            {
                "error": "invalid_request",
                "detail": f"action must be one of {', '.join(reports.MANUAL_ACTIONS)}",
                "field": "action",
            },
            status=400,
        )
    state = request.app.state
    key = request.path_params["session_id"]
    pending: list[tuple[int, float]] = []

    def decide(db: DbSession) -> Response:
        session = sessions.find_session(db, key)
        if session is None:
            return error(404, "not_found", "no session with that id or agent instance id")
        try:
            action = reports.run_by_hand(db, session, state.policies, utcnow(), str(what))
        except reports.ManualError as exc:
            return error(409, "cannot_run", str(exc))
        shown = reports.action_dict(action)
        if shown["state"] == ActionState.PENDING:
            pending.append((shown["id"], 0.0))
            return json(shown, status=202)
        return json(shown)

    def run() -> Response:
        with session_scope(state.sessions) as db:
            response, _ = idempotency.once(db, guard, lambda: decide(db))
        enqueue_actions(pending)  # after the commit, or a worker may not see the row
        return response

    return await run_in_threadpool(run)
