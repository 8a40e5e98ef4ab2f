"""Sessions: started, listed, described, ended; their transcripts."""

from __future__ import annotations

from typing import Any, Literal

from webhooks.contract.common import Json, Model, Time

State = Literal["starting", "active", "ended", "failed", "recovering", "queued"]
Provider = Literal["zego", "zego_digital_human", "zego_live_digital_human", "coze"]


class CreateSession(Model):
    """``POST /v1/sessions``: a provider and its parameters, or a template that supplies them.

    ``params`` is the vendor's own request (ZEGO's CreateAgentInstance,
    CreateDigitalHumanAgentInstance or, for ``zego_live_digital_human``,
    CreateLiveDigitalHumanAgentInstance body; Coze's room parameters), validated as the vendor
    would before anything is stored; secrets in it are sealed at rest and shown as ``***``.
    """

    provider: Provider | None = None
    template: str | None = None
    app_id: int | None = None
    params: Json | None = None


class Instance(Model):
    agent_instance_id: str
    state: str
    agent_user_id: str | None = None
    created_at: Time | None = None
    deleted_at: Time | None = None
    delete_code: int | None = None
    latency: dict[str, Any] | None = None
    status: str | None = None
    last_event_at: Time | None = None


class AgentException(Model):
    agent_instance_id: str
    code: int
    family: str | None = None
    message: str | None = None
    round: int | None = None
    at: Time | None = None


class ActionBrief(Model):
    id: int
    action: str
    reason: str | None = None
    state: str
    dry_run: bool
    created_at: Time | None = None


class Session(Model):
    """A session as stored: what was asked for, what the vendor did, where it stands."""

    id: str
    origin: str
    provider: Provider | None = None
    template: str | None = None
    app_id: int
    state: State
    end_reason: str | None = None
    end_code: int | None = None
    failure_message: str | None = None
    end_requested_at: Time | None = None
    policy_reason: str | None = None
    flag: str | None = None
    recovering_since: Time | None = None
    queued_at: Time | None = None
    join: Json | None = None
    spec: Json | None = None
    agent_user_id: str | None = None
    room_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    created_at: Time
    started_at: Time | None = None
    ended_at: Time | None = None
    last_activity_at: Time | None = None
    last_user_speech_at: Time | None = None
    instances: list[Instance]
    exceptions: list[AgentException]
    actions: list[ActionBrief]


class SessionSummary(Model):
    """A session as the list, search, stats and exports count it."""

    id: str
    app_id: int
    provider: Provider | None = None
    template: str | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    room_id: str | None = None
    user_id: str | None = None
    state: State
    end_reason: str | None = None
    end_code: int | None = None
    flag: str | None = None
    started_at: Time | None = None
    ended_at: Time | None = None
    duration_seconds: float | None = None
    turns: int
    user_turns: int
    agent_turns: int
    interruptions: int
    exceptions: int
    instances: int
    recreations: int
    # Agent seconds billed while the user was out of the RTC room; null: no room callback heard.
    no_user_seconds: float | None = None


class Presence(Model):
    """The session's user in the RTC room, from ZEGO's room callbacks (``POST /callbacks/zego-rtc``)."""

    # null: no room callback heard for this user yet, so roomwarden cannot tell.
    user_present: bool | None = None
    absent_since: Time | None = None
    # The last room_logout's reason code, exactly as ZEGO sent it; null while the user is in.
    logout_reason: str | None = None


class TimelineEntry(Model):
    at: Time | None = None
    event: str
    round: int | None = None
    agent_instance_id: str | None = None
    detail: Json | None = None


class RoundLatency(Model):
    agent_instance_id: str
    round: int
    user_speak_end_at: Time | None = None
    first_output_at: Time | None = None
    response_ms: float | None = None


class TranscriptRemoved(Model):
    at: Time
    by: Literal["retention", "erasure"]


class AnalysisUsage(Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Analysis(Model):
    """Post-call analysis by the deployment's own LLM (docs/analysis.md): the newest version's result."""

    status: Literal["done", "failed"]
    summary: str | None = None
    data: Json | None = None
    outcome: Literal["success", "failure", "unknown"] | None = None
    outcome_reason: str | None = None
    model: str | None = None
    config_version: str
    usage: AnalysisUsage
    chunks: int
    attempts: int
    error: str | None = None
    started_at: Time | None = None
    finished_at: Time | None = None


class SessionDetail(Session):
    summary: SessionSummary
    timeline: list[TimelineEntry]
    rounds: list[RoundLatency]
    last_event_id: int | None = None
    # Set once retention or an erasure removed its words (docs/erasure.md): turns stay, text empty.
    transcript_removed: TranscriptRemoved | None = None
    analysis: Analysis | None = None
    no_user_seconds: float | None = None
    presence: Presence


class SessionPage(Model):
    sessions: list[SessionSummary]
    next_cursor: str | None = None


class Turn(Model):
    agent_instance_id: str
    round: int
    speaker: Literal["user", "agent"]
    text: str
    spoken_at: Time | None = None
    interrupted: bool
    interrupt_reason: int | None = None
    played_text: str | None = None
    user_id: str | None = None
    meta_info: Any = None


class TranscriptTurn(Turn):
    new_instance: bool
    # "say": spoken through POST /v1/sessions/{id}/say; "repaired": filled from the agent's
    # context after the callbacks missed it (docs/gap-repair.md)
    source: Literal["say", "repaired"] | None = None
    offset_seconds: float | None = None


class RoundStatus(Model):
    """How much of one Round the transcript holds (docs/gap-repair.md)."""

    agent_instance_id: str
    round: int
    status: Literal["complete", "partial", "missing"]
    repaired: bool


class Transcript(Model):
    session_id: str
    started_at: Time | None = None
    turns: list[TranscriptTurn]
    rounds: list[RoundStatus]
