"""The callback path answered before the router: body budgets kept by one watchdog, nothing else changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.testclient import TestClient

from tests.factories import Signer, receiver_client
from webhooks.receiver import PATH
from worker.settings import Settings

Receive = Callable[[], Awaitable[dict[str, Any]]]


def scope(length: int | None = None) -> dict[str, Any]:
    headers = [(b"host", b"test"), (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def call(client: TestClient, receive: Receive, length: int | None = None) -> tuple[int, dict[str, Any], bool]:
    """Drive the app in its own event loop as a server would; also say whether the request's task
    could still await afterwards (a body timeout must not leave it cancelled)."""

    async def run() -> tuple[int, dict[str, Any], bool]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await client.app(scope(length), receive, send)
        try:
            await asyncio.sleep(0)
            usable = True
        except asyncio.CancelledError:
            usable = False
        return sent[0]["status"], orjson.loads(sent[1]["body"]), usable

    assert client.portal is not None
    return client.portal.call(run)


def chunks(body: bytes, *, pause: float, parts: int = 4) -> Receive:
    """A client sending its body in ``parts`` pieces, ``pause`` seconds apart."""
    size = -(-len(body) // parts)
    pieces = [body[i : i + size] for i in range(0, len(body), size)]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(pause)
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    return receive


def test_a_body_that_never_comes_is_answered_408_and_the_server_task_goes_on(settings: Settings) -> None:
    """A client that sends headers and then nothing gets 408 once the body budget is spent."""

    async def never() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    with receiver_client(settings, body_timeout_seconds=0.3) as client:
        status, answer, usable = call(client, never, length=100)
    assert (status, answer["error"], usable) == (408, "body_timeout", True)


def test_a_body_trickling_past_its_budget_is_refused_and_one_within_it_is_stored(
    settings: Settings, signer: Signer
) -> None:
    """Slow pieces that add up past the budget are refused; the same body sent briskly is stored."""
    body = orjson.dumps(signer.callback("ASRResult"))
    with receiver_client(settings, body_timeout_seconds=0.5) as client:
        slow = call(client, chunks(body, pause=0.3), length=len(body))
        brisk = call(client, chunks(body, pause=0.01), length=len(body))
    assert slow[:2] == (408, {"error": "body_timeout", "detail": "body not received within 0.5 s"})
    assert brisk == (200, {"status": "stored"}, True)


def test_a_body_received_in_time_is_never_cut_off_by_a_slow_commit(
    settings: Settings, signer: Signer
) -> None:
    """The body budget covers the body only: a commit slower than it still answers the callback."""

    class SlowWriter:
        async def submit(self, item: object) -> str:
            await asyncio.sleep(0.8)
            return "stored"

    body = orjson.dumps(signer.callback("ASRResult"))
    with receiver_client(settings, body_timeout_seconds=0.3) as client:
        writer = client.app.state.writer  # type: ignore[attr-defined]
        client.app.state.writer = SlowWriter()  # type: ignore[attr-defined]
        try:
            answered = call(client, chunks(body, pause=0.0, parts=1), length=len(body))
        finally:
            client.app.state.writer = writer  # type: ignore[attr-defined]
    assert answered == (200, {"status": "stored"}, True)


def test_other_methods_on_the_callback_path_still_reach_the_router(settings: Settings) -> None:
    """GET on the callback path is a 405 that names POST, as before the fast path."""
    with receiver_client(settings) as client:
        answer = client.get(PATH)
    assert answer.status_code == 405
    assert "POST" in answer.headers["allow"]
