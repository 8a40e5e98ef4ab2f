"""``X-Request-ID``: taken from the caller (or a load balancer) or made, returned, and logged.

A raw ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it adds one header and
binds one log field, and must not cost the callback route a task or a copy of the body.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
# What a caller may hand us: short, printable, no spaces. Anything else is replaced, not echoed,
# so a header cannot smuggle control characters into logs or responses.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(given: str | None) -> str:
    if given is not None and _ACCEPTABLE.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = request_id(given)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            await self.app(scope, receive, send_with_id)
