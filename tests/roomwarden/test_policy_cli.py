"""The policy commands an operator types: actions, why, policy explain / run / check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session as DbSession
from typer.testing import CliRunner, Result

from roomwarden.cli import app
from tests.worker.policies.rows import deleted, live_session
from worker.db import utcnow
from worker.models import PolicyAction
from worker.policies import decisions
from worker.policies.config import load
from worker.sessions import lifecycle
from worker.settings import get_settings


@pytest.fixture
def cli(
    clean_engine: Engine, database_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    """The CLI in process, reading the test database (settings are read once per process: reset)."""
    monkeypatch.setenv("ROOMWARDEN_DATABASE_URL", database_url)
    monkeypatch.delenv("ROOMWARDEN_POLICIES_FILE", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def _sessions(engine: Engine) -> tuple[str, str, str]:
    """One session given up after three recreations (1205), one live and idle for ten minutes."""
    with DbSession(engine) as db:
        ended, agent = live_session(db)
        decision = decisions.on_deleted(
            load(None).defaults, ended, agent, 1205, recent_recreations=3, others_live=False
        )
        assert decision is not None
        decisions.record(db, ended, decision, now=utcnow())
        deleted(db, agent, 1205)
        lifecycle.refresh(db, ended, learned="policy")
        live, _ = live_session(db, started_ago=1200.0, quiet_for=700.0)
        db.commit()
        return ended.id, agent.agent_instance_id, live.id


def test_why_says_which_policy_ended_a_session(cli: CliRunner, clean_engine: Engine) -> None:
    """`roomwarden why <instance>`: ended by on_deleted (gave_up), with the instance's 1205."""
    _, instance, _ = _sessions(clean_engine)
    result = run(cli, "why", instance)
    assert result.exit_code == 0, result.output
    assert "ended: the on_deleted policy ended it: gave_up" in result.stdout
    assert f"instance {instance}: deleted code 1205 (disconnected)" in result.stdout
    told = json.loads(run(cli, "why", instance, "--json").stdout)
    assert told["end_reason"] == "gave_up"
    missing = run(cli, "why", "no-such-session")
    assert missing.exit_code == 1 and "no session with id" in missing.stderr


def test_explain_prints_each_rule_and_records_nothing(cli: CliRunner, clean_engine: Engine) -> None:
    """`roomwarden policy explain`: the idle rule would recycle now, 1205 would recreate; no rows."""
    _, _, live = _sessions(clean_engine)
    result = run(cli, "policy", "explain", live)
    assert result.exit_code == 0, result.output
    assert "policy from <defaults>" in result.stdout
    idle = next(line for line in result.stdout.splitlines() if line.split()[0] == "idle")
    assert "recycle (idle)" in idle
    assert "on_deleted 1205" in result.stdout and "recreate (disconnected) after" in result.stdout
    assert (
        json.loads(run(cli, "policy", "explain", live, "--json").stdout)["rules"]["idle"]["action"]
        == "recycle"
    )
    with DbSession(clean_engine) as db:
        assert len(list(db.scalars(select(PolicyAction)))) == 1  # only the gave_up END from the setup


def test_policy_run_records_a_manual_action_and_actions_lists_it(
    cli: CliRunner, clean_engine: Engine
) -> None:
    """`roomwarden policy run <session> recycle` stores a pending manual RECYCLE; `actions` shows it."""
    _, _, live = _sessions(clean_engine)
    result = run(cli, "policy", "run", live, "recycle")
    assert result.exit_code == 0, result.output
    assert f"recycle on session {live}: pending" in result.stdout
    listed = run(cli, "actions", "--reason", "manual")
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 1
    assert "recycle" in listed.stdout and f"session={live}" in listed.stdout
    shown = json.loads(run(cli, "actions", "--json").stdout)["actions"]
    assert [(a["action"], a["reason"]) for a in shown] == [("recycle", "manual"), ("end", "gave_up")]
    assert run(cli, "actions", "--session", live, "--action", "end").stdout == ""


def test_policy_run_refuses_what_cannot_apply(cli: CliRunner, clean_engine: Engine) -> None:
    """Recycling an ended session or naming an unknown action: a message and a non-zero exit."""
    ended, _, _ = _sessions(clean_engine)
    refused = run(cli, "policy", "run", ended, "recycle")
    assert refused.exit_code == 1 and "no live agent" in refused.stderr
    unknown = run(cli, "policy", "run", ended, "explode")
    assert unknown.exit_code == 2 and "end, recreate, recycle, close_room" in unknown.stderr
    assert run(cli, "actions", "--state", "finished").exit_code == 2


def test_policy_check_validates_a_file_and_prints_the_resolved_policy(cli: CliRunner, tmp_path: Path) -> None:
    """A valid file: the defaults (or one app/template's policy) as JSON; a bad one: exit 2 naming the key."""
    good = tmp_path / "policies.toml"
    good.write_text(
        '[defaults.idle]\nafter_seconds = 300\n[apps.1234567.quota]\nwhen_full = "recycle_idle"\n'
    )
    result = run(cli, "policy", "check", str(good))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# {good}: valid")
    shown = json.loads(result.stdout.split("\n", 1)[1])
    assert shown["idle"]["after_seconds"] == 300 and shown["quota"]["when_full"] == "queue"
    app_policy = json.loads(
        run(cli, "policy", "check", str(good), "--app", "1234567").stdout.split("\n", 1)[1]
    )
    assert app_policy["quota"]["when_full"] == "recycle_idle"
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults.on_deleted]\nmax_recreations = -1\n")
    failed = run(cli, "policy", "check", str(bad))
    assert failed.exit_code == 2 and "defaults.on_deleted.max_recreations" in failed.stderr
    assert run(cli, "policy", "check").stdout.startswith("# <defaults>: valid")
