"""Cutting off clients too slow to be anything but an attack (slowloris), in the HTTP server itself.

uvicorn closes a keep-alive connection that stays idle, but a connection that has sent part of
its request line or headers is never timed out: one review held 400 such connections open for a
minute. ``BoundedProtocol`` is uvicorn's httptools protocol with one more timer: from the
moment a connection opens (or a response ends) its next request's headers must be complete
within ``ROOMWARDEN_HEADER_TIMEOUT_SECONDS``, or the connection is closed. It also sets uvicorn's
own connection limit from ``ROOMWARDEN_MAX_CONNECTIONS`` (past it, requests are answered 503), so
that the one settings object, read in the web process, governs both. A time budget does not bound
size: a fast client can send megabytes of headers well within it, and uvicorn's httptools protocol
holds every byte of an unfinished request line and headers (h11, its other protocol, stops at
16 KiB). So past ``MAX_HEADER_BYTES`` the request is answered 431 and the connection closed. The
Procfile and ``roomwarden run`` start uvicorn with ``--http webhooks.slow_clients:BoundedProtocol``.
(Joining each response's header and body writes into one system call was tried and measured
slower under uvloop: the Python-level write wrapper and its end-of-step callback cost more than
the second ``send()`` they saved; bench/ingest, 2026-12-04.)

The body has its own budget (``ROOMWARDEN_BODY_TIMEOUT_SECONDS``, 408, in ``read_body``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.settings import get_settings

log = structlog.get_logger(__name__)

# ZEGO's callbacks come with a few hundred bytes of request line and headers; a load balancer adds
# a few more. nginx stops at 4 x 8 KiB by default, Node at 16 KiB. The hostile-traffic chaos test
# had one connection send 39 MB of headers within a 2 s budget, all of it held in memory.
MAX_HEADER_BYTES = 64 * 1024
_DETAIL = orjson.dumps(
    {"error": "headers_too_large", "detail": f"request line and headers exceed {MAX_HEADER_BYTES} bytes"}
)
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_DETAIL), _DETAIL)
)


class BoundedProtocol(HttpToolsProtocol):
    """The header budget is a deadline per connection, moved at every response, and one timer per
    connection that re-arms itself when it finds the deadline moved: arming and cancelling a timer
    for every request was a few microseconds of the receiver's hottest path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.limit_concurrency = settings.max_connections
        self._header_timeout = settings.header_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = False
        self._headers_due = 0.0
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_headers or self.transport.is_closing():
            return  # a body (from the end of the headers to the end of the response), or closed
        # Counted after parsing, so the overrun is one read at most (asyncio reads 256 KiB at a time).
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._awaiting_headers = False
            log.warning("request_headers_too_large", limit=MAX_HEADER_BYTES)
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        """The next request's headers are due one budget from now."""
        self._awaiting_headers = True
        self._header_bytes = 0
        self._headers_due = self.loop.time() + self._header_timeout
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(self._headers_due, self._check)

    def _check(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport.is_closing():
            return  # the next _arm starts the timer again
        # A timer may fire up to a clock tick early; the deadline is what decides.
        if self.loop.time() + _TICK >= self._headers_due:
            self.transport.close()
        else:
            self._header_timer = self.loop.call_at(self._headers_due, self._check)


# uvloop's clock has millisecond resolution.
_TICK = 0.001
