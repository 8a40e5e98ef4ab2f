"""The Coze API client: audio rooms, conversations, messages and voices over one ``httpx.Client``.

Every request is validated by ``worker.vendors.coze.specs`` first (a broken constraint raises
``SpecError`` and nothing is sent). Every answer is read as the vendor's envelope
``{"code", "msg", "data", "detail": {"logid"}}``: ``code > 0`` raises the mapped error from
``worker.vendors.coze.errors`` whatever the HTTP status, with the log id kept for support.

Transient failures are retried by a bounded ``RetryPolicy`` (backoff, jitter, deadline). Reads
are retried on any transient failure; create-room and create-conversation only when the vendor
certainly did nothing (a business code such as 4009/4020/5000, or a connection that never
opened), because a room bills from the moment it exists. Each attempt logs one ``coze_api_call``
event (endpoint, code, logid, duration_ms); neither the bearer token nor a room's join token is
ever logged, put in an error or shown by ``repr``. Each attempt is the vendors' shared routine
(``worker.vendors.http``); this module supplies the envelope reader and the error mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from worker.vendors.coze import specs
from worker.vendors.coze.errors import CozeError, CozePermanentError, CozeTransientError, error_for
from worker.vendors.http import Answer, Request, TransportFailure, VendorHttp
from worker.vendors.ratelimit import Limiter
from worker.vendors.retries import RetryPolicy

M = TypeVar("M", bound=BaseModel)

DEFAULT_RETRY = RetryPolicy(attempts=3, base=0.2, cap=2.0, deadline=10.0)
# Coze publishes no limit for these endpoints (vendor-facts 4.3) and asks callers to keep
# create-room calls in check, since each one bills; the chat API's smallest tier is 20 QPS.
DEFAULT_RATE_PER_SECOND = 10.0


class CozeClient:
    """One Coze account (one bearer token) at one base URL (``https://api.coze.com`` or ``.cn``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
        retry: RetryPolicy | None = None,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
    ) -> None:
        if not token:
            raise ValueError("a Coze token is required")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retry = retry if retry is not None else DEFAULT_RETRY
        self._rate = rate_per_second
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "roomwarden"},
        )
        self._attempts = VendorHttp(
            self._http,
            event="coze_api_call",
            reference_name="logid",
            limiter=limiter,
            limit_timeout=timeout,
            rate_limited=lambda endpoint, why: CozeTransientError(None, why, endpoint=endpoint),
            transport_failed=self._transport_error,
        )

    def __repr__(self) -> str:
        return f"CozeClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CozeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- endpoints ------------------------------------------------------------------------------

    def create_room(self, spec: specs.CreateRoom | Mapping[str, Any]) -> specs.CreatedRoom:
        """Create an RTC room with the bot in it. Billing starts now; the room closes by itself."""
        if not isinstance(spec, specs.CreateRoom):
            spec = specs.CreateRoom.model_validate(dict(spec))
        envelope = self._call("create_room", "POST", "/v1/audio/rooms", json=spec.body(), idempotent=False)
        data = _data(envelope, "create_room")
        try:
            return specs.CreatedRoom(
                room_id=str(data["room_id"]),
                app_id=str(data["app_id"]),
                token=str(data["token"]),
                uid=str(data["uid"]),
            )
        except KeyError as missing:
            raise _unexpected("create_room", envelope, f"data.{missing.args[0]} missing") from None

    def create_conversation(
        self,
        bot_id: str | None = None,
        *,
        name: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        meta_data: Mapping[str, str] | None = None,
        connector_id: str | None = None,
    ) -> str:
        """A new conversation (for a room's transcript, pass its id to ``create_room``); returns its id."""
        spec = specs.CreateConversation.model_validate(
            {
                "bot_id": bot_id,
                "name": name,
                "messages": [dict(m) for m in messages] if messages is not None else None,
                "meta_data": dict(meta_data) if meta_data is not None else None,
                "connector_id": connector_id,
            }
        )
        envelope = self._call(
            "create_conversation", "POST", "/v1/conversation/create", json=spec.body(), idempotent=False
        )
        return self._conversation(envelope, "create_conversation").id

    def retrieve_conversation(self, conversation_id: str) -> specs.Conversation:
        envelope = self._call(
            "retrieve_conversation",
            "GET",
            "/v1/conversation/retrieve",
            params={"conversation_id": _required_id(conversation_id, "conversation_id")},
        )
        return self._conversation(envelope, "retrieve_conversation")

    def list_voices(self, spec: specs.ListVoices | None = None, **params: Any) -> specs.VoicePage:
        """One page of voices; pass a ``ListVoices`` or its fields (``page_size=20``...)."""
        if spec is None:
            spec = specs.ListVoices.model_validate(params)
        elif params:
            raise TypeError("pass either a ListVoices spec or keyword parameters, not both")
        envelope = self._call("list_voices", "GET", "/v1/audio/voices", params=spec.query())
        return self._parse(specs.VoicePage, _data(envelope, "list_voices"), "list_voices", envelope)

    def list_messages(
        self,
        conversation_id: str,
        *,
        after_id: str | None = None,
        before_id: str | None = None,
        order: str = "asc",
        limit: int = 50,
        chat_id: str | None = None,
    ) -> specs.MessagePage:
        """One page of a conversation's messages (oldest first by default, unlike the vendor)."""
        spec = specs.ListMessages.model_validate(
            {"order": order, "chat_id": chat_id, "before_id": before_id, "after_id": after_id, "limit": limit}
        )
        envelope = self._call(
            "list_messages",
            "POST",
            "/v1/conversation/message/list",
            params={"conversation_id": _required_id(conversation_id, "conversation_id")},
            json=spec.body(),
        )
        # The one endpoint whose page sits at the top level: data[], first_id, last_id, has_more.
        page = {
            "messages": envelope.get("data") or [],
            "first_id": envelope.get("first_id") or "",
            "last_id": envelope.get("last_id") or "",
            "has_more": bool(envelope.get("has_more")),
        }
        return self._parse(specs.MessagePage, page, "list_messages", envelope)

    def iter_messages(
        self,
        conversation_id: str,
        after_id: str | None = None,
        *,
        chat_id: str | None = None,
        limit: int = 50,
    ) -> Iterator[specs.Message]:
        """Every message after ``after_id`` (or from the start), oldest first, page by page."""
        cursor = after_id
        while True:
            page = self.list_messages(
                conversation_id, after_id=cursor, order="asc", limit=limit, chat_id=chat_id
            )
            yield from page.messages
            if not page.has_more or not page.messages or not page.last_id or page.last_id == cursor:
                return
            cursor = page.last_id

    # -- plumbing -------------------------------------------------------------------------------

    def _conversation(self, envelope: dict[str, Any], endpoint: str) -> specs.Conversation:
        return self._parse(specs.Conversation, _data(envelope, endpoint), endpoint, envelope)

    def _parse(self, model: type[M], value: Any, endpoint: str, envelope: dict[str, Any]) -> M:
        try:
            return model.model_validate(value)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _unexpected(endpoint, envelope, f"{where}: {first['msg']}") from None

    def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        attempt = 0

        def once() -> dict[str, Any]:
            nonlocal attempt
            attempt += 1
            return self._send(endpoint, method, path, params=params, json=json, attempt=attempt)

        def retryable(error: BaseException) -> bool:
            if not isinstance(error, CozeTransientError):
                return False
            return idempotent or not error.maybe_processed

        return self._retry.call(once, retryable)

    def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        attempt: int,
    ) -> dict[str, Any]:
        return self._attempts.attempt(
            endpoint,
            Request(method, path, params=params, json=json),
            lambda response: self._envelope(endpoint, response),
            attempt=attempt,
            limit=(f"coze:{endpoint}", self._rate),
            name="endpoint",
        )

    def _envelope(self, endpoint: str, response: httpx.Response) -> Answer[dict[str, Any]]:
        """Coze raises whenever ``code > 0``, whatever the HTTP status, and so do we."""
        status = response.status_code
        logid = response.headers.get("x-tt-logid")
        code: int | None = None
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            detail = payload.get("detail")
            if isinstance(detail, dict) and isinstance(detail.get("logid"), str):
                logid = logid or detail["logid"]
            raw_code = payload.get("code")
            if isinstance(raw_code, int) and not isinstance(raw_code, bool):
                code = raw_code
        if code is not None and code > 0:
            assert isinstance(payload, dict)
            msg = self._scrub(str(payload.get("msg") or ""))
            raise error_for(code, msg, logid, endpoint=endpoint, http_status=status)
        if code is None or status >= 400:
            raise error_for(
                None, f"HTTP {status} without a Coze envelope", logid, endpoint=endpoint, http_status=status
            )
        assert isinstance(payload, dict)
        return Answer(payload, code, logid)

    def _transport_error(self, endpoint: str, failure: TransportFailure) -> CozeError:
        """No answer: only a connection that never opened is surely not a room billed."""
        kind = type(failure.error).__name__
        if failure.kind == "timeout":
            return CozeTransientError(
                None,
                f"timed out ({kind}) after {self._timeout}s",
                endpoint=endpoint,
                maybe_processed=failure.sent,
            )
        return CozeTransientError(
            None,
            f"connection error ({kind}): {self._scrub(str(failure.error))}",
            endpoint=endpoint,
            maybe_processed=failure.kind != "connect",
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")


def _data(envelope: dict[str, Any], endpoint: str) -> dict[str, Any]:
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise _unexpected(endpoint, envelope, "data is not an object")
    return data


def _unexpected(endpoint: str, envelope: dict[str, Any], what: str) -> CozeError:
    detail = envelope.get("detail")
    logid = detail.get("logid") if isinstance(detail, dict) else None
    return CozePermanentError(None, f"unexpected response: {what}", logid, endpoint=endpoint)


def _required_id(value: str, name: str) -> str:
    if not value:
        raise specs.SpecError([(name, "is required")], spec="Coze")
    return value
