"""A conversation stored as turns, the emulator's LLM as the model, a fast-retrying client."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
from sqlalchemy.orm import Session as DbSession

from emulator.llm_api import DEFAULT_KEY
from emulator.server import Emulator
from tests.factories import APP_ID
from worker.models import AgentInstance, Session, SessionState, Turn
from worker.postcall.config import AnalysisConfig, version_of
from worker.vendors.chat_completions import ChatCompletionsClient
from worker.vendors.retries import RetryPolicy

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "passengers": {"type": "integer"}},
    "required": ["city", "passengers"],
    "additionalProperties": False,
}
TALK = [
    ("user", "Hello I need a taxi to the airport"),
    ("agent", "Of course. How many passengers?"),
    ("user", "Two of us, thank you"),
    ("agent", "Booked. Have a good flight."),
]


def stored_session(db: DbSession, talk: list[tuple[str, str]] = TALK, **changes: Any) -> Session:
    now = dt.datetime.now(dt.UTC)
    session = Session(
        id=str(uuid.uuid4()),
        app_id=APP_ID,
        state=SessionState.ENDED,
        created_at=now - dt.timedelta(minutes=5),
        started_at=now - dt.timedelta(minutes=5),
        ended_at=now,
        **changes,
    )
    db.add(session)
    db.flush()
    instance = AgentInstance(app_id=APP_ID, agent_instance_id=f"i-{session.id}", session_id=session.id)
    db.add(instance)
    db.flush()
    for index, (speaker, text) in enumerate(talk):
        db.add(
            Turn(
                session_id=session.id,
                instance_id=instance.id,
                round=index // 2 + 1,
                speaker=speaker,
                text=text,
                settled=True,
            )
        )
    db.flush()
    return session


def config(emulator: Emulator, **changes: Any) -> AnalysisConfig:
    values: dict[str, Any] = {
        "url": f"{emulator.llm_url}/v1/chat/completions",
        "model": "gpt-test",
        "system_prompt": "Answer in JSON.",
        "criteria": "The ride is booked.",
        "data_schema": SCHEMA,
        "context_tokens": 8000,
        "version": "",
    }
    values.update(changes)
    if not values["version"]:
        shape = {
            k: values[k] for k in ("model", "system_prompt", "criteria", "data_schema", "context_tokens")
        }
        values["version"] = version_of(shape)
    return AnalysisConfig(**values)


def client(
    emulator: Emulator,
    *,
    key: str | None = DEFAULT_KEY,
    timeout: float = 5.0,
    sleeps: list[float] | None = None,
) -> ChatCompletionsClient:
    record = sleeps if sleeps is not None else []
    return ChatCompletionsClient(
        f"{emulator.llm_url}/v1/chat/completions",
        key,
        model="gpt-test",
        timeout=timeout,
        retry=RetryPolicy(attempts=3, base=0.01, cap=0.02, deadline=10.0),
        sleep=record.append,
    )


def fault(emulator: Emulator, **body: Any) -> None:
    httpx.post(f"{emulator.llm_url}/_emulator/llm/faults", json=body).raise_for_status()


def llm_config(emulator: Emulator, **body: Any) -> None:
    httpx.post(f"{emulator.llm_url}/_emulator/llm/config", json=body).raise_for_status()


def llm_requests(emulator: Emulator) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = httpx.get(f"{emulator.llm_url}/_emulator/llm/state").json()["requests"]
    return requests
