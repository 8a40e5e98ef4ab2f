"""The ZEGO AI Agent API client: signed POSTs, the envelope, typed errors, retries, rate limits.

:class:`ZegoHttpClient` is what both ZEGO APIs share (the RTC client in
``worker.vendors.zego.rtc`` builds on it): every attempt goes through the vendors' one attempt
routine (``worker.vendors.http``), takes a slot from the limiter (10 requests/s per action and
AppId unless the action says otherwise), is signed afresh, and is logged as one
``zego_api_call`` event with the action, code, request id, duration and attempt number. The
query string (it carries the Signature, replayable for ten minutes) and request bodies (they
carry LLM and TTS keys) are never logged and never enter an error.

Retries follow ``worker.vendors.retries`` and the error tree in ``worker.vendors.zego.errors``. Actions that
are not idempotent are retried only when ZEGO surely did not act on the failed attempt (see
:meth:`ZegoAgentClient.create_agent_instance` for the one deliberate exception).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

import httpx
import structlog

from worker.vendors.http import Answer, Request, TransportFailure, VendorHttp
from worker.vendors.ratelimit import Limiter, LocalLimiter
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego import specs
from worker.vendors.zego.errors import (
    ZegoConnectError,
    ZegoError,
    ZegoNotFoundError,
    ZegoPermanentError,
    ZegoProtocolError,
    ZegoRateLimitError,
    ZegoTimeoutError,
    error_for_code,
    error_for_http_status,
    is_transient,
    is_transient_unprocessed,
)
from worker.vendors.zego.signing import signed_params


def _log() -> Any:
    # Fetched per call, not cached at import: logging may be (re)configured after import.
    return structlog.get_logger(__name__)


QueryItems = Sequence[tuple[str, str]]

# One budget per process unless the caller passes a shared (Redis) limiter.
_PROCESS_LIMITER = LocalLimiter()


class _RedactSignature(logging.Filter):
    """httpx logs request URLs at INFO; make sure a Signature never survives into that line."""

    _pattern = re.compile(r"(Signature=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                self._pattern.sub(r"\1***", str(arg)) if "Signature=" in str(arg) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str) and "Signature=" in record.msg:
            record.msg = self._pattern.sub(r"\1***", record.msg)
        return True


if not any(isinstance(f, _RedactSignature) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactSignature())


class ZegoHttpClient:
    """Signed requests to one ZEGO API over one ``httpx.Client``; subclasses add typed actions."""

    API: ClassVar[str] = "zego"
    DEFAULT_RATE: ClassVar[float] = 10.0
    RATES: ClassVar[dict[str, float]] = {}
    # Requests are paced at 90% of the documented rate. Paced at exactly 10/s, network jitter
    # lands an eleventh request inside a vendor's one-second window (measured: a mass 1205 of
    # twelve sessions drew 410000010 from the emulator's sliding window until this headroom).
    HEADROOM: ClassVar[float] = 0.9

    def __init__(
        self,
        base_url: str,
        app_id: int,
        server_secret: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        rate_limit_timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self._server_secret = server_secret
        self._limiter: Limiter = limiter if limiter is not None else _PROCESS_LIMITER
        self._retry = retry if retry is not None else RetryPolicy()
        self._rate_limit_timeout = rate_limit_timeout
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._attempts = VendorHttp(
            self._http,
            event="zego_api_call",
            reference_name="request_id",
            limiter=self._limiter,
            limit_timeout=rate_limit_timeout,
            rate_limited=lambda action, why: ZegoRateLimitError(None, why, action=action),
            transport_failed=_transport_error,
            log_fields={"api": self.API, "app_id": app_id},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self._http.base_url)!r}, app_id={self.app_id})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the one request path ---------------------------------------------------------------

    def _call(
        self,
        action: str,
        *,
        method: str = "POST",
        body: dict[str, Any] | None = None,
        query: QueryItems = (),
        retry_if: Callable[[BaseException], bool] = is_transient,
        done_if: Callable[[ZegoError], bool] | None = None,
    ) -> tuple[Any, str | None]:
        """Send ``action`` until it succeeds or fails for good; returns (Data, RequestId).

        ``done_if`` names errors that mean "already done" when they answer a retry after an
        attempt ZEGO may have acted on (a second delete finding the instance gone).
        """
        attempt = 0
        ambiguous = False

        def once() -> tuple[Any, str | None]:
            nonlocal attempt, ambiguous
            attempt += 1
            try:
                return self._attempt(action, method, body, query, attempt)
            except ZegoError as error:
                if done_if is not None and ambiguous and done_if(error):
                    _log().info("zego_api_call_already_done", api=self.API, action=action, code=error.code)
                    return None, error.request_id
                ambiguous = ambiguous or error.maybe_processed
                raise

        return self._retry.call(once, retry_if, sleep=self._sleep)

    def _attempt(
        self, action: str, method: str, body: dict[str, Any] | None, query: QueryItems, attempt: int
    ) -> tuple[Any, str | None]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("Action", action),
            *signed_params(self.app_id, self._server_secret, now=self._clock()).items(),
            *query,
        ]
        rate = self.RATES.get(action, self.DEFAULT_RATE) * self.HEADROOM
        return self._attempts.attempt(
            action,
            Request(method, "/", params=tuple(params), json=body),
            lambda response: self._envelope(action, response),
            attempt=attempt,
            limit=(f"zego:{self.app_id}:{action}", rate),
        )

    def _envelope(self, action: str, response: httpx.Response) -> Answer[tuple[Any, str | None]]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or "Code" not in payload:
            if response.status_code == 429 or response.status_code >= 400:
                raise error_for_http_status(response.status_code, action=action)
            raise ZegoProtocolError(
                None,
                "the answer is not a ZEGO envelope",
                action=action,
                http_status=response.status_code,
                maybe_processed=True,
            )
        raw_request_id = payload.get("RequestId")
        request_id = str(raw_request_id) if raw_request_id not in (None, "") else None
        try:
            code = int(payload["Code"])
        except (TypeError, ValueError):
            raise ZegoProtocolError(
                None,
                "the envelope Code is not a number",
                action=action,
                request_id=request_id,
                http_status=response.status_code,
                maybe_processed=True,
            ) from None
        if code != 0:
            raise error_for_code(
                code,
                str(payload.get("Message", "")),
                request_id=request_id,
                action=action,
                http_status=response.status_code,
            )
        if response.status_code >= 400:
            raise error_for_http_status(response.status_code, action=action, request_id=request_id)
        return Answer((payload.get("Data"), request_id), code, request_id)


def _transport_error(action: str, failure: TransportFailure) -> ZegoError:
    """No answer from ZEGO: whether it may have acted decides what a retry may repeat."""
    kind = type(failure.error).__name__
    if failure.kind == "timeout":
        assert failure.phase is not None
        return ZegoTimeoutError(
            f"{failure.phase} timeout talking to ZEGO", phase=failure.phase, action=action
        )
    if failure.kind == "connect":
        return ZegoConnectError(None, f"cannot connect to ZEGO: {failure.error}", action=action)
    if failure.kind == "refused_locally":
        return ZegoPermanentError(None, f"bad request to ZEGO: {kind}", action=action)
    return ZegoProtocolError(
        None, f"connection to ZEGO failed mid-request: {kind}", action=action, maybe_processed=True
    )


def _field(data: Any, name: str, action: str, request_id: str | None) -> Any:
    if not isinstance(data, dict) or data.get(name) is None:
        raise ZegoProtocolError(
            None,
            f"Data.{name} missing from the answer",
            action=action,
            request_id=request_id,
            maybe_processed=True,
        )
    return data[name]


def _round(data: Any, action: str, request_id: str | None) -> int:
    return int(_field(data, "Round", action, request_id))


class ZegoAgentClient(ZegoHttpClient):
    """Typed AI Agent actions. Each accepts a spec or a body dict, validated before sending.

    ``retry_create_on_read_timeout`` (default True) lets :meth:`create_agent_instance` repeat a
    create whose answer timed out; see that method for what this costs.
    """

    API: ClassVar[str] = "agent"

    def __init__(
        self,
        base_url: str,
        app_id: int,
        server_secret: str,
        *,
        retry_create_on_read_timeout: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, app_id, server_secret, **kwargs)
        self.retry_create_on_read_timeout = retry_create_on_read_timeout

    def _create_retry_if(self, error: BaseException) -> bool:
        if is_transient_unprocessed(error):
            return True
        return (
            self.retry_create_on_read_timeout
            and isinstance(error, ZegoTimeoutError)
            and error.phase == "read"
        )

    def _send(
        self,
        spec: specs.ZegoRequest,
        *,
        retry_if: Callable[[BaseException], bool] = is_transient,
        done_if: Callable[[ZegoError], bool] | None = None,
    ) -> tuple[Any, str | None]:
        return self._call(spec.ACTION, body=spec.to_body(), retry_if=retry_if, done_if=done_if)

    def register_agent(self, spec: specs.RegisterAgent | dict[str, Any]) -> None:
        """Register an agent; a retry that finds it registered (410001008) after a lost answer is success."""
        request = specs.coerce(specs.RegisterAgent, spec)
        self._send(request, done_if=lambda e: e.code == 410001008)

    def update_agent(self, spec: specs.UpdateAgent | dict[str, Any]) -> None:
        """Replace the registered agent's LLM/TTS/ASR objects (each wholesale)."""
        self._send(specs.coerce(specs.UpdateAgent, spec))

    def create_agent_instance(
        self, spec: specs.CreateAgentInstance | dict[str, Any]
    ) -> specs.CreatedInstance:
        """Start a voice agent instance in the spec's RTC room.

        CreateAgentInstance is not idempotent and ZEGO offers no idempotency key. Failed attempts
        are retried when ZEGO surely created nothing: connection failures, connect/pool timeouts,
        429/503, and envelope codes that report a failure (410000010 insufficient resources and
        the other transient codes). A read timeout (the request was sent, no answer came) is
        retried too, unless ``retry_create_on_read_timeout`` is False: the retry reuses the
        spec's ``RTC.AgentUserId``, and ZEGO allows one running instance per AgentUserId, kicking
        the *older* one out of its room. If the timed-out attempt did create an instance, that
        orphan is therefore deleted by ZEGO with code 1203 (AgentInstanceDeleted and Exception
        callbacks for an AgentInstanceId we never learnt), and the instance returned here is the
        one that lives. Callback handling must accept events for such unknown instance ids.
        500/502/504 answers without an envelope are not retried (the caller decides).
        """
        request = specs.coerce(specs.CreateAgentInstance, spec)
        data, request_id = self._send(request, retry_if=self._create_retry_if)
        return specs.CreatedInstance(
            agent_instance_id=str(_field(data, "AgentInstanceId", request.ACTION, request_id)),
            request_id=request_id,
        )

    def create_digital_human_agent_instance(
        self, spec: specs.CreateDigitalHumanAgentInstance | dict[str, Any]
    ) -> specs.CreatedDigitalHumanInstance:
        """Start a digital-human instance; retried like :meth:`create_agent_instance`."""
        request = specs.coerce(specs.CreateDigitalHumanAgentInstance, spec)
        data, request_id = self._send(request, retry_if=self._create_retry_if)
        return specs.CreatedDigitalHumanInstance(
            agent_instance_id=str(_field(data, "AgentInstanceId", request.ACTION, request_id)),
            request_id=request_id,
            digital_human_config=str(data.get("DigitalHumanConfig") or ""),
        )

    def create_live_digital_human_agent_instance(
        self, spec: specs.CreateLiveDigitalHumanAgentInstance | dict[str, Any]
    ) -> specs.CreatedDigitalHumanInstance:
        """Start a live digital human (driven only by TTS afterwards: any other control of it
        answers 410001049); retried like :meth:`create_agent_instance`."""
        request = specs.coerce(specs.CreateLiveDigitalHumanAgentInstance, spec)
        data, request_id = self._send(request, retry_if=self._create_retry_if)
        return specs.CreatedDigitalHumanInstance(
            agent_instance_id=str(_field(data, "AgentInstanceId", request.ACTION, request_id)),
            request_id=request_id,
            digital_human_config=str(data.get("DigitalHumanConfig") or ""),
        )

    def update_agent_instance(self, spec: specs.UpdateAgentInstance | dict[str, Any]) -> None:
        """Replace a running instance's LLM/TTS/ASR, or switch the user stream it pulls."""
        self._send(specs.coerce(specs.UpdateAgentInstance, spec))

    def delete_agent_instance(
        self, agent_instance_id: str, graceful: bool = False, graceful_timeout: int | None = None
    ) -> None:
        """Delete an instance (gracefully: ZEGO waits for IDLE, up to ``graceful_timeout`` seconds).

        Deleting an instance that is already gone raises ZegoNotFoundError, except when this
        very call retried after an attempt ZEGO may have carried out: then it is done.
        """
        body: dict[str, Any] = {"AgentInstanceId": agent_instance_id}
        if graceful:
            body["GracefulShutdown"] = True
        if graceful_timeout is not None:
            body["GracefulShutdownTimeout"] = graceful_timeout
        request = specs.coerce(specs.DeleteAgentInstance, body)
        self._send(request, done_if=lambda e: isinstance(e, ZegoNotFoundError))

    def query_agent_instance_status(self, agent_instance_id: str, *, retry: bool = True) -> str:
        """IDLE, LISTENING, THINKING or SPEAKING. ``retry=False``: one attempt, for callers (the
        reconciliation) whose own schedule is the retry."""
        request = specs.QueryAgentInstanceStatus.model_validate({"AgentInstanceId": agent_instance_id})
        data, request_id = self._send(request, retry_if=is_transient if retry else _never)
        return str(_field(data, "Status", request.ACTION, request_id))

    def send_agent_instance_llm(self, spec: specs.SendAgentInstanceLLM | dict[str, Any]) -> int:
        """Have the agent answer ``Text`` through its LLM; returns the new Round.

        Not retried after an attempt ZEGO may have acted on: a duplicate would be spoken twice.
        """
        request = specs.coerce(specs.SendAgentInstanceLLM, spec)
        data, request_id = self._send(request, retry_if=is_transient_unprocessed)
        return _round(data, request.ACTION, request_id)

    def send_agent_instance_tts(self, spec: specs.SendAgentInstanceTTS | dict[str, Any]) -> int:
        """Have the agent speak ``Text`` verbatim; returns the new Round (retried like LLM sends)."""
        request = specs.coerce(specs.SendAgentInstanceTTS, spec)
        data, request_id = self._send(request, retry_if=is_transient_unprocessed)
        return _round(data, request.ACTION, request_id)

    def interrupt_agent_instance(self, agent_instance_id: str) -> int:
        """Cut the agent off mid-sentence; returns the Round."""
        request = specs.InterruptAgentInstance.model_validate({"AgentInstanceId": agent_instance_id})
        data, request_id = self._send(request)
        return _round(data, request.ACTION, request_id)

    def get_agent_instance_msg_list(self, agent_instance_id: str) -> list[specs.Message]:
        """The instance's LLM context window (bounded by WindowSize), oldest first."""
        request = specs.GetAgentInstanceMsgList.model_validate({"AgentInstanceId": agent_instance_id})
        data, request_id = self._send(request)
        items = data.get("MessageList") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ZegoProtocolError(
                None, "Data.MessageList missing from the answer", action=request.ACTION, request_id=request_id
            )
        return [
            specs.Message(role=str(item.get("Role", "")), content=str(item.get("Content", "")))
            for item in items
            if isinstance(item, dict)
        ]


def _never(_error: BaseException) -> bool:
    return False
