"""Search and statistics over conversations."""

from __future__ import annotations

import datetime as dt

from webhooks.contract.common import Model
from webhooks.contract.sessions import SessionSummary, Turn


class FoundTurn(Turn):
    id: int
    session_id: str


class Hit(Model):
    session: SessionSummary
    turn: FoundTurn
    before: list[FoundTurn]
    after: list[FoundTurn]


class SummaryHit(Model):
    """A session whose post-call analysis summary holds every term (docs/analysis.md)."""

    session: SessionSummary
    summary: str | None = None
    outcome: str | None = None
    config_version: str


class SearchResult(Model):
    query: str
    hits: list[Hit]
    summaries: list[SummaryHit] = []


class Durations(Model):
    total: float
    median: float | None = None
    p90: float | None = None


class NoUserSeconds(Durations):
    # Ended sessions whose figure is known (a room callback was heard for their user): the
    # total and percentiles are over these alone, never over the unknown as zeros.
    sessions: int


class Distribution(Model):
    count: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Cost(Model):
    currency: str
    total: float
    by_provider: dict[str, float]
    rates: dict[str, float]
    unpriced_minutes: dict[str, float]


class Day(Model):
    date: dt.date
    sessions: int
    minutes: float


class Stats(Model):
    sessions: int
    ended_sessions: int
    duration_seconds: Durations
    no_user_seconds: NoUserSeconds
    end_reasons: dict[str, int]
    turns: int
    user_turns: int
    agent_turns: int
    interruption_rate: float | None = None
    interrupted_turns: int
    sessions_with_interruptions: int
    deletion_codes: dict[str, int]
    exceptions: dict[str, int]
    latency: dict[str, Distribution]
    cost: Cost
    per_day: list[Day]
