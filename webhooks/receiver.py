"""``POST /callbacks/zego`` and ``POST /callbacks/zego-rtc``: verify, store durably, answer.

Never a vendor call on this path. The AI Agent's callbacks and the RTC room callbacks
(``room_login``, ``room_logout``, ``stream_create``, ``stream_close``) differ in field names and
in what orders them, not in trust: both go through the same signature check, replay guard and
inbox, and are applied by the drain (rooms by worker/sessions/rooms.py).

Status codes are what ZEGO's retry logic needs: 200 once the callback is stored (or was
already), 503 when the database cannot store it (ZEGO retries 5 times over about a minute),
and 4xx for requests that no retry will fix.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from webhooks.ingest import StorageUnavailable
from worker.inbox import callback_fields
from worker.inbox.callbacks import Callback, MalformedCallback, parse_body, payload_hash
from worker.inbox.rtc_callbacks import (
    MalformedRtcCallback,
    as_inbox_callback,
    parse_rtc_event,
    verify_rtc_callback,
)
from worker.inbox.signatures import InvalidSignature, verify_callback
from worker.inbox.store import NewCallback
from worker.metrics import CALLBACKS_RECEIVED
from worker.privacy.payloads import redact_payload

log = structlog.get_logger(__name__)

_STORED = b'{"status":"stored"}'
_DUPLICATE = b'{"status":"duplicate"}'
# Stored too, beside the callback that holds its dedup key (worker/inbox/store.py); 200 so that ZEGO
# stops retrying: a retry could only add the same conflict again.
_CONFLICT = b'{"status":"conflict"}'
PATH = "/callbacks/zego"
RTC_PATH = "/callbacks/zego-rtc"
_JSON_TYPE = (b"content-type", b"application/json")

Answer = tuple[int, bytes]  # status, JSON body

# Per process (or per host in multiprocess mode, worker/metrics.py): sum() them across receivers.
CONFLICTS = Counter(
    "roomwarden_inbox_conflicts_total",
    "Validly signed callbacks whose dedup key held other content; kept as inbox state conflict.",
)
_COUNTED = {
    outcome: CALLBACKS_RECEIVED.labels(outcome)
    for outcome in ("stored", "duplicate", "conflict", "rejected", "replay", "unavailable")
}


def error(status: int, code: str, detail: str) -> Response:
    return Response(
        orjson.dumps({"error": code, "detail": detail}),
        status_code=status,
        media_type="application/json",
    )


def _refuse(status: int, code: str, detail: str) -> Answer:
    """A callback not stored: counted as rejected (4xx), a replay, or unavailable (503)."""
    outcome = "replay" if code == "replayed_signature" else "rejected" if status < 500 else "unavailable"
    _COUNTED[outcome].inc()
    return status, orjson.dumps({"error": code, "detail": detail})


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes (BodyTooLarge) or past the body budget (BodyTimeout):
    a client sending a byte a second must not hold a connection and a task for ever."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.app.state.settings.body_timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout from None
    return b"".join(chunks)


class BodyDeadlines:
    """The body budget of every callback being received, kept by one watchdog task.

    An ``asyncio.timeout`` per request arms and cancels a timer for each callback; here a request
    appends its deadline (all share one budget, so the deque stays in deadline order) and the
    watchdog, a few times a second, cancels the tasks whose body is still not in past theirs.
    ``receive_body`` turns that cancellation into BodyTimeout, as ``asyncio.timeout`` would.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._tick = min(0.25, budget / 4)
        self._reading: collections.deque[_Reading] = collections.deque()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        """In the lifespan, so that the watchdog's context is not the first request's (its id)."""
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch(), name="body-deadlines")

    def watch(self, task: asyncio.Task[Any]) -> _Reading:
        self.start()
        reading = _Reading(time.monotonic() + self.budget, task)
        self._reading.append(reading)
        return reading

    async def _watch(self) -> None:
        reading = self._reading
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            while reading and (reading[0].done or reading[0].deadline <= now):
                late = reading.popleft()
                if not late.done:
                    late.expired = True
                    late.task.cancel()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)


@dataclass(slots=True)
class _Reading:
    deadline: float
    task: asyncio.Task[Any]
    done: bool = False
    expired: bool = False


async def receive_body(
    receive: Receive, declared: bytes | None, limit: int, deadlines: BodyDeadlines
) -> bytes:
    """``read_body`` for the raw ASGI path: the same refusals, straight from ``receive``."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    reading = deadlines.watch(task)
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if reading.expired and task.uncancel() <= cancelling:
            raise BodyTimeout from None
        raise
    finally:
        reading.done = True  # no await since the last receive: the watchdog cannot cancel it now
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def zego_callback(request: Request) -> Response:
    """The Starlette endpoint; ``CallbackRoute`` answers the same way without Starlette's layers."""
    settings = request.app.state.settings
    status, content = await answer(request.app.state, read_body(request, settings.max_body_bytes))
    return Response(content, status_code=status, media_type="application/json")


async def zego_rtc_callback(request: Request) -> Response:
    """The Starlette endpoint for the room callbacks (the OpenAPI document names it)."""
    settings = request.app.state.settings
    reading = read_body(request, settings.max_body_bytes)
    status, content = await answer(request.app.state, reading, rtc=True)
    return Response(content, status_code=status, media_type="application/json")


class CallbackRoute:
    """``POST /callbacks/zego`` and ``/callbacks/zego-rtc`` answered before the router: a raw ASGI
    middleware.

    The callback path is the one route that takes thousands of requests a second, and on it
    Starlette's exception middleware, route matching and Request/Response objects cost about a
    tenth of the receiver's CPU. Everything else (other methods on this path: 405) goes on to
    the router; the request id and server-error middlewares still wrap this path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if path != PATH and path != RTC_PATH:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        settings = state.settings
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        body = receive_body(receive, declared, settings.max_body_bytes, state.body_deadlines)
        status, content = await answer(state, body, rtc=path == RTC_PATH)
        length = (b"content-length", b"%d" % len(content))
        await send({"type": "http.response.start", "status": status, "headers": [_JSON_TYPE, length]})
        await send({"type": "http.response.body", "body": content})


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def answer(state: Any, reading: Awaitable[bytes], *, rtc: bool = False) -> Answer:
    """Verify, store, and say how it went; ``reading`` is the body being received, ``rtc`` says
    which of ZEGO's two callback families it is."""
    settings = state.settings
    try:
        body = await reading
    except BodyTooLarge:
        return _refuse(413, "body_too_large", f"body exceeds {settings.max_body_bytes} bytes")
    except BodyTimeout:
        return _refuse(408, "body_timeout", f"body not received within {settings.body_timeout_seconds:g} s")
    except ClientDisconnect:
        return _refuse(400, "client_disconnected", "request body was not received in full")
    try:
        payload, form = parse_body(body)
    except MalformedCallback as exc:
        return _refuse(400, "malformed", str(exc))
    if rtc:
        return await _store_rtc(state, payload, form)
    try:
        verify_callback(
            payload,
            secret_for=state.callback_secrets.get,
            now=time.time(),
            window_seconds=settings.timestamp_window_seconds,
        )
    except InvalidSignature as exc:
        log.warning("callback_rejected", reason=exc.reason, app_id=payload.get("AppId"))
        return _refuse(401, exc.reason, exc.detail)
    try:
        callback_fields.check(payload)
        callback = Callback.from_payload(payload)
    except MalformedCallback as exc:
        return _refuse(400, "malformed", str(exc))
    # The replay guard's hash is of what was sent, before any redaction.
    body_hash = payload_hash(payload)
    redacted = False
    if state.store_redactor is not None:  # PII redaction in store mode (worker/privacy/payloads.py)
        rules = state.store_redactor(callback.app_id)
        if rules is not None:
            payload, redacted = redact_payload(payload, rules)
            if redacted:
                callback = Callback.from_payload(payload)
    text = body.decode() if form == "json" and not redacted else orjson.dumps(payload).decode()
    return await _store(state, NewCallback(callback, text, form, body_hash))


async def _store_rtc(state: Any, payload: dict[str, Any], form: str) -> Answer:
    """A room callback: ZEGO's RTC field names, the same checks. Not redacted in store mode: it
    carries ids and a nickname, no words (docs/presence.md)."""
    try:
        verify_rtc_callback(
            payload,
            secret_for=state.callback_secrets.get,
            now=time.time(),
            window_seconds=state.settings.timestamp_window_seconds,
        )
    except InvalidSignature as exc:
        log.warning("rtc_callback_rejected", reason=exc.reason, app_id=payload.get("appid"))
        return _refuse(401, exc.reason, exc.detail)
    try:
        callback = as_inbox_callback(payload, parse_rtc_event(payload))
    except MalformedRtcCallback as exc:
        return _refuse(400, "malformed", str(exc))
    text = orjson.dumps(payload).decode()
    return await _store(state, NewCallback(callback, text, form, payload_hash(payload)))


async def _store(state: Any, item: NewCallback) -> Answer:
    callback = item.callback
    try:
        outcome = await state.writer.submit(item)
    except StorageUnavailable as exc:
        return _refuse(503, "storage_unavailable", str(exc))
    if outcome == "replay":
        log.warning(
            "callback_replay_rejected",
            app_id=callback.app_id,
            callback_event=callback.event,
            agent_instance_id=callback.agent_instance_id,
        )
        return _refuse(401, "replayed_signature", "this signature was already used with another body")
    _COUNTED[outcome].inc()
    if outcome == "conflict":
        CONFLICTS.inc()
        log.warning(
            "callback_conflict_kept",
            app_id=callback.app_id,
            callback_event=callback.event,
            agent_instance_id=callback.agent_instance_id,
            sequence=callback.sequence,
        )
        return 200, _CONFLICT
    return 200, _STORED if outcome == "stored" else _DUPLICATE
