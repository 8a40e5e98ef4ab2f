"""``X-Request-ID``: taken from the caller (or a load balancer) or made, returned, and logged.

A raw ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it adds one header and
binds one log field, and must not cost the callback route a task or a copy of the body.
"""

from __future__ import annotations

import itertools
import os
import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
# What a caller may hand us: short, printable, no spaces. Anything else is replaced, not echoed,
# so a header cannot smuggle control characters into logs or responses.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Made ids: 32 hex digits, a random per-process prefix and a counter. Unique, not secret, and
# a tenth of uuid4's cost on a route that answers thousands of callbacks a second.
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


def request_id(given: str | None) -> str:
    if given is not None and _ACCEPTABLE.fullmatch(given):
        return given
    return f"{_PREFIX}{next(_COUNTER) & (2**80 - 1):020x}"


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == HEADER:
                given = value.decode("latin-1")
                break
        rid = request_id(given)
        returned = (HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: prebuilt responses share theirs between requests.
                message["headers"] = [*message.get("headers", ()), returned]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
