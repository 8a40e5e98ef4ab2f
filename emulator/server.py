"""``Emulator``: the stand-in vendor servers (ZEGO AI Agent and RTC, Coze, an LLM) in one thread.

One loop holds all mutable state (the ZEGO world, the Coze world), so nothing needs a lock. The
listening sockets are bound in ``start()`` before the thread runs, so port 0 becomes a real
free port whose number is known at once, and ``start()`` returns only once every server accepts
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from emulator.clock import Clock
from emulator.config import EmulatorConfig
from emulator.control import EmulatorControl
from emulator.llm_api import create_llm_app
from emulator.zego_agent_api import create_agent_app
from emulator.zego_rtc_api import create_rtc_app
from emulator.zego_world import World

log = logging.getLogger(__name__)
START_TIMEOUT_S = 10.0


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock(config.time_scale)
        self.world: World | None = None
        self._sockets: list[socket.socket] = []
        self._servers: list[uvicorn.Server] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._control: EmulatorControl | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def zego_agent_url(self) -> str:
        return self._url(0)

    @property
    def zego_rtc_url(self) -> str:
        return self._url(1)

    @property
    def coze_url(self) -> str:
        return self._url(2)

    @property
    def llm_url(self) -> str:
        """The LLM stand-in's base; the chat completions URL is ``llm_url + "/v1/chat/completions"``."""
        return self._url(3)

    @property
    def control(self) -> EmulatorControl:
        if self._control is None:
            raise RuntimeError("the emulator is not running")
        return self._control

    def _url(self, index: int) -> str:
        if not self._sockets:
            raise RuntimeError("the emulator is not running")
        host, port = self._sockets[index].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        config = self.config
        ports = (config.zego_agent_port, config.zego_rtc_port, config.coze_port, config.llm_port)
        self._sockets = [_bind(config.host, port) for port in ports]
        self._thread = threading.Thread(target=self._run, name="emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._failure is not None:
            self.stop()
            raise RuntimeError("the emulator failed to start") from self._failure
        self._control = EmulatorControl(self.zego_agent_url, self.coze_url)

    def stop(self) -> None:
        """Stop the servers, cancel the world's timers, close the sender; idempotent."""
        if self._control is not None:
            self._control.close()
            self._control = None
        loop, thread, stopping = self._loop, self._thread, self._stopping
        if loop is not None and thread is not None and thread.is_alive():
            if stopping is not None:
                loop.call_soon_threadsafe(stopping.set)
            thread.join(timeout=START_TIMEOUT_S)
        for sock in self._sockets:
            sock.close()
        self._thread = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start() through _failure
            self._failure = error
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        stopping = self._stopping = asyncio.Event()
        world = World(self.config, self.clock)
        self.world = world
        await world.start()
        apps = [
            create_agent_app(world),
            create_rtc_app(world),
            _coze_app(self.config, self.clock),
            create_llm_app(),
        ]
        self._servers = [
            uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False))
            for app in apps
        ]
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, self._sockets, strict=True)
        ]
        try:
            while not all(server.started for server in self._servers):
                if any(task.done() for task in tasks):
                    raise RuntimeError("a server stopped while starting")
                await asyncio.sleep(0.005)
            self._ready.set()
            await stopping.wait()
        finally:
            await _fast_shutdown(self._servers, tasks)
            await world.aclose()


async def _fast_shutdown(servers: list[uvicorn.Server], tasks: list[asyncio.Task[None]]) -> None:
    """Stop at once rather than on uvicorn's 0.1 s tick plus its 0.1 s grace sleep.

    Nothing outside this process depends on a graceful drain: close the listeners and the open
    connections, cancel the serve loops, then let each app's lifespan shut down.
    """
    for server in servers:
        server.should_exit = True
        for listener in getattr(server, "servers", []):
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        lifespan = getattr(server, "lifespan", None)
        if server.started and lifespan is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lifespan.shutdown(), timeout=2.0)


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the
    # listener's proto says TCP, and without it every keep-alive answer waits ~40 ms for Nagle.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _coze_app(config: EmulatorConfig, clock: Clock) -> Starlette:
    """The Coze emulator if it is installed, else an app that says it is not."""
    try:
        from emulator.coze_api import create_coze_app
    except ImportError:
        log.warning("coze_emulator_missing")

        async def missing(request: Request) -> JSONResponse:
            return JSONResponse({"code": 5000, "msg": "the Coze emulator is not installed"}, status_code=501)

        return Starlette(routes=[Route("/{path:path}", missing, methods=["GET", "POST", "DELETE"])])
    return create_coze_app(config, clock)
