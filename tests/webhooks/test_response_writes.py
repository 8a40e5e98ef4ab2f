"""Answers leave the server in one write, byte for byte as uvicorn's own protocol sends them, and a
streamed response's headers are not held back until its first body chunk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from webhooks.response_writes import CoalescingProtocol

Send = Callable[[dict[str, Any]], Awaitable[None]]
ANSWER = b'{"status":"stored"}'
REQUEST = b"POST /callbacks/zego HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def answer(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


async def exchange(protocol: type[HttpToolsProtocol], app: Any, requests: int) -> tuple[bytes, int]:
    """What a client reads after ``requests`` requests on one keep-alive connection, and how many
    writes the server's socket transport took for them (counted on the real transport)."""
    loop = asyncio.get_running_loop()
    config = Config(app, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    writes = 0

    def serve() -> HttpToolsProtocol:
        made = protocol(config, state, {}, _loop=loop)
        connection_made = made.connection_made

        def counted(transport: asyncio.Transport) -> None:
            write = transport.write

            def counting(data: Any) -> None:
                nonlocal writes
                writes += 1
                write(data)

            transport.write = counting  # type: ignore[method-assign]
            connection_made(transport)

        made.connection_made = counted  # type: ignore[method-assign]
        return made

    server = await loop.create_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    said = b""
    for _ in range(requests):
        writer.write(REQUEST)
        said += await reader.readuntil(ANSWER)
    writer.close()
    server.close()
    await server.wait_closed()
    return said, writes


def test_each_answer_is_one_write_and_the_same_bytes_as_uvicorn_sends() -> None:
    ours, our_writes = asyncio.run(exchange(CoalescingProtocol, answer, 3))
    theirs, their_writes = asyncio.run(exchange(HttpToolsProtocol, answer, 3))
    strip_date = b"\r\n".join(line for line in ours.split(b"\r\n") if not line.startswith(b"date:"))
    assert strip_date == b"\r\n".join(line for line in theirs.split(b"\r\n") if not line.startswith(b"date:"))
    assert ours.count(b"HTTP/1.1 200 OK") == 3
    assert (our_writes, their_writes) == (3, 6)


def test_a_streamed_response_sends_its_headers_before_its_first_chunk() -> None:
    """An event stream's client sees the 200 and headers while the app still waits for its first event."""

    async def scenario() -> bytes:
        first_event = asyncio.Event()

        async def stream(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Send) -> None:
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await first_event.wait()
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": False})

        loop = asyncio.get_running_loop()
        config = Config(stream, lifespan="off", access_log=False)
        config.load()
        server = await loop.create_server(
            lambda: CoalescingProtocol(config, ServerState(), {}, _loop=loop), "127.0.0.1", 0
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        first_event.set()
        await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), 5)
        writer.close()
        server.close()
        return headers

    headers = asyncio.run(scenario())
    assert headers.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in headers
