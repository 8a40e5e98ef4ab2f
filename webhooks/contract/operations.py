"""Every ``/v1`` operation: its path, scope, parameters, body and answers, as a table.

``openapi.py`` turns this into the OpenAPI document; a test checks that the app serves exactly
these routes. Query parameters are bounded here as the handlers bound them (``worker.analysis``
keeps the limits), so a generated request that the document allows is one the API accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from webhooks.contract import actions, analysis, control, endpoints, privacy, sessions
from worker.analysis import catalog, exports, search
from worker.models import ActionKind, ActionState, DeliveryState, Provider, SessionState

Scope = Literal["read", "admin", "none"]

# Statuses any operation of a scope can answer, whatever it does.
ALWAYS: dict[Scope, dict[int, str]] = {
    "read": {401: "No valid bearer token", 503: "The API is disabled, or a read ran past its budget"},
    "admin": {
        401: "No valid bearer token",
        403: "A read-scope token on an admin route",
        503: "The API is disabled (no token configured)",
    },
    "none": {},
}
BODY_ERRORS = {
    400: "The body is not JSON, or a field is invalid (``field`` names it)",
    408: "The body did not arrive in time",
    413: "The body is larger than ROOMWARDEN_MAX_BODY_BYTES",
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    where: str = "query"
    required: bool = False
    repeated: bool = False

    def as_openapi(self) -> dict[str, Any]:
        schema = {"type": "array", "items": self.schema} if self.repeated else self.schema
        out: dict[str, Any] = {"name": self.name, "in": self.where, "schema": schema}
        if self.where == "path" or self.required:
            out["required"] = True
        if self.repeated:
            out["style"], out["explode"] = "form", True
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Body:
    """An answer in several media types, or in one that is not JSON (a model, or a JSON Schema)."""

    description: str
    media: dict[str, type[BaseModel] | dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    scope: Scope
    tag: str
    responses: dict[int, type[BaseModel] | Body | None]
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    idempotency_key: bool = False
    description: str = ""
    extra_errors: dict[int, str] = field(default_factory=dict)


def _text(max_length: int = 200) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


_INT64 = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_TIME = {"type": "string", "format": "date-time"}


def _enum(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [str(v.value if hasattr(v, "value") else v) for v in values]}


SESSION_ID = Param(
    "session_id",
    {"type": "string", "minLength": 1, "maxLength": 64},
    "A session id, or an agent instance id (ZEGO's AgentInstanceId) of one of its agents",
    where="path",
)
ENDPOINT_ID = Param("endpoint_id", {"type": "string", "minLength": 1, "maxLength": 40}, where="path")
FILTERS = (
    Param("since", _TIME, "Sessions that started at or after this time"),
    Param("until", _TIME, "Sessions that started before this time"),
    Param("app_id", _INT64, "ZEGO AppId"),
    Param("room_id", _text()),
    Param("user_id", _text()),
    Param("agent_id", _text(), "ZEGO AgentId (the registered agent)"),
    Param("template", _text(), "roomwarden template name"),
    Param("provider", _enum(Provider)),
    Param("state", _enum(SessionState)),
    Param("end_reason", _text()),
    Param("has_interruptions", {"type": "boolean"}),
    Param("has_exceptions", {"type": "boolean"}),
    Param("min_turns", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
    Param("agent_instance_id", _text()),
)
ACTION_FILTERS = (
    Param("state", _enum(ActionState)),
    Param("action", _enum(ActionKind)),
    Param("reason", _text()),
    Param("since", _TIME, "Actions decided at or after this time"),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
    Param(
        "before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, "The previous page's next_before"
    ),
)
_BYTES: dict[str, Any] = {"type": "string"}
SSE = Body(
    "Server-sent events: `id`, `event` (the type) and `data` (the event as JSON)",
    {"text/event-stream": _BYTES},
)
NOT_FOUND = {404: "No session with that id or agent instance id"}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/v1/sessions",
        "List sessions",
        "read",
        "sessions",
        {200: sessions.SessionPage},
        params=(
            *FILTERS,
            Param("sort", _enum(catalog.SORTS)),
            Param("order", _enum(("desc", "asc"))),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": catalog.MAX_LIMIT, "default": 50}),
            Param("cursor", _text(500), "The previous page's next_cursor"),
        ),
    ),
    Operation(
        "post",
        "/v1/sessions",
        "Start a session",
        "admin",
        "sessions",
        {202: sessions.Session},
        body=sessions.CreateSession,
        idempotency_key=True,
        description="Stored at once; a worker calls the vendor. Poll the session for the outcome.",
        extra_errors={409: "A live Coze room for this uid and bot_id already exists"},
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}",
        "A session in full",
        "read",
        "sessions",
        {200: sessions.SessionDetail},
        params=(SESSION_ID,),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "delete",
        "/v1/sessions/{session_id}",
        "End a session",
        "admin",
        "sessions",
        {200: sessions.Session, 202: sessions.Session},
        params=(SESSION_ID, Param("graceful", {"type": "boolean"}, "Let the agent finish speaking")),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "patch",
        "/v1/sessions/{session_id}",
        "Change a running agent's LLM, TTS or ASR",
        "admin",
        "control",
        {200: control.Controlled},
        params=(SESSION_ID,),
        body=control.UpdateAgent,
        description="UpdateAgentInstance, called inline; recorded as an ``update`` action (without secrets).",
        extra_errors=control.CONTROL_ERRORS,
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/say",
        "Have the agent say a text",
        "admin",
        "control",
        {200: control.Controlled},
        params=(SESSION_ID,),
        body=control.Say,
        idempotency_key=True,
        description="SendAgentInstanceTTS, called inline; the Round's agent turn is marked ``source: say``.",
        extra_errors=control.CONTROL_ERRORS,
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/interrupt",
        "Interrupt the agent",
        "admin",
        "control",
        {200: control.Controlled},
        params=(SESSION_ID,),
        idempotency_key=True,
        description="InterruptAgentInstance, called inline. No body.",
        extra_errors=control.CONTROL_ERRORS,
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/messages",
        "Send the agent a message to answer",
        "admin",
        "control",
        {200: control.Controlled},
        params=(SESSION_ID,),
        body=control.Message,
        idempotency_key=True,
        description="SendAgentInstanceLLM, called inline: the agent answers the text through its LLM.",
        extra_errors=control.CONTROL_ERRORS,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/context",
        "The agent's LLM context window",
        "admin",
        "control",
        {200: control.Context},
        params=(SESSION_ID,),
        description="GetAgentInstanceMsgList, called inline (admin: it is the conversation itself).",
        extra_errors=control.CONTROL_ERRORS,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/transcript",
        "A session's transcript",
        "read",
        "sessions",
        {
            200: Body(
                "The transcript: JSON, plain text or WebVTT (?format= or Accept)",
                {"application/json": sessions.Transcript, "text/plain": _BYTES, "text/vtt": _BYTES},
            )
        },
        params=(SESSION_ID, Param("format", _enum(("json", "text", "vtt")))),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/events",
        "A session's events, live",
        "read",
        "events",
        {200: SSE},
        params=(SESSION_ID,),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/actions",
        "A session's policy actions",
        "read",
        "policies",
        {200: actions.SessionActions},
        params=(SESSION_ID, *ACTION_FILTERS),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/why",
        "Why a session is where it is",
        "read",
        "policies",
        {200: actions.Why},
        params=(SESSION_ID,),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "get",
        "/v1/sessions/{session_id}/policy",
        "The policy that applies, rule by rule",
        "read",
        "policies",
        {200: actions.PolicyExplained},
        params=(SESSION_ID,),
        extra_errors=NOT_FOUND,
    ),
    Operation(
        "post",
        "/v1/sessions/{session_id}/policy/run",
        "Run a policy action by hand",
        "admin",
        "policies",
        {200: actions.Action, 202: actions.Action},
        params=(SESSION_ID,),
        body=actions.RunPolicy,
        idempotency_key=True,
        extra_errors={**NOT_FOUND, 409: "Nothing to run it on (no live agent, session over)"},
    ),
    Operation(
        "get",
        "/v1/actions",
        "List policy actions",
        "read",
        "policies",
        {200: actions.ActionPage},
        params=(Param("session_id", _text(64)), *ACTION_FILTERS),
    ),
    Operation(
        "get",
        "/v1/search",
        "Search what was said",
        "read",
        "analysis",
        {200: analysis.SearchResult},
        params=(
            Param("q", _text(search.MAX_QUERY_CHARS), "The words to look for", required=True),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": search.MAX_LIMIT, "default": 20}),
            Param("context", {"type": "integer", "minimum": 0, "maximum": search.MAX_CONTEXT, "default": 2}),
            *FILTERS,
        ),
    ),
    Operation(
        "get",
        "/v1/stats",
        "Statistics over sessions",
        "read",
        "analysis",
        {200: analysis.Stats},
        params=FILTERS,
    ),
    Operation(
        "get",
        "/v1/exports/{kind}.{format}",
        "Export sessions or turns",
        "read",
        "analysis",
        {
            200: Body(
                "JSON Lines, CSV or Parquet, streamed", {t: _BYTES for t in exports.MEDIA_TYPES.values()}
            )
        },
        params=(
            Param("kind", _enum(exports.KINDS), where="path"),
            Param("format", _enum(exports.FORMATS), where="path"),
            *FILTERS,
        ),
        extra_errors={404: "No such kind or format"},
    ),
    Operation(
        "get",
        "/v1/events",
        "Every event, live",
        "read",
        "events",
        {200: SSE},
        params=(
            Param(
                "type",
                {"type": "string", "minLength": 1, "maxLength": 64},
                "An event type, or a prefix ending in a dot (session.)",
                repeated=True,
            ),
            Param("app_id", _INT64),
            Param("session_id", _text(64)),
        ),
    ),
    Operation("get", "/v1/endpoints", "List endpoints", "admin", "endpoints", {200: endpoints.EndpointList}),
    Operation(
        "post",
        "/v1/endpoints",
        "Add an endpoint",
        "admin",
        "endpoints",
        {201: endpoints.Endpoint},
        body=endpoints.CreateEndpoint,
        idempotency_key=True,
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}",
        "An endpoint",
        "admin",
        "endpoints",
        {200: endpoints.Endpoint},
        params=(ENDPOINT_ID,),
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "patch",
        "/v1/endpoints/{endpoint_id}",
        "Change an endpoint",
        "admin",
        "endpoints",
        {200: endpoints.Endpoint},
        params=(ENDPOINT_ID,),
        body=endpoints.UpdateEndpoint,
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "delete",
        "/v1/endpoints/{endpoint_id}",
        "Remove an endpoint",
        "admin",
        "endpoints",
        {204: None},
        params=(ENDPOINT_ID,),
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/rotate-secret",
        "A new signing secret",
        "admin",
        "endpoints",
        {200: endpoints.Endpoint},
        params=(ENDPOINT_ID,),
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/test",
        "Send a test event",
        "admin",
        "endpoints",
        {202: endpoints.DeliveryDetail},
        params=(ENDPOINT_ID,),
        idempotency_key=True,
        extra_errors={404: "No such endpoint", 409: "The endpoint is disabled"},
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}/deliveries",
        "An endpoint's deliveries",
        "admin",
        "endpoints",
        {200: endpoints.DeliveryPage},
        params=(
            ENDPOINT_ID,
            Param("state", _enum(DeliveryState)),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
            Param("before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}),
        ),
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}/deliveries/{delivery_id}",
        "A delivery and its attempts",
        "admin",
        "endpoints",
        {200: endpoints.DeliveryDetail},
        params=(
            ENDPOINT_ID,
            Param("delivery_id", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, where="path"),
        ),
        extra_errors={404: "No such endpoint or delivery"},
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/replay",
        "Send a window of events again",
        "admin",
        "endpoints",
        {202: endpoints.Replayed},
        params=(ENDPOINT_ID,),
        body=endpoints.Replay,
        idempotency_key=True,
        extra_errors={404: "No such endpoint"},
    ),
    Operation(
        "delete",
        "/v1/users/{user_id}",
        "Erase what a user said",
        "admin",
        "privacy",
        {200: privacy.Erasure},
        params=(
            Param("user_id", {"type": "string", "minLength": 1, "maxLength": 64}, where="path"),
            Param("vacuum", _enum(("true", "false")), "Postgres: also VACUUM the touched tables"),
        ),
        description=(
            "Every word of the user's sessions (turns, agent sentences, stored callbacks, user audio,"
            " outbound events' text; undelivered ones cancelled) is removed in batches, counts and"
            " timings kept; answered when done with the erasure's record. See docs/erasure.md."
        ),
        extra_errors={404: "No session has that user id (nothing is recorded)"},
    ),
)
