"""The emulator's OpenAI-compatible chat completions stand-in, over real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from emulator.llm_api import DEFAULT_KEY
from emulator.server import Emulator

KEY = {"Authorization": f"Bearer {DEFAULT_KEY}"}
PROMPT = 'Data: <schema>{"properties": {"city": {"type": "string"}, "n": {"type": "integer"}}}</schema>\n'
TRANSCRIPT = "user: Hello I need a taxi to Berlin\nagent: Sure, when?\nuser: Now please, thank you\n"


def ask(emulator: Emulator, content: str = PROMPT + TRANSCRIPT, **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"model": "gpt-test", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{emulator.llm_url}/v1/chat/completions", json=body, headers=headers or KEY, timeout=5)


def fault(emulator: Emulator, **body: Any) -> None:
    httpx.post(f"{emulator.llm_url}/_emulator/llm/faults", json=body).raise_for_status()


def test_an_answer_has_openais_shape_and_is_derived_from_the_prompt(emulator: Emulator) -> None:
    """The reply is a chat.completion whose content is a JSON summary, data to the schema and outcome."""
    reply = ask(emulator)
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-test" and isinstance(body["created"], int)
    assert body["choices"][0]["finish_reason"] == "stop"
    content = json.loads(body["choices"][0]["message"]["content"])
    assert content["summary"].startswith("Hello I need a taxi")
    assert content["data"] == {"city": "Hello", "n": 3}
    assert content["outcome"] == "success"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_a_wrong_key_is_refused_like_openai(emulator: Emulator) -> None:
    """No key or a wrong one answers 401 invalid_api_key."""
    for headers in ({"Authorization": "Bearer nope"}, {"X-Other": "1"}):
        reply = ask(emulator, **headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "invalid_api_key"


def test_a_prompt_past_the_context_answers_context_length_exceeded(emulator: Emulator) -> None:
    """Over the configured context, the stand-in answers 400 like OpenAI does."""
    httpx.post(f"{emulator.llm_url}/_emulator/llm/config", json={"context_tokens": 5}).raise_for_status()
    reply = ask(emulator)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "context_length_exceeded"


def test_faults_come_in_order_and_then_answers_are_normal(emulator: Emulator) -> None:
    """429 with Retry-After, 500, malformed JSON and a schema-breaking answer, each once."""
    fault(emulator, kind="429", retry_after=2)
    fault(emulator, kind="500")
    fault(emulator, kind="malformed")
    fault(emulator, kind="schema")
    limited = ask(emulator)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert ask(emulator).status_code == 500
    malformed = ask(emulator).json()["choices"][0]["message"]["content"]
    try:
        json.loads(malformed)
        raise AssertionError("the content should not be JSON")
    except ValueError:
        pass
    broken = json.loads(ask(emulator).json()["choices"][0]["message"]["content"])
    assert broken["summary"] == 42
    assert ask(emulator).status_code == 200


def test_a_timeout_fault_holds_the_answer_back(emulator: Emulator) -> None:
    """The next call does not answer within a client's timeout."""
    fault(emulator, kind="timeout", seconds=0.5)
    try:
        httpx.post(
            f"{emulator.llm_url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers=KEY,
            timeout=0.3,
        )
        raise AssertionError("expected a timeout")
    except httpx.ReadTimeout:
        pass
    time.sleep(0.3)  # the held answer finishes before the emulator stops
