"""The beat's sweep and ``roomwarden analyze``: ended sessions analysed, committed, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from emulator.llm_api import DEFAULT_KEY
from emulator.server import Emulator
from roomwarden.cli import app
from tests.factories import changed
from tests.worker.postcall.support import fault, stored_session
from worker.jobs.context import JobContext
from worker.models import OutboxEvent, SessionAnalysis
from worker.postcall import sweep
from worker.settings import Settings, get_settings


@pytest.fixture
def job(settings: Settings, clean_engine: Engine, emulator: Emulator) -> Iterator[JobContext]:
    on = changed(
        settings,
        analysis_url=f"{emulator.llm_url}/v1/chat/completions",
        analysis_api_key=DEFAULT_KEY,
        analysis_model="gpt-test",
        rate_limit_redis_url="",
    )
    context = JobContext.from_settings(on)
    yield context
    context.close()


def add_ended(job: JobContext, n: int = 1) -> list[str]:
    with job.sessions() as db, db.begin():
        return [stored_session(db).id for _ in range(n)]


def test_the_sweep_analyses_each_ended_session_once(job: JobContext) -> None:
    """Ended sessions get an analysis and a session.analyzed event; a second sweep finds none left."""
    ids = add_ended(job, 2)
    assert sweep.sweep(job) == 2
    assert sweep.sweep(job) == 0
    with job.sessions() as db:
        rows = db.scalars(select(SessionAnalysis)).all()
        assert sorted(r.session_id for r in rows) == sorted(ids)
        assert {r.status for r in rows} == {"done"}
        assert len(db.scalars(select(OutboxEvent).where(OutboxEvent.type == "session.analyzed")).all()) == 2


def test_an_unreachable_model_leaves_the_session_for_the_next_sweep(
    job: JobContext, emulator: Emulator
) -> None:
    """Nothing is stored while the model is down; the next sweep analyses the session."""
    add_ended(job)
    fault(emulator, kind="500", count=20)
    assert sweep.sweep(job) == 0
    httpx_clear(emulator)
    assert sweep.sweep(job) == 1


def test_the_sweep_does_nothing_when_analysis_is_off(settings: Settings, clean_engine: Engine) -> None:
    """Without a URL, the sweep sends nothing and stores nothing."""
    context = JobContext.from_settings(settings)
    try:
        add_ended(context)
        assert sweep.sweep(context) == 0
        with context.sessions() as db:
            assert db.scalars(select(SessionAnalysis)).first() is None
    finally:
        context.close()


def test_analyze_reruns_a_filter_under_a_named_version(
    job: JobContext, monkeypatch: pytest.MonkeyPatch, database_url: str, emulator: Emulator
) -> None:
    """``roomwarden analyze --config-version v2`` keeps the first results beside the new ones."""
    (session_id,) = add_ended(job)
    sweep.sweep(job)
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    monkeypatch.setenv("ROOMWARDEN_ANALYSIS_URL", f"{emulator.llm_url}/v1/chat/completions")
    monkeypatch.setenv("ROOMWARDEN_ANALYSIS_API_KEY", DEFAULT_KEY)
    monkeypatch.setenv("ROOMWARDEN_RATE_LIMIT_REDIS_URL", "")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["analyze", "--config-version", "v2", "--json", "--state", "ended"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert '"done": 1' in result.output
    with job.sessions() as db:
        versions = db.scalars(
            select(SessionAnalysis.config_version).where(SessionAnalysis.session_id == session_id)
        ).all()
    assert len(versions) == 2 and "v2" in versions
    assert DEFAULT_KEY not in result.output


def httpx_clear(emulator: Emulator) -> None:
    import httpx

    httpx.delete(f"{emulator.llm_url}/_emulator/llm/faults").raise_for_status()


def test_sessions_with_analysis_off_do_not_hold_back_the_others(
    job: JobContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template that turns analysis off is skipped; the sessions after it are still analysed."""
    policies = tmp_path / "policies.toml"
    policies.write_text("[templates.quiet.analysis]\nenabled = false\n")
    quiet = JobContext.from_settings(changed(job.settings, policies_file=policies))
    monkeypatch.setattr(sweep, "BATCH", 2)
    try:
        with quiet.sessions() as db, db.begin():
            wanted = stored_session(db).id
            for _ in range(3):
                stored_session(db, template="quiet")
        assert sweep.sweep(quiet) == 1
        with quiet.sessions() as db:
            assert db.scalars(select(SessionAnalysis.session_id)).all() == [wanted]
    finally:
        quiet.close()


def test_a_sweep_makes_way_for_the_drain_after_its_budget(job: JobContext) -> None:
    """With the budget spent after the first session, the rest wait for the next sweep."""
    add_ended(job, 3)
    short = JobContext.from_settings(changed(job.settings, analysis_budget_seconds=0.000001))
    try:
        assert sweep.sweep(short) == 1
        assert sweep.sweep(job) == 2
    finally:
        short.close()
