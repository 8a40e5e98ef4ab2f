"""The end users and their app during a billed-day run: one coroutine per visit, in real time.

Each user plays the app's part through roomwarden's API (``POST /v1/sessions``, ``DELETE``,
``GET``) and the person's part through the emulator's control endpoints (join and leave the
room, speak, lose the heartbeat), as an app would have it: the user is in the room before the
agent is asked for, so the seconds before the agent arrives are never billed unattended.

What a visit does, by kind (``billed_day_plan.Visit``): every kind talks (an utterance after each
gap), then

- normal: the app hangs up (DELETE) and the user stays until the agent is gone, then leaves;
- leaves: the user leaves without hanging up; the app never calls DELETE;
- quiet: the user stops talking, sits in the room for ``quiet_s``, then the app dies;
- rtc_fault: half-way the emulator throws the agent out of the room (1201, 1203-1207); the user
  waits for a new agent (a policy recreates it) or, if none comes, leaves; else as normal;
- dropped_deletion: as normal, but ZEGO's AgentInstanceDeleted callback is lost; or (every other
  visit) the app's DELETE is lost: the user leaves and nothing else happens.

Lost to quota: the session was never admitted (roomwarden's queue timed out, it failed, or the
user stopped waiting after ``PATIENCE_S`` and the app cancelled it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from billed_day_plan import PATIENCE_S, RECOVERY_PATIENCE_S, Visit

LLM = {"Url": "https://llm.example/v1/chat/completions", "ApiKey": "sk-bench-not-a-secret", "Model": "m"}
GONE_STATES = frozenset({"ended", "failed"})


@dataclass
class Outcome:
    visit: Visit
    session_id: str | None = None
    admitted: bool = False
    lost: str | None = None  # why it was never admitted
    waited_s: float = 0.0  # emulated seconds from the request to the agent
    recovered: int = 0  # new agents after the one in the room dropped out
    errors: list[str] = field(default_factory=list)


@dataclass
class Driver:
    """Real time for the users: ``scale`` emulated seconds pass per real second."""

    api: httpx.AsyncClient  # roomwarden, with the admin token
    control: httpx.AsyncClient  # the emulator's AI Agent app (``/_emulator/...``)
    scale: float
    started: float  # time.monotonic() at the day's 00:00
    poll_s: float = 0.05  # real seconds between polls while waiting

    async def sleep(self, emulated_s: float) -> None:
        await asyncio.sleep(max(0.0, emulated_s / self.scale))

    def emulated_now(self) -> float:
        return (time.monotonic() - self.started) * self.scale

    async def _control(self, method: str, path: str, json: dict[str, Any] | None = None) -> httpx.Response:
        return await self.control.request(method, f"/_emulator{path}", json=json)

    async def session(self, session_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/sessions/{session_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def live_agent(
        self, session_id: str, patience_s: float, *, not_this: str | None = None
    ) -> tuple[str | None, str]:
        """The session's agent (other than ``not_this``, which ZEGO has just dropped), waiting up to
        ``patience_s``; (None, state) if none comes.

        The agent is there as soon as roomwarden has its AgentInstanceId (ZEGO made it): the user's
        client hears it join the room, as a real app's would, without waiting for roomwarden to
        apply its AgentInstanceCreated. An agent ZEGO drops meanwhile answers 404 to the user.
        """
        deadline = self.emulated_now() + patience_s
        while True:
            session = await self.session(session_id)
            live = [
                i["agent_instance_id"]
                for i in session["instances"]
                if i["state"] != "deleted" and i["agent_instance_id"] != not_this
            ]
            if session["state"] not in GONE_STATES and live:
                return str(live[-1]), str(session["state"])
            if session["state"] in GONE_STATES or self.emulated_now() > deadline:
                return None, str(session["state"])
            await asyncio.sleep(self.poll_s)

    async def agent_gone(self, room_id: str, timeout_s: float = 10.0) -> None:
        """Until ZEGO runs no agent in the room (the ledger's word, not roomwarden's), real seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = await self._control("GET", f"/ledger?room_id={room_id}")
            if not any(i["Running"] for i in response.json()["Instances"]):
                return
            await asyncio.sleep(self.poll_s)

    async def play(self, visit: Visit, body: dict[str, Any]) -> Outcome:
        outcome = Outcome(visit)
        await self.sleep(visit.arrival_s - self.emulated_now())
        try:
            await self._play(visit, body, outcome)
        except (httpx.HTTPError, KeyError, ValueError) as error:
            outcome.errors.append(f"{type(error).__name__}: {error}")
        return outcome

    async def _play(self, visit: Visit, body: dict[str, Any], outcome: Outcome) -> None:
        room, user = visit.room_id, visit.user_id
        await self._control("POST", f"/rooms/{room}/users", {"user_id": user})
        asked = self.emulated_now()
        response = await self.api.post("/v1/sessions", json=body)
        if response.status_code != 202:
            outcome.lost = f"refused {response.status_code}"
            await self._control("DELETE", f"/rooms/{room}/users/{user}")
            return
        session_id = outcome.session_id = str(response.json()["id"])
        agent, state = await self.live_agent(session_id, PATIENCE_S)
        if agent is None:
            final = await self.session(session_id)
            outcome.lost = final.get("end_reason") or final.get("failure_message") or state
            if state not in GONE_STATES:
                outcome.lost = "gave_up_waiting"
                await self.api.delete(f"/v1/sessions/{session_id}")
            await self._control("DELETE", f"/rooms/{room}/users/{user}")
            return
        outcome.admitted, outcome.waited_s = True, self.emulated_now() - asked

        for turn, gap in enumerate(visit.gaps_s):
            await self.sleep(gap)
            utterance = {"text": f"turn {turn}", "reply": ["Ok."]}
            said = await self._control("POST", f"/instances/{agent}/say", utterance)
            fault = visit.kind == "rtc_fault" and turn + 1 == visit.fault_after
            if fault:
                await self._control("POST", f"/instances/{agent}/rtc_fault", {"code": visit.fault_code})
            if fault or said.status_code == 404:  # the agent is gone from under the user
                agent, _ = await self.live_agent(session_id, RECOVERY_PATIENCE_S, not_this=agent)
                if agent is None:
                    break
                outcome.recovered += 1

        if visit.kind == "quiet":
            await self.sleep(visit.quiet_s)
            await self._control("POST", f"/rooms/{room}/users/{user}/disconnect")
            return
        if visit.kind == "leaves" or (visit.kind == "dropped_deletion" and not visit.lose_callback):
            await self.sleep(visit.linger_s)
            await self._control("DELETE", f"/rooms/{room}/users/{user}")
            return
        if agent is not None:
            if visit.lose_callback:
                drop = {"mode": "drop", "event": "AgentInstanceDeleted", "agent_instance_id": agent}
                await self._control("POST", "/faults/callbacks", drop)
            await self.api.delete(f"/v1/sessions/{session_id}")
            await self.agent_gone(room)
        await self._control("DELETE", f"/rooms/{room}/users/{user}")


def session_body(visit: Visit) -> dict[str, Any]:
    """POST /v1/sessions for one visit: ASRResult on, so roomwarden hears the user (idle policy)."""
    return {
        "provider": "zego",
        "params": {
            "AgentId": "concierge",
            "UserId": visit.user_id,
            "RTC": {
                "RoomId": visit.room_id,
                "AgentUserId": f"agent_{visit.n}",
                "AgentStreamId": f"agent_stream_{visit.n}",
                "UserStreamId": f"user_stream_{visit.n}",
            },
            "LLM": LLM,
            "CallbackConfig": {"ASRResult": 1},
        },
    }
