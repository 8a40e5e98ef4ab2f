"""An OpenAI-compatible ``POST /v1/chat/completions`` stand-in, for post-call analysis.

Deterministic, so tests can predict every answer from the prompt:

- ``Authorization: Bearer <key>``; a missing or wrong key answers 401 with OpenAI's error shape
  ``{"error": {"message", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}``.
- The reply is OpenAI's shape: ``id``, ``object: "chat.completion"``, ``created``, ``model``,
  ``choices[0].message.content``, ``finish_reason: "stop"``, ``usage`` (tokens counted as
  whitespace-separated words, the same rule for prompt and completion).
- The content is a JSON object built from the user messages: ``summary`` is the first twelve
  words of the transcript lines it holds; ``data`` fills every property of the JSON Schema it
  finds between ``<schema>`` and ``</schema>`` (strings with the first word, numbers with the
  line count, booleans true, arrays empty); ``outcome`` is ``failure`` when the transcript says
  "cancel" or "refund", ``success`` when it says "thank", else ``unknown``.
- A prompt longer than ``context_tokens`` words answers 400 ``context_length_exceeded``.

Control (unauthenticated): ``POST /_emulator/llm/faults`` ``{"kind": "429" | "500" | "timeout" |
"malformed" | "schema", "count": 1, "retry_after": 1, "seconds": 30}`` makes the next ``count`` calls fail so;
``DELETE /_emulator/llm/faults`` clears them; ``POST /_emulator/llm/config`` sets ``api_key`` and
``context_tokens``; ``GET /_emulator/llm/state`` lists the requests seen (their messages).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_KEY = "sk-emulator"
TIMEOUT_SLEEP_S = 30.0


@dataclass
class LlmState:
    api_key: str = DEFAULT_KEY
    context_tokens: int = 100_000
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _words(text: str) -> int:
    return len(text.split())


def answer_for(prompt: str) -> dict[str, Any]:
    """What the stand-in extracts from a prompt: summary, data to the schema, outcome."""
    lines = [m.group(1) for m in re.finditer(r"^(?:user|agent|summary): (.*)$", prompt, re.MULTILINE)]
    words = " ".join(lines).split()
    summary = " ".join(words[:12])
    data: dict[str, Any] = {}
    schema_match = re.search(r"<schema>(.*?)</schema>", prompt, re.DOTALL)
    if schema_match:
        try:
            schema = json.loads(schema_match.group(1))
        except ValueError:
            schema = {}
        for name, spec in (schema.get("properties") or {}).items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind == "string":
                data[name] = words[0] if words else ""
            elif kind in ("integer", "number"):
                data[name] = len(lines)
            elif kind == "boolean":
                data[name] = True
            elif kind == "array":
                data[name] = []
            elif kind == "object":
                data[name] = {}
            else:
                data[name] = None
    text = " ".join(lines).lower()
    if "cancel" in text or "refund" in text:
        outcome, reason = "failure", "the user asked to cancel or for a refund"
    elif "thank" in text:
        outcome, reason = "success", "the user thanked the agent"
    else:
        outcome, reason = "unknown", "nothing in the transcript decides it"
    return {"summary": summary, "data": data, "outcome": outcome, "outcome_reason": reason}


def create_llm_app(state: LlmState | None = None) -> Starlette:
    llm = state if state is not None else LlmState()

    async def completions(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {llm.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
            messages = body["messages"]
            model = str(body.get("model") or "emulated")
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error", None
            )
        llm.requests.append({"model": model, "messages": messages})
        fault = llm.faults.pop(0) if llm.faults else None
        kind = fault["kind"] if fault else None
        if fault and int(fault.get("count", 1)) > 1:
            llm.faults.insert(0, {**fault, "count": int(fault["count"]) - 1})
        if kind == "429":
            retry = str(fault.get("retry_after", 1)) if fault else "1"
            return _error(
                429, "Rate limit reached.", "requests", "rate_limit_exceeded", **{"Retry-After": retry}
            )
        if kind == "500":
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        if kind == "timeout":
            await asyncio.sleep(float(fault.get("seconds", TIMEOUT_SLEEP_S)) if fault else TIMEOUT_SLEEP_S)
        prompt_tokens = _words(prompt)
        if prompt_tokens > llm.context_tokens:
            return _error(
                400,
                f"This model's maximum context length is {llm.context_tokens} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        answer = answer_for(user)
        if kind == "schema":
            answer["data"] = {"not_in_the_schema": ["broken"]}
            answer["summary"] = 42
        content = "{not json" if kind == "malformed" else json.dumps(answer)
        return JSONResponse(
            {
                "id": f"chatcmpl-emu{next(llm.ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": _words(content),
                    "total_tokens": prompt_tokens + _words(content),
                },
            }
        )

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            llm.faults.clear()
            return JSONResponse({"ok": True})
        data = await request.json()
        if data.get("kind") not in ("429", "500", "timeout", "malformed", "schema"):
            return JSONResponse(
                {"error": "kind must be 429, 500, timeout, malformed or schema"}, status_code=400
            )
        llm.faults.append(data)
        return JSONResponse({"ok": True})

    async def config(request: Request) -> Response:
        data = await request.json()
        if "api_key" in data:
            llm.api_key = str(data["api_key"])
        if "context_tokens" in data:
            llm.context_tokens = int(data["context_tokens"])
        return JSONResponse({"ok": True})

    async def state_(request: Request) -> Response:
        return JSONResponse(
            {"faults": llm.faults, "requests": llm.requests, "context_tokens": llm.context_tokens}
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/_emulator/llm/faults", faults, methods=["POST", "DELETE"]),
            Route("/_emulator/llm/config", config, methods=["POST"]),
            Route("/_emulator/llm/state", state_, methods=["GET"]),
        ]
    )
