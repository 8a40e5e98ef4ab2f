"""The analysis configuration: off without a URL, overridden per app and template, versioned."""

from __future__ import annotations

import pytest

from tests.factories import APP_ID
from worker.policies.config import PolicyError, parse
from worker.postcall import config as configuration
from worker.settings import Settings

SCHEMA = '{ type = "object", properties = { city = { type = "string" } } }'


def settings(**changes: object) -> Settings:
    return Settings(database_url="sqlite://", _env_file=None, **changes)  # type: ignore[call-arg]


def test_analysis_is_off_without_a_url() -> None:
    """No ROOMWARDEN_ANALYSIS_URL (or an empty one): no configuration, nothing is sent."""
    assert configuration.for_session(settings(), parse(""), APP_ID, None) is None
    assert configuration.for_session(settings(analysis_url=""), parse(""), APP_ID, None) is None


def test_the_settings_configure_it_and_the_version_is_a_stable_hash() -> None:
    """The same effective configuration gets the same version; a prompt change gets a new one."""
    base = settings(analysis_url="http://llm/v1/chat/completions", analysis_criteria="booked")
    first = configuration.for_session(base, parse(""), APP_ID, None)
    again = configuration.for_session(base, parse(""), APP_ID, None)
    changed = configuration.for_session(
        settings(analysis_url="http://other/v1/chat/completions", analysis_criteria="paid"),
        parse(""),
        APP_ID,
        None,
    )
    assert first is not None and again is not None and changed is not None
    assert first.version == again.version and first.version.startswith("h-")
    assert changed.version != first.version


def test_templates_override_apps_which_override_defaults() -> None:
    """[templates.T.analysis] wins over [apps.N.analysis], which wins over [defaults.analysis]."""
    book = parse(
        f"""
        [defaults.analysis]
        model = "small"
        [apps.{APP_ID}.analysis]
        model = "medium"
        data_schema = {SCHEMA}
        [templates.sales.analysis]
        model = "large"
        version = "sales-v3"
        [templates.quiet.analysis]
        enabled = false
        """
    )
    on = settings(analysis_url="http://llm/v1/chat/completions")
    by_app = configuration.for_session(on, book, APP_ID, None)
    by_template = configuration.for_session(on, book, APP_ID, "sales")
    assert by_app is not None and by_template is not None
    assert (by_app.model, by_app.data_schema["properties"]) == ("medium", {"city": {"type": "string"}})
    assert (by_template.model, by_template.version) == ("large", "sales-v3")
    assert configuration.for_session(on, book, 1, None).model == "small"  # type: ignore[union-attr]
    assert configuration.for_session(on, book, APP_ID, "quiet") is None


def test_a_broken_json_schema_is_refused_when_the_file_is_read() -> None:
    """A data_schema that is not a JSON Schema fails at load, naming the key, not at the first call."""
    with pytest.raises(PolicyError, match=r"defaults\.analysis\.data_schema"):
        parse('[defaults.analysis]\ndata_schema = { type = "no-such-type" }')
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        configuration.for_session(
            settings(analysis_url="http://llm", analysis_data_schema={"type": 5}), parse(""), APP_ID, None
        )


def test_the_api_key_is_a_secret_setting() -> None:
    """The key is a SecretStr: repr and model dumps do not show it."""
    held = settings(analysis_api_key="sk-topsecret-123")
    assert "sk-topsecret-123" not in repr(held) and "sk-topsecret-123" not in str(held.model_dump())


def test_analysis_settings_must_be_positive() -> None:
    """A zero context, rate, timeout, interval or budget is refused when the settings load."""
    for name in ("analysis_context_tokens", "analysis_rate_per_second", "analysis_budget_seconds"):
        with pytest.raises(ValueError, match="must be positive"):
            settings(**{name: 0})
