"""``roomwarden demo``: a session started through the API, a scripted user, the transcript that came back.

Everything runs locally: roomwarden (receiver, worker, beat) and the vendor emulator standing in
for ZEGO. The demo asks roomwarden for an agent, waits for ZEGO (the emulator) to report it in
the room, has a scripted user talk to it (the user cuts the agent off once), ends the session,
and prints the transcript roomwarden built from the callbacks. Delivery is made untidy on
purpose, as ZEGO warns real delivery can be: one callback arrives twice and two arrive in the
wrong order; the transcript is the same as if they had not.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from emulator.control import EmulatorControl

USER = "user_7781"

LLM = {
    "Url": "https://llm.example.com/v1/chat/completions",
    "ApiKey": "sk-demo-0000-not-a-real-key",  # sealed at rest, never shown by the API
    "Model": "bistro-host-1",
    "SystemPrompt": "You take table bookings for a small bistro.",
}
TTS = {
    "Vendor": "ByteDanceV3",
    "Params": {"app": {"appid": "demo", "token": "demo-token", "cluster": "volcano_tts"}},
}

# (what the user says, the agent's reply sentences, sentences spoken before the user cuts in)
CONVERSATION: list[tuple[str, list[str], int | None]] = [
    ("Hi, I'd like a table for two tonight.", ["Of course!", "What time would you like to come in?"], None),
    ("Around half past seven, please.", ["Half past seven works.", "What name should I put it under?"], None),
    (
        "Chen. C, H, E, N.",
        [
            "Thank you, Ms Chen: a table for two at half past seven.",
            "Tonight we also have a six-course tasting menu with paired wines.",
            "Would you like to hear about it?",
        ],
        1,
    ),
    ("No thanks, that's all. Bye!", ["Wonderful, see you tonight.", "Goodbye!"], None),
]


def session_request(room: str) -> dict[str, Any]:
    suffix = room.rsplit("-", 1)[-1]
    return {
        "provider": "zego",
        "agent": {"AgentId": "bistro-host", "Name": "Bistro booking host", "LLM": LLM, "TTS": TTS},
        "params": {
            "AgentId": "bistro-host",
            "UserId": USER,
            "RTC": {
                "RoomId": room,
                "AgentUserId": f"agent_{suffix}",
                "AgentStreamId": f"agent_stream_{suffix}",
                "UserStreamId": f"user_stream_{suffix}",
            },
            "LLM": LLM,
            "TTS": TTS,
            "CallbackConfig": {
                "ASRResult": 1,
                "LLMResult": 1,
                "Interrupted": 1,
                "UserSpeakAction": 1,
                "AgentInstanceStatus": 1,
            },
        },
    }


def run_demo(url: str, token: str, control: EmulatorControl, echo: Callable[[str], None]) -> bool:
    room = f"demo-room-{secrets.token_hex(3)}"
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as api:
        response = api.post("/v1/sessions", json=session_request(room))
        if response.status_code != 202:
            echo(f"POST /v1/sessions -> {response.status_code}: {response.text}")
            return False
        session_id = response.json()["id"]
        echo(f"POST /v1/sessions -> 202, session {session_id} is starting (room {room})")
        session = _wait(api, session_id, lambda s: s["state"] != "starting", 30)
        if session is None or session["state"] != "active":
            echo(f"The session did not become active: {session and session.get('failure_message')}")
            return False
        instance = session["join"]["agent_instance_id"]
        echo(f"ZEGO reports agent instance {instance} in the room: session is active")

        control.join(room, USER)
        control.callback_fault("duplicate", event="ASRResult")
        control.callback_fault("reorder", event="LLMResult")
        echo("The user joins and talks (ZEGO will deliver one callback twice and two out of order):")
        for text, reply, cut in CONVERSATION:
            echo(f"  user: {text}")
            round_ = control.say(instance, text, reply, interrupt_after=cut, user_id=USER)
            # ZEGO answers at its own pace: the next line waits for the agent to finish (or, for
            # the cut-off reply, to be mid-sentence) as a person would.
            control.wait_status(instance, round_, "SPEAKING" if cut is not None else "IDLE")
            if cut is not None:
                echo(f"  (the user cuts the agent off after {cut} sentence)")

        response = api.delete(f"/v1/sessions/{session_id}")
        echo(f"DELETE /v1/sessions/{session_id} -> {response.status_code}")
        ended = _wait(api, session_id, lambda s: s["state"] == "ended", 30)
        turns = _transcript(api, session_id, expected=2 * len(CONVERSATION))
    if ended is None or turns is None:
        echo("The session did not end with a full transcript within 30 s: is a worker running?")
        return False
    echo("")
    echo(f"Session {session_id}: {ended['state']} ({ended['end_reason']}), room {room}, user {USER}")
    for turn in turns:
        who = "User " if turn["speaker"] == "user" else "Agent"
        echo(f"  [{turn['round']}] {who}: {turn['text']}")
        if turn["interrupted"]:
            echo(f'          (interrupted; the user heard: "{turn["played_text"]}")')
    latency = ended["instances"][0]["latency"] if ended["instances"] else None
    if latency:
        echo(
            f"  Latency: LLM first token {latency['LLMTTFT']} ms, TTS first frame "
            f"{latency['TTSAudioFirstFrameTime']} ms"
        )
    return True


def _wait(
    api: httpx.Client, session_id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    session: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        response = api.get(f"/v1/sessions/{session_id}")
        if response.status_code == 200:
            session = response.json()
            if done(session):
                return session
        time.sleep(0.2)
    return session if session is not None and done(session) else None


def _transcript(api: httpx.Client, session_id: str, *, expected: int) -> list[dict[str, Any]] | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        turns: list[dict[str, Any]] = api.get(f"/v1/sessions/{session_id}/transcript").json()["turns"]
        if len(turns) >= expected and all(t["text"] for t in turns):
            return turns
        time.sleep(0.2)
    return None
