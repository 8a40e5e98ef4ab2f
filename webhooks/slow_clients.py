"""Cutting off clients too slow to be anything but an attack (slowloris), in the HTTP server itself.

uvicorn closes a keep-alive connection that stays idle, but a connection that has sent part of
its request line or headers is never timed out: one review held 400 such connections open for a
minute. ``BoundedProtocol`` is uvicorn's httptools protocol with one more timer: from the
moment a connection opens (or a response ends) its next request's headers must be complete
within ``ROOMWARDEN_HEADER_TIMEOUT_SECONDS``, or the connection is closed. It also sets uvicorn's
own connection limit from ``ROOMWARDEN_MAX_CONNECTIONS`` (past it, requests are answered 503), so
that the one settings object, read in the web process, governs both. The Procfile and
``roomwarden run`` start uvicorn with ``--http webhooks.slow_clients:BoundedProtocol``.

The body has its own budget (``ROOMWARDEN_BODY_TIMEOUT_SECONDS``, 408, in ``read_body``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.settings import get_settings


class BoundedProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.limit_concurrency = settings.max_connections
        self._header_timeout = settings.header_timeout_seconds
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
