"""Shared helpers for the ZEGO client tests: valid bodies, a request counter, clients on an emulator."""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any

import httpx

from tests.emulator_fixture import SERVER_SECRET, instance_body
from tests.factories import APP_ID
from worker.vendors.ratelimit import LocalLimiter
from worker.vendors.retries import RetryPolicy
from worker.vendors.zego.agent import ZegoAgentClient
from worker.vendors.zego.errors import ZegoConflictError
from worker.vendors.zego.rtc import ZegoRtcClient

LLM_KEY = "sk-live-DO-NOT-LOG-4b9e1f"
TTS_TOKEN = "tts-token-DO-NOT-LOG-77c2"


class CountingTransport(httpx.BaseTransport):
    """A real HTTP transport that also remembers which Actions went out (no mocking)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.actions: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.actions.append(request.url.params.get("Action", ""))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class FakeSleep:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def agent_client(
    url: str, transport: httpx.BaseTransport | None = None, *, secret: str = SERVER_SECRET, **kwargs: Any
) -> ZegoAgentClient:
    kwargs.setdefault("limiter", LocalLimiter())
    kwargs.setdefault("retry", RetryPolicy(attempts=4, base=0.01, cap=0.05))
    kwargs.setdefault("timeout", 5.0)
    return ZegoAgentClient(url, APP_ID, secret, transport=transport, **kwargs)


def rtc_client(url: str, transport: httpx.BaseTransport | None = None, **kwargs: Any) -> ZegoRtcClient:
    kwargs.setdefault("limiter", LocalLimiter())
    kwargs.setdefault("retry", RetryPolicy(attempts=4, base=0.01, cap=0.05))
    kwargs.setdefault("timeout", 5.0)
    return ZegoRtcClient(url, APP_ID, SERVER_SECRET, transport=transport, **kwargs)


def llm(**changes: Any) -> dict[str, Any]:
    return {"Url": "https://api.example.com/v1/chat/completions", "ApiKey": LLM_KEY, "Model": "m1", **changes}


def tts(vendor: str = "ByteDance", **changes: Any) -> dict[str, Any]:
    app = {
        "Aliyun": {"app_key": "k", "ak_id": "i", "ak_key": TTS_TOKEN},
        "ByteDance": {"appid": "a", "token": TTS_TOKEN, "cluster": "volcano_tts"},
        "ByteDanceV3": {"appid": "a", "token": TTS_TOKEN},
        "ByteDanceFlowing": {"appid": "a", "token": TTS_TOKEN, "resource_id": "volc.service_type.10029"},
        "MiniMax": {"api_key": TTS_TOKEN},
        "CosyVoice": {"api_key": TTS_TOKEN},
    }[vendor]
    return {"Vendor": vendor, "Params": {"app": app, "voice_type": "v1"}, **changes}


def register_body(agent_id: str = "agent_1") -> dict[str, Any]:
    return {"AgentId": agent_id, "Name": "Test agent", "LLM": llm(), "TTS": tts()}


def create_body(n: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid CreateAgentInstance body (ids unique per ``n``) carrying this module's secrets."""
    return instance_body(n, LLM=llm(), TTS=tts(), **changes)


def digital_human_body(n: int = 1, **changes: Any) -> dict[str, Any]:
    body = create_body(n, DigitalHuman={"DigitalHumanId": "dh_1", "ConfigId": "web", "EncodeCode": "H264"})
    body.update(changes)
    return body


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with ``path`` ("LLM.Temperature", "A.B[2].C") set; ``...`` deletes it."""
    result = copy.deepcopy(body)
    steps: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _STEP.finditer(path)
    ]
    node: Any = result
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    if value is ...:
        del node[steps[-1]]
    else:
        node[steps[-1]] = value
    return result


def started(client: ZegoAgentClient, n: int = 1) -> str:
    """Register agent_1 (unless it is already) and create instance ``n``; returns its AgentInstanceId."""
    with contextlib.suppress(ZegoConflictError):
        client.register_agent(register_body())
    return client.create_agent_instance(create_body(n)).agent_instance_id
