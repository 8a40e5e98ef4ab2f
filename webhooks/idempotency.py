"""``Idempotency-Key`` on the POSTs that create things: a retry gets the first answer, not a twin.

The same key with the same body within 24 hours answers what the first request answered (its
status and body, with ``Idempotent-Replayed: true``) and does nothing again; the same key with
another body is ``422 idempotency_key_reused``. Keys are per route.

The key's row is inserted in the transaction that does the work and holds the answer when it
commits, so it exists exactly when the work does. Two requests with one key at once: on Postgres
the second's insert waits for the first's transaction and then finds its answer; SQLite has one
writer at a time anyway. Work that fails rolls the key back with it, and a retry goes ahead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as DbSession
from starlette.requests import Request
from starlette.responses import Response

from webhooks.receiver import error
from worker.db import insert_ignoring_conflicts, utcnow
from worker.models import IdempotentRequest
from worker.models.requests import KEPT_FOR

WINDOW = KEPT_FOR
# Visible ASCII, as HTTP header values are best kept; long enough for a UUID or a ULID and more.
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class Guard:
    route: str
    key: str
    fingerprint: str


def fingerprint(body: Any) -> str:
    """The body as JSON with sorted keys: the same request spelled with other spacing is the same."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def guard_for(request: Request, body: Any) -> Guard | Response | None:
    """The request's guard, None without the header, or a 400 for a key that cannot be one."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        return error(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters"
        )
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    return Guard(f"{request.method} {path}", key, fingerprint(body))


def _take(db: DbSession, guard: Guard, now: dt.datetime) -> int | None:
    statement = insert_ignoring_conflicts(IdempotentRequest, db.get_bind().dialect.name).values(
        route=guard.route, key=guard.key, fingerprint=guard.fingerprint, status=0, body="", created_at=now
    )
    return db.scalar(statement.returning(IdempotentRequest.id))


def answered(db: DbSession, guard: Guard, now: dt.datetime) -> int | Response:
    """The key's row id when this request is its first (the row now taken); else the answer to give."""
    taken = _take(db, guard, now)
    if taken is not None:
        return taken
    mine = (IdempotentRequest.route == guard.route) & (IdempotentRequest.key == guard.key)
    earlier = db.scalars(select(IdempotentRequest).where(mine)).one()
    if earlier.created_at < now - WINDOW:  # an expired key starts afresh
        db.execute(delete(IdempotentRequest).where(IdempotentRequest.id == earlier.id))
        # A twin retry that replaced it first: its fresh row is the answer to read.
        return _take(db, guard, now) or answered(db, guard, now)
    if earlier.fingerprint != guard.fingerprint:
        return error(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body in the last 24 hours",
        )
    return Response(
        earlier.body,
        status_code=earlier.status,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def once(db: DbSession, guard: Guard | None, work: Callable[[], Response]) -> tuple[Response, bool]:
    """``work``'s answer, remembered under the guard; or the remembered one (and False: not run)."""
    row = None
    if guard is not None:
        taken = answered(db, guard, utcnow())
        if isinstance(taken, Response):
            return taken, False
        row = taken
    response = work()
    if row is not None:
        db.execute(
            update(IdempotentRequest)
            .where(IdempotentRequest.id == row)
            .values(status=response.status_code, body=bytes(response.body).decode())
        )
    return response, True


def guarded(guard: Guard | None, work: Callable[[DbSession], Response]) -> Callable[[DbSession], Response]:
    """``work`` (which runs in a transaction it is given) under the guard."""
    return lambda db: once(db, guard, lambda: work(db))[0]
