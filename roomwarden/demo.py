"""``roomwarden demo``: a session started through the API, a scripted user, the transcript that came back.

Everything runs locally: roomwarden (receiver, worker, beat) and the vendor emulator standing in
for ZEGO. The demo asks roomwarden for an agent, waits for ZEGO (the emulator) to report it in
the room, has a scripted user talk to it (the user cuts the agent off once), ends the session,
and prints the transcript roomwarden built from the callbacks. Delivery is made untidy on
purpose, as ZEGO warns real delivery can be: one callback arrives twice and two arrive in the
wrong order; the transcript is the same as if they had not.

It also plays the app's back end: a local endpoint registered through ``POST /v1/endpoints``
receives the session's events (signed; the demo checks each signature) and the demo prints them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class AppEndpoint:
    """The app's side of events out: a local HTTP endpoint that checks signatures and keeps events."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: list[tuple[bool, dict[str, Any]]] = []
        received = self.events
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from worker.events.signing import sign

                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                expected = sign(
                    endpoint.secret, self.headers["webhook-id"], int(self.headers["webhook-timestamp"]), body
                )
                signed = expected in self.headers.get("webhook-signature", "").split(" ")
                received.append((signed, json.loads(body)))
                self.send_response(204 if signed else 401)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/roomwarden-events"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def has(self, event_type: str) -> bool:
        return any(event["type"] == event_type for _, event in self.events)


def run_demo(url: str, token: str, control: EmulatorControl, echo: Callable[[str], None]) -> bool:
    app = AppEndpoint()
    try:
        return _converse(url, token, control, echo, app)
    finally:
        app.close()


def _converse(
    url: str, token: str, control: EmulatorControl, echo: Callable[[str], None], app: AppEndpoint
) -> bool:
    room = f"demo-room-{secrets.token_hex(3)}"
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"}) as api:
        registered = api.post(
            "/v1/endpoints", json={"url": app.url, "description": "the demo's app back end"}
        )
        if registered.status_code != 201:
            echo(f"POST /v1/endpoints -> {registered.status_code}: {registered.text}")
            return False
        app.secret = registered.json()["secret"]
        echo(f"POST /v1/endpoints -> 201: events go to {app.url}, signed with a whsec_ secret")
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
    return _show_events(app, echo)


def _show_events(app: AppEndpoint, echo: Callable[[str], None]) -> bool:
    deadline = time.monotonic() + 30
    while not app.has("session.ended") and time.monotonic() < deadline:
        time.sleep(0.2)
    echo("")
    echo(f"Events the app's endpoint received ({app.url}):")
    for signed, event in app.events:
        data = event["data"]
        if event["type"] == "turn.completed":
            detail = f"round {data['round']} {data['speaker']}" + (
                ", interrupted" if data["interrupted"] else ""
            )
        elif event["type"] == "session.ended":
            detail = f"{data['end_reason']}, learned by {data['learned']}, {data['turn_count']} turns"
        else:
            detail = f"session {data.get('session_id')}"
        echo(f"  {event['type']:<16} {detail}  (signature {'verified' if signed else 'WRONG'})")
    if not app.has("session.ended"):
        echo("session.ended did not arrive within 30 s: is the outbound worker running?")
        return False
    return all(signed for signed, _ in app.events)


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
