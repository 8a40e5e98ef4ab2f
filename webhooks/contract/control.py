"""Live control of a running ZEGO agent: what say, messages and PATCH take, what each answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from webhooks.contract.actions import Action
from webhooks.contract.common import Json, Model


class _Strict(Model):
    model_config = ConfigDict(extra="forbid")  # an unknown field is a 400, never silently dropped


class Say(_Strict):
    text: Annotated[
        str, Field(min_length=1, max_length=300, description="Spoken verbatim (ZEGO: at most 300)")
    ]
    interrupt: bool = Field(True, description="Cut what the agent is saying (false: queue behind it)")
    add_to_history: bool = Field(True, description="Keep the text in the agent's LLM context")


class Message(_Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000, description="Answered through the agent's LLM")]


class UpdateAgent(_Strict):
    """Each object replaces the running agent's whole object (ZEGO UpdateAgentInstance), checked by
    the rules creation uses; TTS.FilterText and TTS.TerminatorText cannot change on a running agent."""

    LLM: Json | None = None
    TTS: Json | None = None
    ASR: Json | None = None


class Controlled(Model):
    session_id: str
    action: Action
    round: int | None = Field(None, description="The Round ZEGO gave the request (say, messages, interrupt)")


class ContextMessage(Model):
    role: Literal["user", "assistant"] | str
    content: str


class Context(Controlled):
    total: int
    messages: list[ContextMessage]


CONTROL_ERRORS: dict[int, str] = {
    404: "No session with that id or agent instance id",
    409: "The session is not live (``not_live``), the agent cannot take it now (``agent_busy``), "
    "a zego_live_digital_human session takes only say (``not_supported``), "
    "no ZEGO ServerSecret is configured for its AppId (``not_configured``), "
    "or a request with this Idempotency-Key is still running (``in_progress``)",
    429: "ZEGO's rate limit for this action is reached; retry after ``Retry-After`` seconds",
    502: "ZEGO refused the request",
    503: "ZEGO did not carry it out (unavailable, timed out); retry after ``Retry-After`` seconds",
}
