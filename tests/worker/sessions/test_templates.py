"""Agent templates: named requests in a TOML file, merged under what a request spells out."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.sessions.templates import TemplateError, load, merged


def test_templates_load_from_toml(tmp_path: Path) -> None:
    """A template's provider, app, agent registration and default params are read as written."""
    path = tmp_path / "templates.toml"
    path.write_text(
        """
[templates.concierge]
provider = "zego"
app_id = 1234567
[templates.concierge.agent]
AgentId = "concierge"
[templates.concierge.params]
AgentId = "concierge"
LLM = { Url = "https://llm.example/v1", Model = "m", Temperature = 0.3 }
"""
    )
    concierge = load(path)["concierge"]
    assert concierge.provider == "zego"
    assert concierge.app_id == 1234567
    assert concierge.agent == {"AgentId": "concierge"}
    assert concierge.params["LLM"]["Temperature"] == 0.3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[templates.a]\nprovider = "openai"\n', "provider must be one of"),
        ('[templates.a]\nprovider = "zego"\ncolour = "red"\n', "unknown keys"),
        ('[templates.a]\nprovider = "zego"\napp_id = "x"\n', "app_id must be an integer"),
        ("[templates.a\n", "cannot read templates file"),
    ],
)
def test_a_broken_template_file_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    """A mistake in the file stops start-up with the template and the problem named."""
    path = tmp_path / "templates.toml"
    path.write_text(text)
    with pytest.raises(TemplateError, match=message):
        load(path)


def test_no_templates_file_means_no_templates() -> None:
    """Without ROOMWARDEN_TEMPLATES_FILE there are simply no templates."""
    assert load(None) == {}


def test_request_params_override_the_template_key_by_key() -> None:
    """A request changes one nested field without restating the rest; lists are replaced whole."""
    base = {"LLM": {"Url": "u", "Temperature": 0.7}, "TTS": {"FilterText": [{"a": 1}]}}
    assert merged(base, {"LLM": {"Temperature": 0.2}, "TTS": {"FilterText": []}}) == {
        "LLM": {"Url": "u", "Temperature": 0.2},
        "TTS": {"FilterText": []},
    }
    assert base["LLM"]["Temperature"] == 0.7  # the template itself is untouched
