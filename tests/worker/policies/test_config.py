"""The policy file: what an operator gets without one, and the errors a mistake in it produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.policies.config import PolicyError, load, parse


def test_without_a_file_the_cautious_defaults_apply() -> None:
    """No ROOMWARDEN_POLICIES_FILE: close the room on 1202, three recreations, ten instances, queue."""
    policy = load(None).for_session(1234567, "concierge")
    assert policy.on_deleted.user_absent == "close_room"
    assert policy.on_deleted.max_recreations == 3
    assert policy.on_exception.end_at_once == (2203, 2303)
    assert (policy.quota.voice_instances, policy.quota.when_full) == (10, "queue")
    assert policy.idle.after_seconds == 600 and policy.idle.warning is None
    assert not any(policy.dry(section) for section in ("on_deleted", "on_exception", "idle", "quota"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[templates.concierge.idle]\nafter_seconds = "soon"', "templates.concierge.idle.after_seconds"),
        ('[apps.1234567.quota]\nwhen_full = "panic"', "apps.1234567.quota.when_full"),
        ("[defaults.idle]\nafter_second = 5", "defaults.idle.after_second"),
        ("[defaults.on_deleted]\nmax_recreations = -1", "defaults.on_deleted.max_recreations"),
        ("[defaults.on_exception.families.sql]\ncount = 2", "defaults.on_exception.families"),
        ('[defaults.on_deleted]\nuser_absent = "hope"', "defaults.on_deleted.user_absent"),
    ],
)
def test_a_mistake_is_an_error_naming_the_key(text: str, named: str) -> None:
    """A wrong value or an unknown key: the error names the layer and the key, and the file."""
    with pytest.raises(PolicyError) as caught:
        parse(text, source="policies.toml")
    assert named in str(caught.value)
    assert "policies.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[default.idle]\nafter_seconds = 5", "unknown top-level keys ['default']"),
        ("[apps.myapp.idle]\nafter_seconds = 5", "apps.myapp must be a table keyed by a ZEGO AppId"),
        ("[defaults\nidle = 1", "policies.toml"),
    ],
)
def test_a_malformed_file_says_what_is_wrong(text: str, says: str) -> None:
    """Misspelt tables, non-numeric AppIds and broken TOML are refused with a message."""
    with pytest.raises(PolicyError, match=None) as caught:
        parse(text, source="policies.toml")
    assert says in str(caught.value)


def test_an_app_value_is_checked_even_when_a_template_would_override_it() -> None:
    """Every combination is validated when the file is read, not when a session first needs it."""
    text = "[apps.42.idle]\nafter_seconds = -1\n[templates.t.idle]\nafter_seconds = 5\n"
    with pytest.raises(PolicyError, match=r"apps\.42\.idle\.after_seconds"):
        parse(text)


LAYERED = """
[defaults.idle]
after_seconds = 300
warning = "Still there?"

[apps.1234567.idle]
after_seconds = 200
[apps.1234567.quota]
when_full = "recycle_idle"

[templates.concierge.idle]
after_seconds = 120
[templates.concierge.max_length]
seconds = 900
"""


def test_templates_win_over_apps_which_win_over_defaults() -> None:
    """Each key comes from the most specific layer that sets it; the others keep theirs."""
    book = parse(LAYERED)
    both = book.for_session(1234567, "concierge")
    assert both.idle.after_seconds == 120 and both.idle.warning == "Still there?"
    assert both.quota.when_full == "recycle_idle" and both.max_length.seconds == 900
    app_only = book.for_session(1234567, None)
    assert app_only.idle.after_seconds == 200 and app_only.max_length.seconds == 3600
    other_app = book.for_session(7654321, "concierge")
    assert other_app.idle.after_seconds == 120 and other_app.quota.when_full == "queue"
    nothing = book.for_session(7654321, "unknown-template")
    assert nothing == book.defaults and nothing.idle.after_seconds == 300


def test_dry_run_is_per_section_or_global() -> None:
    """dry_run under a section covers that section; at the top of a layer it covers them all."""
    book = parse("[defaults.idle]\ndry_run = true\n[templates.careful]\ndry_run = true\n")
    section = book.for_session(None, None)
    assert section.dry("idle") and not section.dry("on_deleted")
    careful = book.for_session(None, "careful")
    assert careful.dry("on_deleted") and careful.dry("quota") and careful.dry("idle")


def test_a_file_is_read_from_disk_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    """load() reads the named file; a path that does not exist is a PolicyError naming it."""
    path = tmp_path / "policies.toml"
    path.write_text(LAYERED)
    assert load(path).for_session(1234567, None).idle.after_seconds == 200
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load(tmp_path / "missing.toml")
