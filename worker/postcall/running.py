"""Analyse one session under one configuration version, in three steps the caller runs apart.

``prepare`` reads what the prompt needs (a short transaction); ``run`` talks to the model with
no transaction open (a call takes seconds, a split transcript several calls); ``store`` writes the
result row and the ``session.analyzed`` event in one transaction. A model that cannot be reached
raises ``LlmTransientError`` from ``run`` and nothing is stored: the task retries with backoff,
the sweep finds the session again. Anything else ends in a row, ``done`` or ``failed``.

The answer must be a JSON object with ``summary`` (text), ``data`` (valid against the configured
JSON Schema), ``outcome`` (success / failure / unknown) and ``outcome_reason``. An answer that is
not is sent back once with the validation error; a second bad answer is recorded as failed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from worker.db import utcnow
from worker.events.outbox import Event, emit
from worker.models import Session, SessionAnalysis
from worker.postcall import prompt
from worker.postcall.config import AnalysisConfig
from worker.privacy import modes
from worker.settings import Settings
from worker.vendors.chat_completions import ChatCompletionsClient, LlmContextExceeded, LlmPermanentError

log = structlog.get_logger(__name__)

OUTCOMES = ("success", "failure", "unknown")
# A context the estimate overshot is halved at most this often before the session fails.
MAX_SPLITS = 4


@dataclass(frozen=True)
class Prepared:
    session_id: str
    app_id: int
    config: AnalysisConfig
    lines: list[str]


@dataclass
class Result:
    session_id: str
    app_id: int
    version: str
    status: str = "failed"
    model: str | None = None
    summary: str | None = None
    data: dict[str, Any] | None = None
    outcome: str | None = None
    outcome_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 1
    attempts: int = 0
    error: str | None = None
    started_at: dt.datetime = field(default_factory=utcnow)
    finished_at: dt.datetime = field(default_factory=utcnow)


class InvalidAnswer(ValueError):
    """The model's answer is not the JSON object the prompt asked for."""


def prepare(
    db: DbSession, session: Session, config: AnalysisConfig, *, settings: Settings | None = None
) -> Prepared:
    """The prompt's transcript as anyone but the admin may read it: under PII redaction ``read``
    or ``store`` the model sees placeholders, never the raw values (docs/redaction.md)."""
    lines = [
        modes.for_reader(line, session.app_id, session.template, settings=settings)
        for line in prompt.transcript_lines(db, session.id)
    ]
    return Prepared(session.id, session.app_id, config, lines)


def run(job: Prepared, client: ChatCompletionsClient, *, clock: Callable[[], dt.datetime] = utcnow) -> Result:
    """Ask the model; transient failures propagate (nothing to store), the rest end in a Result."""
    result = Result(
        job.session_id, job.app_id, job.config.version, model=job.config.model, started_at=clock()
    )
    budget = prompt.budget_chars(job.config.context_tokens)
    try:
        for _ in range(MAX_SPLITS + 1):
            try:
                _analyse(job, client, result, budget)
                break
            except LlmContextExceeded:
                budget //= 2  # the estimate was too generous for this model: split finer
                log.info("analysis_split_finer", session_id=job.session_id, budget_chars=budget)
        else:
            raise LlmPermanentError("the transcript does not fit the model's context however it is split")
    except (LlmPermanentError, InvalidAnswer) as error:
        result.status, result.error = "failed", str(error)[:1024]
    result.finished_at = clock()
    return result


def _analyse(job: Prepared, client: ChatCompletionsClient, result: Result, budget: int) -> None:
    parts = prompt.chunks(job.lines, budget)
    result.chunks = len(parts)
    lines, summarised = parts[0], False
    if len(parts) > 1:
        lines, summarised = [], True
        for number, part in enumerate(parts, 1):
            reply = _ask(client, result, prompt.part_messages(job.config, part, number, len(parts)))
            lines.append(f"summary: {' '.join(str(_object(reply).get('summary', '')).split())}")
    messages = prompt.final_messages(job.config, lines, summarised=summarised)
    content = _ask(client, result, messages)
    try:
        answer = _checked(content, job.config.data_schema)
    except InvalidAnswer as error:
        retry = [
            *messages,
            {"role": "assistant", "content": content},
            {
                "role": "user",
                "content": f"That answer is invalid: {error}. Answer again with the JSON object only.",
            },
        ]
        answer = _checked(_ask(client, result, retry), job.config.data_schema)
    result.status = "done"
    result.summary = answer["summary"]
    result.data = answer["data"]
    result.outcome = answer["outcome"]
    result.outcome_reason = answer["outcome_reason"]


def _ask(client: ChatCompletionsClient, result: Result, messages: list[dict[str, str]]) -> str:
    completion = client.complete(messages)
    result.attempts += 1
    result.prompt_tokens += completion.prompt_tokens
    result.completion_tokens += completion.completion_tokens
    result.model = completion.model
    return completion.content


def _object(content: str) -> dict[str, Any]:
    text = content.strip()
    if text.startswith("```"):  # some models fence JSON even in JSON mode
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise InvalidAnswer("not a JSON object")
    return value


def _checked(content: str, schema: dict[str, Any]) -> dict[str, Any]:
    value = _object(content)
    if not isinstance(value.get("summary"), str):
        raise InvalidAnswer("summary must be a string")
    if value.get("outcome") not in OUTCOMES:
        raise InvalidAnswer(f"outcome must be one of {', '.join(OUTCOMES)}")
    reason = value.get("outcome_reason")
    value["outcome_reason"] = reason if isinstance(reason, str) else ""
    data = value.get("data")
    if not isinstance(data, dict):
        raise InvalidAnswer("data must be an object")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidAnswer(f"data at {where}: {error.message}")
    return value


def store(db: DbSession, result: Result) -> SessionAnalysis:
    """Write (or, for a re-run of the same version, overwrite) the row and announce it."""
    columns = {k: v for k, v in result.__dict__.items() if k not in ("session_id", "app_id", "version")}
    row = _find(db, result.session_id, result.version)
    if row is None:
        try:
            with db.begin_nested():
                row = SessionAnalysis(session_id=result.session_id, config_version=result.version, **columns)
                db.add(row)
                db.flush()
        except IntegrityError:  # another run of the same version stored first: ours is as good
            row = _find(db, result.session_id, result.version)
    if row is None:  # pragma: no cover - the conflicting row was there a moment ago
        raise RuntimeError("analysis row vanished")
    for key, value in columns.items():
        setattr(row, key, value)
    db.flush()
    emit(
        db,
        [
            Event(
                type="session.analyzed",
                key=f"session.analyzed:{result.session_id}:{result.version}:{result.finished_at.isoformat()}",
                data={"session_id": result.session_id, "app_id": result.app_id, **describe(row)},
                occurred_at=result.finished_at,
                session_id=result.session_id,
                app_id=result.app_id,
            )
        ],
    )
    log.info(
        "session_analyzed",
        session_id=result.session_id,
        config_version=result.version,
        status=result.status,
        chunks=result.chunks,
        attempts=result.attempts,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    return row


def _find(db: DbSession, session_id: str, version: str) -> SessionAnalysis | None:
    return db.scalars(
        select(SessionAnalysis).where(
            SessionAnalysis.session_id == session_id, SessionAnalysis.config_version == version
        )
    ).first()


def describe(row: SessionAnalysis) -> dict[str, Any]:
    """The ``analysis`` of a session's detail and of the ``session.analyzed`` event."""
    return {
        "status": row.status,
        "summary": row.summary,
        "data": row.data,
        "outcome": row.outcome,
        "outcome_reason": row.outcome_reason,
        "model": row.model,
        "config_version": row.config_version,
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "total_tokens": row.prompt_tokens + row.completion_tokens,
        },
        "chunks": row.chunks,
        "attempts": row.attempts,
        "error": row.error,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def latest(db: DbSession, session_id: str) -> SessionAnalysis | None:
    """The most recent analysis of a session, whatever its version."""
    return db.scalars(
        select(SessionAnalysis)
        .where(SessionAnalysis.session_id == session_id)
        .order_by(SessionAnalysis.finished_at.desc(), SessionAnalysis.id.desc())
    ).first()


def latest_of(db: DbSession, session_ids: list[str]) -> dict[str, SessionAnalysis]:
    """The most recent analysis of each of these sessions that has one (exports, a batch at a time)."""
    found: dict[str, SessionAnalysis] = {}
    if not session_ids:
        return found
    rows = db.scalars(
        select(SessionAnalysis)
        .where(SessionAnalysis.session_id.in_(session_ids))
        .order_by(SessionAnalysis.finished_at, SessionAnalysis.id)
    )
    for row in rows:
        found[row.session_id] = row  # later rows win
    return found


def export_columns(row: SessionAnalysis | None) -> dict[str, Any]:
    """The export's analysis columns for one session (empty when it has no analysis)."""
    if row is None:
        return {"analysis_summary": None, "analysis_outcome": None, "analysis_data": None}
    return {
        "analysis_summary": row.summary,
        "analysis_outcome": row.outcome,
        "analysis_data": json.dumps(row.data, sort_keys=True) if row.data is not None else None,
    }
