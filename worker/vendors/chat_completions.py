"""An OpenAI-compatible Chat Completions client: the user's own LLM, for post-call analysis.

::

    LlmError                       (a VendorError, vendor "llm")
    ├── LlmTransientError          retried with backoff: timeouts, connection errors, 429, 5xx;
    │                              ``retry_after`` holds a 429's Retry-After, which is honoured
    └── LlmPermanentError          not retried: 400 (bad request), 401/403 (key), 404 (model)
        └── LlmContextExceeded     400 ``context_length_exceeded``: the caller splits and retries

The URL is the full chat completions URL (as in ZEGO's ``LLM.Url``), so any compatible server
works (OpenAI, Azure's OpenAI path, vLLM, Ollama, a gateway). The key travels only in the
``Authorization: Bearer`` header: it is never logged (each attempt logs one ``llm_api_call``
event through the vendors' shared routine, which logs no bodies and no headers), never put in an
error message and never shown by ``repr``. Calls take a slot from the project's rate limiter
(GCRA in Redis when there is one), so every worker together keeps to ``rate_per_second``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from worker.vendors.errors import PermanentVendorError, TransientVendorError, VendorError
from worker.vendors.http import Answer, Request, TransportFailure, VendorHttp
from worker.vendors.ratelimit import Limiter
from worker.vendors.retries import RetryPolicy

DEFAULT_RETRY = RetryPolicy(attempts=4, base=0.5, cap=8.0, deadline=60.0)
# A 429's Retry-After is honoured up to this; a longer wait is better left to the task's retry.
MAX_RETRY_AFTER_S = 30.0


class LlmError(VendorError):
    vendor = "llm"

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None) -> None:
        self.message = message
        self.http_status = http_status
        self.error_code = code
        super().__init__(message)

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        return f"LLM call failed{status}: {self.message}"


class LlmTransientError(LlmError, TransientVendorError):
    retry_after: float | None = None


class LlmPermanentError(LlmError, PermanentVendorError):
    pass


class LlmContextExceeded(LlmPermanentError):
    pass


@dataclass(frozen=True)
class Completion:
    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class ChatCompletionsClient:
    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        model: str,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        rate_per_second: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"User-Agent": "roomwarden", "Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url
        self.model = model
        self._key = api_key or ""
        self._retry = retry if retry is not None else DEFAULT_RETRY
        self._rate = rate_per_second
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport, headers=headers)
        self._attempts = VendorHttp(
            self._http,
            event="llm_api_call",
            reference_name="completion_id",
            limiter=limiter,
            limit_timeout=timeout,
            rate_limited=lambda operation, why: LlmTransientError(f"rate limited locally: {why}"),
            transport_failed=lambda operation, failure: self._transport_error(failure, timeout),
            log_fields={"model": model},
        )

    def __repr__(self) -> str:
        return f"ChatCompletionsClient(url={self.url!r}, model={self.model!r})"

    def close(self) -> None:
        self._http.close()

    def complete(self, messages: Sequence[dict[str, str]], *, json_mode: bool = True) -> Completion:
        """One chat completion, retried on transient failures with backoff (429: Retry-After)."""
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": 0}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        request = Request("POST", self.url, json=body)
        started = time.monotonic()
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return self._attempts.attempt(
                    "chat.completions",
                    request,
                    self._read,
                    attempt=attempt,
                    limit=("llm", self._rate),
                    name="operation",
                )
            except LlmTransientError as error:
                if attempt >= self._retry.attempts:
                    raise
                wait = self._retry.delay(attempt - 1)
                if error.retry_after is not None:
                    if error.retry_after > MAX_RETRY_AFTER_S:
                        raise
                    wait = max(wait, error.retry_after)
                deadline = self._retry.deadline
                if deadline is not None and time.monotonic() - started + wait > deadline:
                    raise
                self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _read(self, response: httpx.Response) -> Answer[Completion]:
        status = response.status_code
        if status >= 400:
            message, code = self._error_of(response)
            if status == 429 or status >= 500:
                error = LlmTransientError(message, http_status=status, code=code)
                error.retry_after = _retry_after(response.headers.get("retry-after"))
                raise error
            if code == "context_length_exceeded":
                raise LlmContextExceeded(message, http_status=status, code=code)
            raise LlmPermanentError(message, http_status=status, code=code)
        try:
            body = response.json()
            choice = body["choices"][0]
            content = choice["message"]["content"]
            usage = body.get("usage") or {}
            completion = Completion(
                content=str(content or ""),
                model=str(body.get("model") or self.model),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # A broken envelope from a proxy or an overloaded server: worth another try.
            raise LlmTransientError(f"unreadable answer ({type(exc).__name__})", http_status=status) from None
        return Answer(completion, None, str(body.get("id") or "") or None)

    def _error_of(self, response: httpx.Response) -> tuple[str, str | None]:
        try:
            error = response.json().get("error") or {}
            message, code = str(error.get("message") or ""), error.get("code")
        except (ValueError, AttributeError):
            message, code = "", None
        message = self._scrub(message or response.reason_phrase or "error")[:300]
        return message, str(code) if code is not None else None

    def _scrub(self, text: str) -> str:
        """OpenAI echoes part of a wrong key in its 401 message; no part of ours leaves here."""
        if self._key:
            text = text.replace(self._key, "***")
            if len(self._key) > 8:
                text = text.replace(self._key[-4:], "***")
        return text

    def _transport_error(self, failure: TransportFailure, timeout: float) -> LlmError:
        kind = type(failure.error).__name__
        if failure.kind == "timeout":
            return LlmTransientError(f"timed out ({kind}) after {timeout}s")
        return LlmTransientError(f"connection error ({kind})")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
