"""Analysing one session through the emulator's LLM, over real HTTP, on both databases."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from structlog.testing import capture_logs

from emulator.server import Emulator
from tests.worker.postcall.support import client, config, fault, llm_config, llm_requests, stored_session
from worker.analysis.detail import session_detail
from worker.models import OutboxEvent, SessionAnalysis
from worker.postcall import running
from worker.settings import Settings
from worker.vendors.chat_completions import LlmTransientError


def analyse(db: DbSession, emulator: Emulator, session_id: str, **changes: object) -> running.Result:
    from worker.models import Session

    session = db.get(Session, session_id)
    assert session is not None
    cfg = config(emulator, **changes)  # type: ignore[arg-type]
    result = running.run(running.prepare(db, session, cfg), client(emulator))
    running.store(db, result)
    return result


def test_an_ended_call_gets_a_summary_data_and_an_outcome(db: DbSession, emulator: Emulator) -> None:
    """The analysis is stored with its usage and shown under the session's detail and in an event."""
    session = stored_session(db)
    result = analyse(db, emulator, session.id)
    assert result.status == "done", result.error
    row = db.scalars(select(SessionAnalysis)).one()
    assert row.summary is not None and row.summary.startswith("Hello I need a taxi")
    assert row.data == {"city": "Hello", "passengers": 4}
    assert (row.outcome, row.model, row.attempts) == ("success", "gpt-test", 1)
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    analysis = session_detail(db, session)["analysis"]
    assert analysis["outcome"] == "success" and analysis["config_version"] == result.version
    assert analysis["usage"]["total_tokens"] == row.prompt_tokens + row.completion_tokens
    event = db.scalars(select(OutboxEvent).where(OutboxEvent.type == "session.analyzed")).one()
    assert event.data["summary"] == row.summary and event.session_id == session.id


def test_the_prompt_holds_the_transcript_in_order_with_schema_and_criteria(
    db: DbSession, emulator: Emulator
) -> None:
    """The model reads each turn as a speaker line, the JSON Schema and the success criteria."""
    analyse(db, emulator, stored_session(db).id)
    prompt = llm_requests(emulator)[-1]["messages"][-1]["content"]
    assert "user: Hello I need a taxi to the airport\nagent: Of course." in prompt
    assert '"passengers"' in prompt and "The ride is booked." in prompt


def test_an_answer_that_breaks_the_schema_is_asked_again_once(db: DbSession, emulator: Emulator) -> None:
    """One invalid answer: the model is told what was wrong and its second answer is kept."""
    fault(emulator, kind="schema")
    result = analyse(db, emulator, stored_session(db).id)
    assert (result.status, result.attempts) == ("done", 2)
    retry = llm_requests(emulator)[-1]["messages"]
    assert retry[-1]["content"].startswith("That answer is invalid: summary must be a string")


def test_two_answers_that_break_the_schema_are_recorded_as_failed(db: DbSession, emulator: Emulator) -> None:
    """After the one retry, the analysis is a failed row naming the problem, not lost."""
    fault(emulator, kind="schema", count=2)
    result = analyse(db, emulator, stored_session(db).id)
    assert (result.status, result.attempts) == ("failed", 2)
    row = db.scalars(select(SessionAnalysis)).one()
    assert row.status == "failed" and row.error is not None and "summary must be a string" in row.error


def test_malformed_json_is_retried_like_a_schema_break(db: DbSession, emulator: Emulator) -> None:
    """Content that is not JSON counts as an invalid answer: asked again, then kept."""
    fault(emulator, kind="malformed")
    result = analyse(db, emulator, stored_session(db).id)
    assert (result.status, result.attempts) == ("done", 2)


def test_data_that_breaks_the_configured_schema_fails_with_the_path(
    db: DbSession, emulator: Emulator
) -> None:
    """The data is validated against the configured schema (here one the stand-in cannot meet)."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "minLength": 50}}}
    result = analyse(db, emulator, stored_session(db).id, data_schema=schema)
    assert result.status == "failed"
    assert result.error is not None and "data at city" in result.error


def test_a_429_waits_for_retry_after_then_succeeds(db: DbSession, emulator: Emulator) -> None:
    """A rate-limited call sleeps at least the Retry-After the model sent, then goes through."""
    from worker.models import Session

    fault(emulator, kind="429", retry_after=1.5)
    session = stored_session(db)
    sleeps: list[float] = []
    cfg = config(emulator)
    result = running.run(
        running.prepare(db, db.get(Session, session.id) or session, cfg), client(emulator, sleeps=sleeps)
    )
    assert result.status == "done"
    assert sleeps and sleeps[0] >= 1.5


@pytest.mark.parametrize("kind", ["500", "timeout"])
def test_a_server_error_or_timeout_is_retried(db: DbSession, emulator: Emulator, kind: str) -> None:
    """A transient failure is retried with backoff; the next answer is kept."""
    fault(emulator, kind=kind, seconds=0.6)
    session = stored_session(db)
    sleeps: list[float] = []
    result = running.run(
        running.prepare(db, session, config(emulator)), client(emulator, sleeps=sleeps, timeout=0.4)
    )
    assert result.status == "done" and len(sleeps) == 1


def test_a_model_down_for_every_attempt_raises_and_stores_nothing(db: DbSession, emulator: Emulator) -> None:
    """Transient failures past the retries propagate: the sweep tries the session again later."""
    fault(emulator, kind="500", count=3)
    session = stored_session(db)
    with pytest.raises(LlmTransientError):
        running.run(running.prepare(db, session, config(emulator)), client(emulator))
    assert db.scalars(select(SessionAnalysis)).first() is None


def test_the_api_key_is_in_no_log_error_or_answer(db: DbSession, emulator: Emulator) -> None:
    """A wrong key fails the analysis; neither it nor the right one shows in logs, rows or the detail."""
    secret = "sk-live-VERYSECRET-0123456789"
    llm_config(emulator, api_key=secret)
    session = stored_session(db)
    with capture_logs() as logs:
        wrong = running.run(
            running.prepare(db, session, config(emulator)), client(emulator, key="sk-wrong-x")
        )
        running.store(db, wrong)
        right = running.run(
            running.prepare(db, session, config(emulator, version="v2")), client(emulator, key=secret)
        )
        running.store(db, right)
    assert wrong.status == "failed" and wrong.error is not None and "401" in wrong.error
    assert right.status == "done"
    assert any(entry["event"] == "llm_api_call" for entry in logs)
    shown = json.dumps([logs, session_detail(db, session), wrong.error], default=str)
    for key in (secret, "sk-wrong-x", "VERYSECRET"):
        assert key not in shown
    assert repr(client(emulator, key=secret)).find(secret) == -1


def test_a_new_configuration_version_keeps_the_old_results(db: DbSession, emulator: Emulator) -> None:
    """Re-running under a changed prompt adds a row beside the first; the detail shows the newest."""
    session = stored_session(db)
    first = analyse(db, emulator, session.id)
    second = analyse(db, emulator, session.id, criteria="The user said thanks.")
    assert first.version != second.version
    versions = set(db.scalars(select(SessionAnalysis.config_version)))
    assert versions == {first.version, second.version}
    assert session_detail(db, session)["analysis"]["config_version"] == second.version
    again = analyse(db, emulator, session.id, criteria="The user said thanks.")
    assert again.version == second.version
    assert db.scalars(select(SessionAnalysis)).all().__len__() == 2


def test_a_transcript_longer_than_the_context_is_split(db: DbSession, emulator: Emulator) -> None:
    """Each part is summarised on its own, then the final call reads the parts' summaries."""
    talk = [("user" if i % 2 == 0 else "agent", f"sentence number {i} " + "words " * 30) for i in range(40)]
    session = stored_session(db, talk=talk)
    result = analyse(db, emulator, session.id, context_tokens=400)
    assert result.status == "done", result.error
    assert result.chunks > 1 and result.attempts == result.chunks + 1
    final = llm_requests(emulator)[-1]["messages"][-1]["content"]
    assert "summary: sentence number 0" in final and "user: sentence" not in final


def test_a_model_context_smaller_than_estimated_splits_finer(db: DbSession, emulator: Emulator) -> None:
    """context_length_exceeded from the model halves the parts and tries again."""
    talk = [("user" if i % 2 == 0 else "agent", "word " * 60) for i in range(10)]
    llm_config(emulator, context_tokens=300)
    result = analyse(db, emulator, stored_session(db, talk=talk).id, context_tokens=8000)
    assert result.status == "done", result.error
    assert result.chunks > 1


def test_under_pii_redaction_the_model_never_sees_the_raw_values(
    db: DbSession, emulator: Emulator, settings: Settings
) -> None:
    """With ``read`` the analyst's own LLM is a reader like any other: it gets placeholders."""
    said = [("user", "Mail me at jane.doe@example.com or call 13800138000"), ("agent", "Noted.")]
    session = stored_session(db, said)
    reading = settings.model_copy(update={"pii_redaction": "read"})

    prepared = running.prepare(db, session, config(emulator), settings=reading)
    running.run(prepared, client(emulator))

    sent = json.dumps(llm_requests(emulator))
    assert "[EMAIL]" in sent and "[PHONE]" in sent
    assert "jane.doe" not in sent and "13800138000" not in sent
    plain = running.prepare(db, session, config(emulator), settings=settings)
    assert any("jane.doe@example.com" in line for line in plain.lines)
