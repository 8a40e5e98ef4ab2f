"""Live control routes (admin): say, interrupt, messages, PATCH a session, read the agent's context.

Thin: parse the body, then ``worker.sessions.control``'s three steps, each in its own thread
hop, no transaction open across the ZEGO call. The call is inline (the answer carries ZEGO's
Round or context), bounded by ``ROOMWARDEN_CONTROL_TIMEOUT_SECONDS``.

``Idempotency-Key`` works as on the other admin POSTs, with one addition forced by the vendor
call between two transactions: a retry arriving while the first is still at ZEGO gets ``409
in_progress``; a first request that ended ``429``/``503`` (ZEGO did not act) frees the key.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import delete, update
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webhooks import idempotency
from webhooks.api import guarded_body, json_body
from webhooks.auth import authorized
from webhooks.queries import json
from webhooks.receiver import error
from worker.db import session_scope, utcnow
from worker.models import IdempotentRequest
from worker.policies import reports
from worker.sessions import control
from worker.sessions import reading as sessions
from worker.vendors.clients import Vendors
from worker.vendors.zego.agent import ZegoAgentClient

_CLIENTS_LOCK = threading.Lock()


def _refused(exc: control.ControlError) -> Response:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    if isinstance(exc, control.UpdateInvalid):
        body["field"] = exc.field
        body["errors"] = [{"field": f, "message": m} for f, m in exc.errors]
    response = json(body, status=exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _client(request: Request, app_id: int) -> ZegoAgentClient:
    """One control client per AppId per process, on the process's shared rate limiter."""
    state = request.app.state
    with _CLIENTS_LOCK:
        if not hasattr(state, "control_clients"):
            state.control_clients = {}
            state.control_vendors = Vendors(state.settings)
        clients: dict[int, ZegoAgentClient] = state.control_clients
        if app_id not in clients:
            clients[app_id] = control.client_for(state.settings, app_id, state.control_vendors.limiter())
        return clients[app_id]


def _answer(action: dict[str, Any], outcome: control.Outcome, session_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": session_id, "action": action}
    if outcome.round is not None:
        body["round"] = outcome.round
    if outcome.messages is not None:
        body["total"] = len(outcome.messages)
        body["messages"] = [{"role": m.role, "content": m.content} for m in outcome.messages]
    return body


async def _run(request: Request, wanted: control.Control, guard: idempotency.Guard | None) -> Response:
    key = request.path_params["session_id"]
    state = request.app.state
    held: list[int] = []

    def begin() -> control.Target | Response:
        with session_scope(state.sessions) as db:
            if guard is not None:
                taken = idempotency.answered(db, guard, utcnow())
                if isinstance(taken, Response):
                    if taken.status_code == 0:
                        return error(
                            409, "in_progress", "a request with this Idempotency-Key is still running"
                        )
                    return taken
                held.append(taken)
            session = sessions.find_session(db, key)
            if session is None:
                return error(404, "not_found", "no session with that id or agent instance id")
            return control.begin(db, session, wanted, settings=state.settings, now=utcnow())

    def finish(target: control.Target, outcome: control.Outcome | control.ControlError) -> Response:
        with session_scope(state.sessions) as db:
            row = control.finish(db, target, wanted, outcome, now=utcnow(), sealer=state.sealer)
            if isinstance(outcome, control.ControlError):
                response = _refused(outcome)
            else:
                response = json(_answer(reports.action_dict(row), outcome, target.session_id))
            for taken in held:
                mine = IdempotentRequest.id == taken
                if response.status_code in (429, 503):  # ZEGO did not act: a retry goes ahead
                    db.execute(delete(IdempotentRequest).where(mine))
                else:
                    body = bytes(response.body).decode()
                    db.execute(
                        update(IdempotentRequest).where(mine).values(status=response.status_code, body=body)
                    )
            return response

    def vendor(target: control.Target) -> control.Outcome | control.ControlError:
        try:
            return control.call(_client(request, target.app_id), target, wanted)
        except control.ControlError as exc:
            return exc

    try:
        target = await run_in_threadpool(begin)
    except control.ControlError as exc:
        return _refused(exc)
    if isinstance(target, Response):
        return target
    outcome = await run_in_threadpool(vendor, target)
    return await run_in_threadpool(finish, target, outcome)


async def _parsed(request: Request, parse: Any, *, keyed: bool = True) -> Response:
    if keyed:
        asked = await guarded_body(request)
        if isinstance(asked, Response):
            return asked
        body, guard = asked
    else:
        body, guard = await json_body(request), None
        if isinstance(body, Response):
            return body
    try:
        wanted = parse(body)
    except control.ControlError as exc:
        return _refused(exc)
    return await _run(request, wanted, guard)


@authorized
async def say(request: Request) -> Response:
    """POST /v1/sessions/{id}/say: the agent speaks ``text`` verbatim (SendAgentInstanceTTS)."""
    return await _parsed(request, control.say)


@authorized
async def message(request: Request) -> Response:
    """POST /v1/sessions/{id}/messages: the agent answers ``text`` through its LLM (SendAgentInstanceLLM)."""
    return await _parsed(request, control.message)


@authorized
async def interrupt(request: Request) -> Response:
    """POST /v1/sessions/{id}/interrupt: the agent stops mid-sentence (InterruptAgentInstance); no body."""
    guard = idempotency.guard_for(request, {})
    if isinstance(guard, Response):
        return guard
    return await _run(request, control.interrupt(), guard)


@authorized
async def context(request: Request) -> Response:
    """GET /v1/sessions/{id}/context: the agent's LLM context window now (GetAgentInstanceMsgList)."""
    return await _run(request, control.context(), None)


@authorized
async def update_session(request: Request) -> Response:
    """PATCH /v1/sessions/{id}: replace the running agent's LLM / TTS / ASR (UpdateAgentInstance).

    Vendor secrets in the body go to ZEGO, and into the session's stored spec sealed (what a
    policy recreation sends), never elsewhere: the action records only which objects changed.
    """
    body = await json_body(request)
    if isinstance(body, Response):
        return body
    try:
        wanted = control.update_request(body)
    except control.ControlError as exc:
        return _refused(exc)
    return await _run(request, wanted, None)
