"""One socket write per response, where uvicorn's httptools protocol makes two.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``
and its body on ``http.response.body``: two ``send()`` system calls, and on loopback or a
virtual machine two wake-ups of the client, for every callback answered. The receiver answers
thousands a second in one process, so it is most of what the kernel does for it: the held first
write goes out joined with the next one (the body, sent in the same event-loop step by every
route here), or alone at the end of the step when nothing follows (a stream's headers, a
``100 Continue``), so nothing waits longer than the step that wrote it. What the client receives
is byte for byte the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each request's response cycle writing through ``HeldWrite``."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # not an upgrade request, which makes no cycle
            self.cycle.transport = HeldWrite(self.transport, self.loop)  # type: ignore[assignment]


class HeldWrite:
    """The transport as one response cycle sees it: its first write held until the second, or
    until the end of the current event-loop step; every later write passes straight through."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._first = True
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
