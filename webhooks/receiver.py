"""``POST /callbacks/zego``: verify, store durably, answer. Never a vendor call on this path.

Status codes are what ZEGO's retry logic needs: 200 once the callback is stored (or was
already), 503 when the database cannot store it (ZEGO retries 5 times over about a minute),
and 4xx for requests that no retry will fix.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import structlog
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from webhooks.ingest import StorageUnavailable
from worker.inbox import callback_fields
from worker.inbox.callbacks import Callback, MalformedCallback, parse_body, payload_hash
from worker.inbox.signatures import InvalidSignature, verify_callback
from worker.inbox.store import NewCallback
from worker.metrics import CALLBACKS_RECEIVED

log = structlog.get_logger(__name__)

_STORED = Response(b'{"status":"stored"}', media_type="application/json")
_DUPLICATE = Response(b'{"status":"duplicate"}', media_type="application/json")
# Stored too, beside the callback that holds its dedup key (worker/inbox/store.py); 200 so that ZEGO
# stops retrying: a retry could only add the same conflict again.
_CONFLICT = Response(b'{"status":"conflict"}', media_type="application/json")

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


def _refuse(status: int, code: str, detail: str) -> Response:
    """A callback not stored: counted as rejected (4xx), a replay, or unavailable (503)."""
    outcome = "replay" if code == "replayed_signature" else "rejected" if status < 500 else "unavailable"
    _COUNTED[outcome].inc()
    return error(status, code, detail)


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


async def zego_callback(request: Request) -> Response:
    state = request.app.state
    settings = state.settings
    try:
        body = await read_body(request, settings.max_body_bytes)
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
    text = body.decode() if form == "json" else orjson.dumps(payload).decode()
    item = NewCallback(callback, text, form, payload_hash(payload))
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
        return _CONFLICT
    return _STORED if outcome == "stored" else _DUPLICATE
