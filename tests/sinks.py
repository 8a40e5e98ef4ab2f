"""App endpoints for the events tests: real HTTP servers that record what they receive, and a
Standard Webhooks verifier written from the specification, independent of roomwarden's signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.processes import free_port


def verify(secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None) -> bool:
    """The receiving side of https://www.standardwebhooks.com/ (spec section "Verifying webhooks").

    The key is the base64 after ``whsec_``; the signed content is ``id.timestamp.body``; the
    header holds space-separated ``v1,<base64 sig>`` entries, any of which may match; the
    timestamp must be within five minutes.
    """
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((now or time.time()) - int(timestamp)) > 300:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = hmac.new(
        key, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256
    ).digest()
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(signature), expected):
            return True
    return False


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Sink:
    """An endpoint. ``answer(n)`` picks the status of the n-th request (1-based); ``delay`` stalls."""

    answer: Callable[[int], int] = lambda n: 204
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Sink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with sink._lock:
                    sink.received.append(
                        Received(time.time(), {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    n = len(sink.received)
                if sink.delay:
                    time.sleep(sink.delay)
                status = sink.answer(n)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # roomwarden gave up waiting (its timeout): that is what a slow endpoint is

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def by_id(self) -> dict[str, dict[str, Any]]:
        """One entry per webhook-id (at least once means a retry may repeat one)."""
        with self._lock:
            return {r.headers["webhook-id"]: r.event for r in self.received}


def dead_url() -> str:
    """A port nobody listens on: connection refused, every time."""
    return f"http://127.0.0.1:{free_port()}/hooks"
