"""Endpoints that receive roomwarden's events, and the deliveries made to them."""

from __future__ import annotations

from typing import Any, Literal

from webhooks.contract.common import Model, Time


class CreateEndpoint(Model):
    url: str
    events: list[str] | None = None
    app_id: int | None = None
    description: str | None = None


class UpdateEndpoint(Model):
    url: str | None = None
    events: list[str] | None = None
    app_id: int | None = None
    description: str | None = None
    enabled: bool | None = None


class Endpoint(Model):
    id: str
    url: str
    events: list[str] | None = None
    app_id: int | None = None
    description: str | None = None
    enabled: bool
    disabled_reason: str | None = None
    secret: str  # whsec_... when created or rotated, *** afterwards
    previous_secret_until: Time | None = None
    created_at: Time
    updated_at: Time


class EndpointList(Model):
    endpoints: list[Endpoint]


class Delivery(Model):
    id: int
    endpoint_id: str
    event_id: int
    webhook_id: str
    type: str
    session_id: str | None = None
    state: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: Time | None = None
    last_status: int | None = None
    last_error: str | None = None
    replay: bool
    created_at: Time
    finished_at: Time | None = None


class Attempt(Model):
    attempted_at: Time
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_excerpt: str | None = None


class EventMessage(Model):
    type: str
    timestamp: str
    data: dict[str, Any]


class DeliveryDetail(Delivery):
    event: EventMessage
    attempt_log: list[Attempt]


class DeliveryPage(Model):
    deliveries: list[Delivery]
    next_before: int | None = None


class Replay(Model):
    since: Time
    until: Time | None = None
    types: list[str] | None = None


class Replayed(Model):
    endpoint_id: str
    replayed: int
