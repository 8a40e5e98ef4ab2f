"""One attempt at a vendor's HTTP API, the same for ZEGO and Coze.

Every attempt, whoever the vendor: takes a slot from the rate limiter (or fails with the
vendor's rate-limit error, nothing sent), sends one request, turns a transport failure into the
vendor's error (saying whether the request may have been acted on), hands the answer to the
vendor's envelope reader, and logs exactly one ``<vendor>_api_call`` event with the operation,
attempt, HTTP status, code, the vendor's reference for support (request id or log id), outcome
and duration. What an attempt never logs: query strings (a ZEGO signature is replayable for ten
minutes), request bodies (LLM and TTS keys) and bearer tokens.

Retries are not here: each client wraps attempts in its ``RetryPolicy`` with its own rule for
which failures a non-idempotent request may repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import httpx
import structlog

from worker.metrics import VENDOR_REQUESTS
from worker.vendors.errors import VendorError
from worker.vendors.ratelimit import Limiter, RateLimitTimeout

T = TypeVar("T")

Phase = Literal["connect", "read", "write", "pool"]


@dataclass(frozen=True)
class TransportFailure:
    """Why no answer came back, and whether the vendor may have seen the request."""

    kind: Literal["timeout", "connect", "refused_locally", "broken"]
    error: httpx.HTTPError
    phase: Phase | None = None

    @property
    def sent(self) -> bool:
        """False only when the request surely never left (connect or pool timeout, no connection)."""
        if self.kind == "timeout":
            return self.phase in ("read", "write")
        return self.kind == "broken"

    @classmethod
    def of(cls, error: httpx.TransportError) -> TransportFailure:
        if isinstance(error, httpx.TimeoutException):
            return cls("timeout", error, _timeout_phase(error))
        if isinstance(error, httpx.ConnectError):
            return cls("connect", error)
        if isinstance(error, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
            return cls("refused_locally", error)
        return cls("broken", error)


def _timeout_phase(error: httpx.TimeoutException) -> Phase:
    if isinstance(error, httpx.ConnectTimeout):
        return "connect"
    if isinstance(error, httpx.PoolTimeout):
        return "pool"
    if isinstance(error, httpx.WriteTimeout):
        return "write"
    return "read"


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What the envelope reader made of a response: the value, the vendor's code and reference."""

    value: T
    code: int | None
    reference: str | None


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    params: Any = None
    json: Any = None


@dataclass
class VendorHttp:
    """The attempt routine for one vendor's client: its HTTP client, limiter and error hooks."""

    http: httpx.Client
    event: str  # "zego_api_call"
    reference_name: str  # the log field for the vendor's reference: "request_id", "logid"
    limiter: Limiter | None
    limit_timeout: float
    rate_limited: Callable[[str, str], VendorError]  # (operation, why) -> error
    transport_failed: Callable[[str, TransportFailure], VendorError]  # (operation, failure)
    log_fields: Mapping[str, Any] = field(default_factory=dict)  # e.g. api and app_id

    def attempt(
        self,
        operation: str,
        request: Request,
        read: Callable[[httpx.Response], Answer[T]],
        *,
        attempt: int,
        limit: tuple[str, float] | None = None,
        name: str = "action",
    ) -> T:
        """Send ``request`` once; ``limit`` is the limiter (key, rate per second) to wait on."""
        if self.limiter is not None and limit is not None:
            key, rate = limit
            try:
                self.limiter.acquire(key, rate, self.limit_timeout)
            except RateLimitTimeout as exc:
                VENDOR_REQUESTS.labels(
                    self.event.removesuffix("_api_call"), operation, "not_sent_rate_limited"
                ).inc()
                raise self.rate_limited(operation, str(exc)) from None
        started = time.perf_counter()
        status: int | None = None
        code: int | None = None
        reference: str | None = None
        outcome = "ok"
        try:
            try:
                response = self.http.request(
                    request.method, request.url, params=request.params, json=request.json
                )
            except httpx.TransportError as exc:
                raise self.transport_failed(operation, TransportFailure.of(exc)) from None
            status = response.status_code
            answer = read(response)
            code, reference = answer.code, answer.reference
            return answer.value
        except VendorError as error:
            outcome = type(error).__name__
            code = error.code if code is None else code
            reference = reference or _reference(error)
            raise
        finally:
            VENDOR_REQUESTS.labels(self.event.removesuffix("_api_call"), operation, outcome).inc()
            structlog.get_logger(__name__).log(  # fetched per call: logging may be reconfigured
                logging.INFO if outcome == "ok" else logging.WARNING,
                self.event,
                **self.log_fields,
                **{name: operation, self.reference_name: reference},
                attempt=attempt,
                http_status=status,
                code=code,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


def _reference(error: VendorError) -> str | None:
    value = getattr(error, "request_id", None) or getattr(error, "logid", None)
    return str(value) if value else None
