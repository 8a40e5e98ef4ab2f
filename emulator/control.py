"""``/_emulator/*``: unsigned endpoints that drive the simulated world, and a client for them.

Tests and the demo play the parts ZEGO's servers cannot see from an API: end users joining and
leaving rooms, users talking to the agent, network trouble, failing vendor calls. The endpoints
live on the AI Agent app (the Coze ones on the Coze app under ``/_emulator/coze``) and are not
part of any vendor API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from emulator.zego_conversation import InstanceNotRunning
from emulator.zego_gateway import ApiFaults
from emulator.zego_world import Instance, World


def routes(world: World, faults: ApiFaults, calls: Mapping[str, int] | None = None) -> list[BaseRoute]:
    def live(request: Request) -> Instance:
        instance = world.instances.get(request.path_params["instance_id"])
        if instance is None or instance.state == "deleted":
            raise _NotFound
        return instance

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = await request.json() if raw else {}
        return data if isinstance(data, dict) else {}

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({**world.state(), "api_faults": faults.pending(), "api_calls": dict(calls or {})})

    async def ledger(request: Request) -> JSONResponse:
        if request.query_params.get("running"):  # the count alone: cheap enough to poll often
            return JSONResponse({"Running": world.ledger.running()})
        return JSONResponse(world.ledger.report(request.query_params.get("room_id") or None))

    async def join(request: Request) -> JSONResponse:
        data = await body(request)
        stream = data.get("stream_id")
        world.user_join(request.path_params["room_id"], str(data["user_id"]), str(stream) if stream else None)
        return _ok()

    async def leave(request: Request) -> JSONResponse:
        world.user_leave(request.path_params["room_id"], request.path_params["user_id"])
        return _ok()

    async def disconnect(request: Request) -> JSONResponse:
        world.user_disconnect(request.path_params["room_id"], request.path_params["user_id"])
        return _ok()

    async def say(request: Request) -> JSONResponse:
        instance, data = live(request), await body(request)
        round_ = await world.conversation.user_round(
            instance,
            text=data["text"],
            reply=list(data.get("reply") or []),
            interrupt_after=data.get("interrupt_after"),
            user_id=data.get("user_id"),
        )
        return JSONResponse({"round": round_})

    async def script(request: Request) -> JSONResponse:
        instance, data = live(request), await body(request)
        world.conversation.start_script(instance, list(data.get("turns") or []))
        return _ok()

    async def rtc_fault(request: Request) -> JSONResponse:
        instance, data = live(request), await body(request)
        world.delete_instance(instance, int(data.get("code", 1205)), reason_exception=True)
        return _ok()

    async def callback_faults(request: Request) -> JSONResponse:
        """Faults on the AI Agent's callbacks (``/faults/callbacks``) or, on ``/faults/rtc-callbacks``,
        on the RTC room callbacks (a ``room_id`` instead of an ``agent_instance_id``)."""
        room = request.url.path.endswith("/rtc-callbacks")
        if request.method == "DELETE":
            world.sender.clear_faults(room=room)
            return _ok()
        data = await body(request)
        world.sender.add_fault(
            data["mode"],
            event=data.get("event"),
            count=int(data.get("count", 1)),
            delay_seconds=float(data.get("delay_seconds") or 0.0),
            agent_instance_id=None if room else data.get("agent_instance_id"),
            room_id=data.get("room_id") if room else None,
            room=room,
        )
        return _ok()

    async def api_faults(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            faults.clear()
            return _ok()
        data = await body(request)
        code = int(data["code"])
        faults.add(
            data["action"], code, data.get("message") or f"injected failure {code}", int(data.get("count", 1))
        )
        return _ok()

    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> JSONResponse:
            try:
                response: JSONResponse = await handler(request)
            except (_NotFound, InstanceNotRunning):
                return JSONResponse({"error": "no such running instance"}, status_code=404)
            except (KeyError, TypeError, ValueError) as error:
                return JSONResponse({"error": f"bad request: {error!r}"}, status_code=400)
            return response

        return run

    return [
        Route("/state", guarded(state), methods=["GET"]),
        Route("/ledger", guarded(ledger), methods=["GET"]),
        Route("/rooms/{room_id}/users", guarded(join), methods=["POST"]),
        Route("/rooms/{room_id}/users/{user_id}", guarded(leave), methods=["DELETE"]),
        Route("/rooms/{room_id}/users/{user_id}/disconnect", guarded(disconnect), methods=["POST"]),
        Route("/instances/{instance_id}/say", guarded(say), methods=["POST"]),
        Route("/instances/{instance_id}/script", guarded(script), methods=["POST"]),
        Route("/instances/{instance_id}/rtc_fault", guarded(rtc_fault), methods=["POST"]),
        Route("/faults/callbacks", guarded(callback_faults), methods=["POST", "DELETE"]),
        Route("/faults/rtc-callbacks", guarded(callback_faults), methods=["POST", "DELETE"]),
        Route("/faults/api", guarded(api_faults), methods=["POST", "DELETE"]),
    ]


class _NotFound(Exception):
    pass


def _ok() -> JSONResponse:
    return JSONResponse({"ok": True})


class EmulatorControl:
    """A small synchronous client for the control endpoints (tests, the demo, a terminal)."""

    def __init__(self, zego_agent_url: str, coze_url: str | None = None, *, timeout: float = 60.0) -> None:
        self._http = httpx.Client(base_url=zego_agent_url, timeout=timeout)
        self._coze = httpx.Client(base_url=coze_url, timeout=timeout) if coze_url else None

    def close(self) -> None:
        self._http.close()
        if self._coze is not None:
            self._coze.close()

    def _call(self, method: str, path: str, json: dict[str, Any] | None = None, *, coze: bool = False) -> Any:
        client = self._coze if coze else self._http
        if client is None:
            raise RuntimeError("the emulator has no Coze app")
        response = client.request(method, f"/_emulator{path}", json=json)
        response.raise_for_status()
        return response.json()

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def api_calls(self, action: str) -> int:
        """How many ``action`` requests the ZEGO AI Agent API has taken past its gateway so far."""
        return int(self.state()["api_calls"].get(action, 0))

    def ledger(self, room_id: str | None = None) -> dict[str, Any]:
        """What ZEGO bills (emulator.zego_ledger): every instance's, or one room's, and the refusals.

        Cheap beside ``state``, which carries every callback sent: poll this one.
        """
        params = f"?room_id={quote(room_id, safe='')}" if room_id else ""
        result: dict[str, Any] = self._call("GET", f"/ledger{params}")
        return result

    def running(self) -> int:
        """How many agent instances ZEGO runs (and bills) right now, over every app."""
        return int(self._call("GET", "/ledger?running=1")["Running"])

    def callbacks(self, event: str | None = None) -> list[dict[str, Any]]:
        """The sender's log (optionally one event), whether or not a callback URL is set."""
        log: list[dict[str, Any]] = self.state()["callbacks"]
        return [c for c in log if event is None or _event_of(c) == event]

    def wait_status(self, instance_id: str, round_: int, status: str, *, timeout: float = 30.0) -> None:
        """Until the agent reports ``status`` for ``round_`` (its AgentInstanceStatus callback).

        ``say`` returns as soon as the user starts speaking; a script that wants the agent to
        finish (``"IDLE"``) or to be mid-answer (``"SPEAKING"``) before going on waits here.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sent in self.callbacks("AgentInstanceStatus"):
                body, data = sent["body"], sent["body"]["Data"]
                if body["AgentInstanceId"] == instance_id and (data["Round"], data["Status"]) == (
                    round_,
                    status,
                ):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"instance {instance_id} did not report {status} for Round {round_}")

    def join(self, room_id: str, user_id: str, stream_id: str | None = None) -> None:
        """The user logs in (again, if in already), publishing ``stream_id`` when given."""
        self._call("POST", f"/rooms/{room_id}/users", {"user_id": user_id, "stream_id": stream_id})

    def leave(self, room_id: str, user_id: str) -> None:
        self._call("DELETE", f"/rooms/{room_id}/users/{user_id}")

    def disconnect(self, room_id: str, user_id: str) -> None:
        """The user's heartbeat stops: ZEGO drops them from the room 100 vendor seconds later."""
        self._call("POST", f"/rooms/{room_id}/users/{user_id}/disconnect")

    def say(
        self,
        instance_id: str,
        text: str,
        reply: Sequence[str] = (),
        *,
        interrupt_after: int | None = None,
        user_id: str | None = None,
    ) -> int:
        body = {"text": text, "reply": list(reply), "interrupt_after": interrupt_after, "user_id": user_id}
        return int(self._call("POST", f"/instances/{instance_id}/say", body)["round"])

    def script(self, instance_id: str, turns: list[dict[str, Any]]) -> None:
        self._call("POST", f"/instances/{instance_id}/script", {"turns": turns})

    def rtc_fault(self, instance_id: str, code: int = 1205) -> None:
        self._call("POST", f"/instances/{instance_id}/rtc_fault", {"code": code})

    def callback_fault(
        self,
        mode: str,
        *,
        event: str | None = None,
        count: int = 1,
        delay_seconds: float | None = None,
        agent_instance_id: str | None = None,
    ) -> None:
        body = {"mode": mode, "event": event, "count": count, "delay_seconds": delay_seconds}
        self._call("POST", "/faults/callbacks", {**body, "agent_instance_id": agent_instance_id})

    def clear_callback_faults(self) -> None:
        self._call("DELETE", "/faults/callbacks")

    def rtc_callback_fault(
        self,
        mode: str,
        *,
        event: str | None = None,
        room_id: str | None = None,
        count: int = 1,
        delay_seconds: float | None = None,
    ) -> None:
        """Bend the delivery of the RTC room callbacks (drop, duplicate, reorder, delay)."""
        body = {"mode": mode, "event": event, "count": count, "delay_seconds": delay_seconds}
        self._call("POST", "/faults/rtc-callbacks", {**body, "room_id": room_id})

    def clear_rtc_callback_faults(self) -> None:
        self._call("DELETE", "/faults/rtc-callbacks")

    def rtc_callbacks(self, event: str | None = None) -> list[dict[str, Any]]:
        """The RTC room callbacks built so far, with fault, outcome and attempts."""
        built: list[dict[str, Any]] = self.state()["rtc_callbacks"]
        return [c for c in built if event is None or c["event"] == event]

    def api_fault(self, action: str, code: int, *, message: str | None = None, count: int = 1) -> None:
        self._call(
            "POST", "/faults/api", {"action": action, "code": code, "message": message, "count": count}
        )

    def clear_api_faults(self) -> None:
        self._call("DELETE", "/faults/api")

    def coze_state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/coze/state", coze=True)
        return result

    def coze_join(self, room_id: str, uid: str) -> None:
        self._call("POST", f"/coze/rooms/{room_id}/join", {"uid": uid}, coze=True)

    def coze_say(self, room_id: str, text: str, reply: str) -> None:
        self._call("POST", f"/coze/rooms/{room_id}/say", {"text": text, "reply": reply}, coze=True)

    def coze_leave(self, room_id: str, uid: str) -> None:
        self._call("POST", f"/coze/rooms/{room_id}/leave", {"uid": uid}, coze=True)


def _event_of(callback: dict[str, Any]) -> str | None:
    body = callback.get("body", callback)
    event = body.get("Event") if isinstance(body, dict) else None
    return event if isinstance(event, str) else None
