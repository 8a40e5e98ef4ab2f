"""Live control of a running agent, end to end: receiver, worker and beat as real processes, and the
emulator standing in for ZEGO over real HTTP (say, interrupt, messages, PATCH, context)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deployment import API_KEY, Deployment, zego_request
from tests.processes import wait_until

pytestmark = pytest.mark.slow

READ_TOKEN = "analyst-read-token-4242"
APP = {"app_key": "a", "ak_id": "b", "ak_key": "c"}


def _live(d: Deployment, room: str) -> tuple[str, str]:
    session_id = d.start(zego_request(room))
    instance = d.wait_state(session_id, "active")["join"]["agent_instance_id"]
    d.control.join(room, "user_1")
    return session_id, instance


def _cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``roomwarden`` command line with the deployment's settings, as an operator runs it."""
    command = [str(Path(sys.executable).parent / "roomwarden"), *args]
    return subprocess.run(command, env=d.stack.receiver.env, capture_output=True, text=True, timeout=60)


def _timeline(d: Deployment, session_id: str) -> list[dict[str, Any]]:
    return [e for e in d.session(session_id)["timeline"] if e["event"] == "Control"]


def test_say_interrupt_and_messages_drive_a_live_agent_and_are_recorded(
    deploy: Callable[..., Deployment],
) -> None:
    """An app makes the agent speak, cuts it off and feeds it a question: each call answers its
    Round, is an action and a timeline entry, and the spoken text is a 'say' turn."""
    d = deploy()
    session_id, instance = _live(d, "room_ctl")

    said = d.api.post(f"/v1/sessions/{session_id}/say", json={"text": "Welcome to the hotel."})
    assert said.status_code == 200, said.text
    say_round = said.json()["round"]
    assert said.json()["action"]["action"] == "say" and said.json()["action"]["state"] == "done"
    d.control.wait_status(instance, say_round, "IDLE")

    long = "One moment. " * 20
    queued = d.api.post(f"/v1/sessions/{instance}/say", json={"text": long[:290], "add_to_history": False})
    assert queued.status_code == 200, queued.text
    d.control.wait_status(instance, queued.json()["round"], "SPEAKING")
    cut = d.api.post(f"/v1/sessions/{session_id}/interrupt")
    assert cut.status_code == 200, cut.text
    assert cut.json()["round"] == queued.json()["round"]

    asked = d.api.post(
        f"/v1/sessions/{session_id}/messages", json={"text": "Tell the guest about breakfast."}
    )
    assert asked.status_code == 200, asked.text
    d.control.wait_status(instance, asked.json()["round"], "IDLE")

    context = d.api.get(f"/v1/sessions/{session_id}/context")
    assert context.status_code == 200, context.text
    contents = [m["content"] for m in context.json()["messages"]]
    assert "Welcome to the hotel." in contents  # add_to_history (the default) keeps it
    assert long[:290] not in contents

    def say_turn() -> list[dict[str, Any]]:
        return [t for t in d.turns(session_id) if t["round"] == say_round and t["speaker"] == "agent"]

    wait_until(lambda: bool(say_turn()), 10, "the say turn in the transcript")
    assert say_turn()[0]["source"] == "say" and say_turn()[0]["text"] == "Welcome to the hotel."
    wait_until(
        lambda: any(t["round"] == asked.json()["round"] and t["text"] for t in d.turns(session_id)),
        10,
        "the LLM's answer to the injected message",
    )
    answered = [t for t in d.turns(session_id) if t["round"] == asked.json()["round"]]
    assert all(t["source"] is None for t in answered)  # the LLM's words, not the app's

    kinds = [(a["action"], a["state"], a["policy"]) for a in d.actions(session_id)]
    assert sorted(kinds) == sorted(
        [(k, "done", "control") for k in ("say", "say", "interrupt", "message", "context")]
    )
    entries = _timeline(d, session_id)
    assert [e["detail"]["action"] for e in entries] == ["say", "say", "interrupt", "message", "context"]
    assert entries[0]["round"] == say_round and entries[0]["agent_instance_id"] == instance

    cli = _cli(d, "say", session_id, "Checkout is at noon.", "--queue")
    assert cli.returncode == 0 and "said in Round" in cli.stdout, cli.stderr
    cli = _cli(d, "context", instance)
    assert cli.returncode == 0 and "Welcome to the hotel." in cli.stdout, (cli.stderr, d.session(session_id))

    assert d.api.delete(f"/v1/sessions/{session_id}").status_code == 202
    d.wait_state(session_id, "ended")
    cli = _cli(d, "interrupt", session_id)
    assert cli.returncode == 1 and "not_live" in cli.stderr
    for path, body in (("say", {"text": "Still there?"}), ("interrupt", None), ("messages", {"text": "Hi"})):
        late = d.api.post(f"/v1/sessions/{session_id}/{path}", json=body)
        assert late.status_code == 409 and late.json()["error"] == "not_live", late.text
    assert d.api.get(f"/v1/sessions/{session_id}/context").status_code == 409
    assert d.api.patch(f"/v1/sessions/{session_id}", json={"ASR": {"Vendor": "Tencent"}}).status_code == 409
    assert len(d.actions(session_id)) == 7  # 5 + 2 from the CLI; a refusal before ZEGO is not one
    assert API_KEY not in d.stack.logs()


def test_bad_requests_are_refused_clearly_and_a_patch_is_checked_like_a_creation(
    deploy: Callable[..., Deployment],
) -> None:
    """Bad bodies are 400 naming what is wrong, a read token is 403, a PATCH with a field ZEGO
    would refuse never reaches it, a good one does, and a rate-limited ZEGO is a 429, not a loss."""
    d = deploy(env={"ROOMWARDEN_READ_TOKEN": READ_TOKEN})
    session_id, instance = _live(d, "room_bad")
    say = f"/v1/sessions/{session_id}/say"

    def refused(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert words in response.json()["detail"], response.text

    refused(d.api.post(say, json={}), 400, "text is required")
    refused(d.api.post(say, json={"text": "x" * 301}), 400, "at most 300")
    refused(d.api.post(say, json={"text": "hi", "loud": True}), 400, "unknown field(s): loud")
    refused(d.api.post(say, json={"text": "hi", "interrupt": "yes"}), 400, "interrupt must be true or false")
    refused(d.api.post(say, content=b"{not json"), 400, "JSON object")
    refused(d.api.post(f"/v1/sessions/{session_id}/messages", json={"text": ""}), 400, "text is required")
    refused(d.api.patch(f"/v1/sessions/{session_id}", json={}), 400, "at least one of LLM, TTS, ASR")
    refused(d.api.patch(f"/v1/sessions/{session_id}", json={"RTC": {}}), 400, "unknown field(s): RTC")
    hot = d.api.patch(
        f"/v1/sessions/{session_id}",
        json={"LLM": {"Url": "https://llm.example/v1", "ApiKey": "k", "Model": "m", "Temperature": 5}},
    )
    assert hot.status_code == 400 and hot.json()["field"] == "LLM.Temperature", hot.text
    filtered = d.api.patch(
        f"/v1/sessions/{session_id}",
        json={"TTS": {"Vendor": "Aliyun", "Params": {"app": APP}, "TerminatorText": "#"}},
    )
    assert filtered.status_code == 400 and "TTS.TerminatorText" in filtered.text, filtered.text
    assert d.control.api_calls("UpdateAgentInstance") == 0
    reader = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert d.api.post(say, json={"text": "hi"}, headers=reader).status_code == 403
    assert d.api.get(f"/v1/sessions/{session_id}/context", headers=reader).status_code == 403
    assert d.api.get("/v1/sessions/no-such-session/context").status_code == 404

    secret = "sk-new-key-never-logged-77"
    changed = d.api.patch(
        f"/v1/sessions/{session_id}",
        json={"LLM": {"Url": "https://llm.example/v2", "ApiKey": secret, "Model": "m2"}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["action"]["inputs"] == {"changed": ["LLM"]}
    assert changed.json()["action"]["result"] == {"spec_updated": True}
    kept = d.session(session_id)["spec"]["params"]["LLM"]  # what a recreation would send
    assert kept["Url"] == "https://llm.example/v2" and kept["ApiKey"] == "***"
    assert d.control.api_calls("UpdateAgentInstance") == 1
    assert secret not in d.api.get(f"/v1/sessions/{session_id}/actions").text
    assert secret not in d.stack.logs()

    d.control.api_fault("SendAgentInstanceTTS", 410001029, count=2)  # ZEGO's own rate limit, twice
    limited = d.api.post(say, json={"text": "Are you there?"})
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited", limited.text
    assert limited.headers["Retry-After"] == "1"
    failed = [a for a in d.actions(session_id) if a["state"] == "failed"]
    assert [(a["action"], a["result"]["status"]) for a in failed] == [("say", 429)]
    again = d.api.post(say, json={"text": "Are you there?"}, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200, again.text
    replay = d.api.post(say, json={"text": "Are you there?"}, headers={"Idempotency-Key": "k-1"})
    assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == again.json()
    assert d.control.api_calls("SendAgentInstanceTTS") == 3  # two refused, one spoken, none replayed
    assert instance in d.api.get(f"/v1/sessions/{session_id}").text
