"""Settings from the environment, and logs that never show a secret."""

from __future__ import annotations

import json

import pytest
import structlog

from worker.logging import configure_logging
from worker.settings import Settings


def test_settings_read_one_app_and_several_apps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROOMWARDEN_ZEGO_APP_ID/…_SECRET and ROOMWARDEN_ZEGO_APPS together give every app's secrets."""
    monkeypatch.setenv("ROOMWARDEN_ZEGO_APP_ID", "111")
    monkeypatch.setenv("ROOMWARDEN_ZEGO_CALLBACK_SECRET", "one-secret")
    monkeypatch.setenv(
        "ROOMWARDEN_ZEGO_APPS", '{"222": {"callback_secret": "two-secret", "server_secret": "s2"}}'
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    one, two = settings.zego_app(111), settings.zego_app(222)
    assert one is not None
    assert two is not None
    assert one.callback_secret.get_secret_value() == "one-secret"
    assert two.callback_secret.get_secret_value() == "two-secret"
    assert two.server_secret is not None
    assert two.server_secret.get_secret_value() == "s2"
    assert settings.zego_app(333) is None
    assert "two-secret" not in repr(settings)


def test_embedded_defaults_need_nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the database and the broker are SQLite files under ./var/."""
    for name in ("ROOMWARDEN_DATABASE_URL", "ROOMWARDEN_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///var/roomwarden.sqlite3"
    assert settings.broker_url == "sqla+sqlite:///var/broker.sqlite3"
    assert settings.is_sqlite


def test_bad_settings_are_refused_with_the_field_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A nonsensical limit is an error at start-up that names the variable, not a surprise later."""
    monkeypatch.setenv("ROOMWARDEN_MAX_BODY_BYTES", "0")
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_json_logs_mask_anything_that_looks_like_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """A log event carrying a token, secret or signature prints *** in its place."""
    configure_logging(Settings(log_format="json", _env_file=None))  # type: ignore[call-arg]
    structlog.get_logger("test").warning(
        "callback_rejected", api_token="tok-123", callback_secret="s3cret", Signature="abc", app_id=7
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["event"] == "callback_rejected"
    assert (event["api_token"], event["callback_secret"], event["Signature"]) == ("***", "***", "***")
    assert event["app_id"] == 7
    assert "tok-123" not in line
    assert "s3cret" not in line
