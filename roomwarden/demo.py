"""``roomwarden demo``: a recorded conversation, signed and sent to a running service as ZEGO would.

The delivery is deliberately untidy, the way ZEGO warns real delivery can be: one callback
arrives twice and two arrive in the wrong order. The transcript printed at the end is the same
as if they had not.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from worker.signatures import callback_signature

USER = "user_7781"
AGENT_USER = "agent_7781"

# (event, data) in the order the agent produced them; Rounds rise and skip, as ZEGO's do.
_R1, _R2, _R3, _R4 = 5_830_101, 5_830_107, 5_830_112, 5_830_120
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("AgentInstanceCreated", {}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_BEGIN", "Round": _R1}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_END", "Round": _R1}),
    ("ASRResult", {"UserId": USER, "Round": _R1, "Text": "Hi, I'd like a table for two tonight."}),
    ("AgentInstanceStatus", {"Status": "THINKING", "Round": _R1}),
    ("LLMResult", {"Round": _R1, "Text": "Of course!"}),
    ("LLMResult", {"Round": _R1, "Text": "What time would you like to come in?"}),
    ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": _R1}),
    ("AgentInstanceStatus", {"Status": "IDLE", "Round": _R1}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_BEGIN", "Round": _R2}),
    ("ASRResult", {"UserId": USER, "Round": _R2, "Text": "Around half past seven, please."}),
    ("AgentInstanceStatus", {"Status": "THINKING", "Round": _R2}),
    ("LLMResult", {"Round": _R2, "Text": "Half past seven works."}),
    ("LLMResult", {"Round": _R2, "Text": "What name should I put the booking under?"}),
    ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": _R2}),
    ("AgentInstanceStatus", {"Status": "IDLE", "Round": _R2}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_BEGIN", "Round": _R3}),
    ("ASRResult", {"UserId": USER, "Round": _R3, "Text": "Chen. C, H, E, N."}),
    ("AgentInstanceStatus", {"Status": "THINKING", "Round": _R3}),
    ("LLMResult", {"Round": _R3, "Text": "Thank you, Ms Chen: a table for two at half past seven."}),
    ("LLMResult", {"Round": _R3, "Text": "Tonight we also have a six-course tasting menu with"}),
    ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": _R3}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_BEGIN", "Round": _R4}),
    (
        "Interrupted",
        {
            "Round": _R3,
            "Reason": 1,
            "PlayedText": "Thank you, Ms Chen: a table for two at half past seven. Tonight we also",
        },
    ),
    ("AgentInstanceStatus", {"Status": "IDLE", "Round": _R3}),
    ("ASRResult", {"UserId": USER, "Round": _R4, "Text": "No thanks, that's all. Bye!"}),
    ("AgentInstanceStatus", {"Status": "THINKING", "Round": _R4}),
    ("LLMResult", {"Round": _R4, "Text": "Wonderful, see you tonight."}),
    ("LLMResult", {"Round": _R4, "Text": "Goodbye!"}),
    ("AgentInstanceStatus", {"Status": "SPEAKING", "Round": _R4}),
    ("AgentInstanceStatus", {"Status": "IDLE", "Round": _R4}),
    ("UserSpeakAction", {"UserId": USER, "Action": "SPEAK_END", "Round": _R4}),
    (
        "AgentInstanceDeleted",
        {
            "Code": 0,
            "LatencyData": {
                "LLMTTFT": 412,
                "LLMTPS": 38.5,
                "TTSAudioFirstFrameTime": 236,
                "TotalCost": 981,
            },
        },
    ),
]
DUPLICATED = 10  # the second ASRResult is delivered twice
SWAPPED = (5, 6)  # the two sentences of the first reply arrive the other way round


@dataclass(frozen=True)
class Conversation:
    app_id: int
    agent_instance_id: str
    room_id: str
    callbacks: list[dict[str, Any]]


def record(app_id: int, secret: str, *, now_ms: int | None = None) -> Conversation:
    """The script as signed callbacks, timestamped over the last minute or so."""
    instance = str(random.randint(10**18, 10**19 - 1))  # noqa: S311 - an id, not a secret
    room = f"demo-room-{secrets.token_hex(3)}"
    start = (now_ms or int(time.time() * 1000)) - 1200 * len(SCRIPT)
    callbacks = []
    for index, (event, data) in enumerate(SCRIPT):
        ts = start + 1200 * index
        nonce = secrets.token_hex(8)
        body = dict(data)
        if event == "AgentInstanceCreated":
            body["CreatedTimestamp"] = ts - 18
        if event == "AgentInstanceDeleted":
            body["DeletedTimestamp"] = ts - 5
        callbacks.append(
            {
                "AppId": app_id,
                "AgentId": "bistro-host",
                "Name": "Bistro booking host",
                "AgentInstanceId": instance,
                "AgentUserId": AGENT_USER,
                "RoomId": room,
                "Event": event,
                "Sequence": 1000 + index * 3,
                "Nonce": nonce,
                "Timestamp": ts,
                "Signature": callback_signature(secret, ts, nonce),
                "Data": body,
            }
        )
    return Conversation(app_id, instance, room, callbacks)


def delivery_order(conversation: Conversation) -> list[tuple[str, dict[str, Any]]]:
    """The untidy delivery: (note, callback) pairs."""
    order: list[tuple[str, dict[str, Any]]] = []
    callbacks = list(conversation.callbacks)
    a, b = SWAPPED
    callbacks[a], callbacks[b] = callbacks[b], callbacks[a]
    for index, callback in enumerate(callbacks):
        note = "out of order" if index in SWAPPED else ""
        order.append((note, callback))
        if index == DUPLICATED:
            order.append(("duplicate", callback))
    return order


def run_demo(url: str, app_id: int, secret: str, token: str, echo: Callable[[str], None]) -> bool:
    conversation = record(app_id, secret)
    echo(f"Sending a recorded conversation (agent instance {conversation.agent_instance_id}):")
    with httpx.Client(base_url=url, timeout=10) as client:
        for note, callback in delivery_order(conversation):
            response = client.post("/callbacks/zego", json=callback)
            status = response.json().get("status", response.text)
            data = callback["Data"]
            label = data.get("Text") or data.get("Status") or data.get("Action") or ""
            echo(
                f"  seq {callback['Sequence']:>5}  {callback['Event']:<21} {str(label)[:38]:<38}"
                f" -> {response.status_code} {status}{'  (' + note + ')' if note else ''}"
            )
        transcript = _wait_for_transcript(client, conversation, token)
    if transcript is None:
        echo("The transcript did not complete within 30 s: is a worker running?")
        return False
    session, turns = transcript
    echo("")
    echo(
        f"Session {session['id']}: {session['state']} ({session['end_reason']}), "
        f"room {session['room_id']}, user {session['user_id']}"
    )
    for turn in turns:
        who = "User " if turn["speaker"] == "user" else "Agent"
        echo(f"  [{turn['round']}] {who}: {turn['text']}")
        if turn["interrupted"]:
            echo(f'          (interrupted; the user heard: "{turn["played_text"]}")')
    latency = session["instances"][0]["latency"] if session["instances"] else None
    if latency:
        echo(
            f"  Latency: LLM first token {latency['LLMTTFT']} ms, TTS first frame "
            f"{latency['TTSAudioFirstFrameTime']} ms"
        )
    return True


def _wait_for_transcript(
    client: httpx.Client, conversation: Conversation, token: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    headers = {"Authorization": f"Bearer {token}"}
    expected_turns = sum(1 for event, _ in SCRIPT if event == "ASRResult") * 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        key = conversation.agent_instance_id
        session = client.get(f"/v1/sessions/{key}", headers=headers)
        if session.status_code == 200 and session.json()["state"] == "ended":
            turns = client.get(f"/v1/sessions/{key}/transcript", headers=headers).json()["turns"]
            if len(turns) >= expected_turns and all(t["text"] for t in turns):
                return session.json(), turns
        time.sleep(0.3)
    return None
