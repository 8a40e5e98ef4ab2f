"""The app's endpoints: where events are delivered, which ones, and the secret that signs them.

A secret is shown in full once, when it is made (creation, rotation), and ``***`` afterwards.
It is stored sealed with ``ROOMWARDEN_SECRET_KEY`` when one is set (worker/sealing.py).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from worker.db import iso
from worker.events import addresses, signing
from worker.models import Endpoint
from worker.sealing import SEALED, Sealer

# Every type an endpoint can ask for; a pattern is one of these or a prefix ending in ".".
TYPES = (
    "session.created",
    "session.active",
    "session.recovering",
    "session.ended",
    "session.failed",
    "session.analyzed",
    "turn.completed",
    "action.completed",
    "action.failed",
    "callback.failed",
    "endpoint.test",
)
# The old secret keeps signing beside the new one this long after a rotation.
ROTATION_OVERLAP = dt.timedelta(hours=24)
SHOWN = "***"
_SEALED = "sealed:"


class EndpointError(ValueError):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Changes:
    """What a POST or PATCH asks for; a field left out is None (not given)."""

    given: frozenset[str]
    url: str | None = None
    events: list[str] | None = None
    app_id: int | None = None
    description: str | None = None
    enabled: bool | None = None


def parse(body: Any, *, creating: bool, allow_private: bool) -> Changes:
    """A request body as Changes, or EndpointError naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise EndpointError(None, "the body must be a JSON object")
    allowed = {"url", "events", "app_id", "description"} | (set() if creating else {"enabled"})
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise EndpointError(unknown[0], f"unknown field; expected some of {', '.join(sorted(allowed))}")
    if creating and "url" not in body:
        raise EndpointError("url", "url is required")
    values: dict[str, Any] = {}
    if "url" in body:
        url = body["url"]
        if not isinstance(url, str) or not url or len(url) > 2048:
            raise EndpointError("url", "url must be a string of 1 to 2048 characters")
        try:
            addresses.check(url, allow_private=allow_private)
        except addresses.AddressRefused as exc:
            raise EndpointError("url", exc.message) from None
        values["url"] = url
    if "events" in body:
        values["events"] = patterns(body["events"])
    if "app_id" in body:
        app_id = body["app_id"]
        if app_id is not None and (isinstance(app_id, bool) or not isinstance(app_id, int) or app_id < 0):
            raise EndpointError("app_id", "app_id must be a non-negative integer or null")
        values["app_id"] = app_id
    if "description" in body:
        text = body["description"]
        if text is not None and (not isinstance(text, str) or len(text) > 512):
            raise EndpointError("description", "description must be a string of at most 512 characters")
        values["description"] = text
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise EndpointError("enabled", "enabled must be true or false")
        values["enabled"] = body["enabled"]
    return Changes(given=frozenset(values), **values)


def patterns(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 50:
        raise EndpointError("events", 'events must be a list of event types or prefixes like "session."')
    for pattern in value:
        known = pattern in TYPES or (pattern.endswith(".") and any(t.startswith(pattern) for t in TYPES))
        if not known:
            raise EndpointError(
                "events", f"unknown event type or prefix {pattern!r}; types: {', '.join(TYPES)}"
            )
    return list(dict.fromkeys(value)) or None


def create(
    db: DbSession, wanted: Changes, *, sealer: Sealer | None, now: dt.datetime
) -> tuple[Endpoint, str]:
    """A new endpoint and its secret, in full (the only time it is shown, with rotation)."""
    secret = signing.new_secret()
    endpoint = Endpoint(
        id="ep_" + secrets.token_hex(12),
        url=wanted.url,
        events=wanted.events,
        app_id=wanted.app_id,
        description=wanted.description,
        secret=_seal(secret, sealer),
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    db.add(endpoint)
    db.flush()
    return endpoint, secret


def update(endpoint: Endpoint, changes: Changes, *, now: dt.datetime) -> None:
    for name in changes.given:
        setattr(endpoint, name, getattr(changes, name))
    if changes.enabled:
        endpoint.disabled_reason = None
    elif "enabled" in changes.given:
        endpoint.disabled_reason = "disabled through the API"
    endpoint.updated_at = now


def rotate(endpoint: Endpoint, *, sealer: Sealer | None, now: dt.datetime) -> str:
    """A new secret; the current one keeps signing beside it for ROTATION_OVERLAP."""
    secret = signing.new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + ROTATION_OVERLAP
    endpoint.secret = _seal(secret, sealer)
    endpoint.updated_at = now
    return secret


def signing_keys(endpoint: Endpoint, *, sealer: Sealer | None, now: dt.datetime) -> list[str]:
    """The secrets that sign a message now: the current one, and the previous during its overlap."""
    keys = [_open(endpoint.secret, sealer)]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and now < until:
        keys.append(_open(endpoint.previous_secret, sealer))
    return keys


def disable(endpoint: Endpoint, reason: str, *, now: dt.datetime) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:256]
    endpoint.updated_at = now


def find(db: DbSession, endpoint_id: str) -> Endpoint | None:
    return db.get(Endpoint, endpoint_id)


def listed(db: DbSession) -> Sequence[Endpoint]:
    return db.scalars(select(Endpoint).order_by(Endpoint.created_at, Endpoint.id)).all()


def describe(endpoint: Endpoint, secret: str | None = None) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "app_id": endpoint.app_id,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "secret": secret or SHOWN,
        "previous_secret_until": iso(endpoint.previous_secret_until),
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


def _seal(secret: str, sealer: Sealer | None) -> str:
    if sealer is None:
        return secret
    return _SEALED + str(sealer.seal({"s": secret}, [("s",)])["s"][SEALED])


def _open(stored: str, sealer: Sealer | None) -> str:
    if not stored.startswith(_SEALED):
        return stored
    if sealer is None:
        raise EndpointError("secret", "the endpoint's secret is sealed and ROOMWARDEN_SECRET_KEY is not set")
    opened = sealer.unseal({"s": {SEALED: stored.removeprefix(_SEALED)}})["s"]
    return str(opened)
