"""Slow clients against a real uvicorn: cut off after the header and body budgets, and bounded in
number, while valid callbacks go on being stored."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.factories import Signer
from tests.processes import Stack

pytestmark = pytest.mark.slow


def dribbler(stack: Stack, sent: bytes) -> socket.socket:
    """A connection that sends ``sent`` and then nothing more."""
    connection = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    connection.sendall(sent)
    return connection


def closed_within(connection: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server ended the connection within ``seconds``, and what it said before."""
    connection.settimeout(seconds)
    said = b""
    try:
        while chunk := connection.recv(4096):
            said += chunk
    except TimeoutError:
        return False, said
    except ConnectionResetError:
        pass
    return True, said


def test_a_request_whose_headers_never_finish_is_cut_off_and_others_are_served(
    receiver_process: Callable[..., Stack],
) -> None:
    stack = receiver_process(header_timeout_seconds="1")
    slow = [dribbler(stack, b"POST /callbacks/zego HTTP/1.1\r\nHost: x\r\nContent-") for _ in range(20)]
    silent = dribbler(stack, b"")
    response = httpx.post(f"{stack.url}/callbacks/zego", json=Signer().callback("ASRResult"), timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "stored"
    for connection in [*slow, silent]:
        closed, said = closed_within(connection, 5)
        assert closed, "a connection without complete headers was kept open"
        assert said == b""
        connection.close()


def test_a_body_that_stops_coming_is_408(receiver_process: Callable[..., Stack]) -> None:
    stack = receiver_process(body_timeout_seconds="1")
    connection = dribbler(
        stack,
        b"POST /callbacks/zego HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 500\r\n\r\n{"AppId": 1',
    )
    connection.settimeout(5)
    said = b""
    while b"\r\n\r\n" not in said or not said.rstrip().endswith(b"}"):  # headers and body may come apart
        chunk = connection.recv(4096)
        if not chunk:
            break
        said += chunk
    connection.close()
    assert said.startswith(b"HTTP/1.1 408"), said[:200]
    assert b"body_timeout" in said


def test_past_the_connection_limit_new_requests_get_503_until_slots_free(
    receiver_process: Callable[..., Stack],
) -> None:
    stack = receiver_process(max_connections="5", header_timeout_seconds="2")
    held = [dribbler(stack, b"GET /healthz HTTP/1.1\r\n") for _ in range(5)]
    time.sleep(0.3)
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 503
    for connection in held:
        closed_within(connection, 5)
        connection.close()
    assert httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
