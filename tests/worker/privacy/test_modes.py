"""Which mode applies to which app and template, as the policy file and ROOMWARDEN_PII_REDACTION say."""

from __future__ import annotations

import pytest

from worker.policies.config import PolicyError, parse
from worker.privacy.modes import for_reader, mode_for, rules_for, store_redactor
from worker.privacy.redaction import redact
from worker.settings import Settings

POLICIES = """
[defaults.privacy]
pii_redaction = "read"
[defaults.privacy.custom_patterns]
ORDER_ID = 'ORD-\\d{6}'

[apps.111.privacy]
pii_redaction = "store"

[apps.222.privacy]
pii_redaction = "off"

[templates.support.privacy.custom_patterns]
TICKET = 'T#\\d{4}'
"""


def test_templates_win_over_apps_which_win_over_defaults() -> None:
    """Each app and template gets its own mode; the process setting applies where none is set."""
    book = parse(POLICIES)
    assert mode_for(book, "off", None, None) == "read"
    assert mode_for(book, "off", 111, None) == "store"
    assert mode_for(book, "off", 222, "support") == "off"
    assert mode_for(parse(""), "store", 333, None) == "store"


def test_custom_patterns_add_up_across_layers() -> None:
    """A template's own pattern joins the defaults' ones."""
    rules = rules_for(parse(POLICIES), None, "support")
    assert redact("ORD-123456 and T#0042", rules) == "[ORDER_ID] and [TICKET]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[templates.x.privacy]\npii_redaction = "store"', "per app only"),
        ('[defaults.privacy]\npii_redaction = "hide"', "defaults.privacy.pii_redaction"),
        ("[apps.1.privacy.custom_patterns]\nbad = 'x'", "upper case"),
        ("[defaults.privacy.custom_patterns]\nEMPTY = 'a*'", "empty string"),
    ],
)
def test_a_mistake_is_a_start_up_error_naming_the_key(text: str, message: str) -> None:
    """The operator learns at start-up which key is wrong, not at the first redaction."""
    with pytest.raises(PolicyError, match=message):
        parse(text)


def test_the_receiver_checks_nothing_when_no_app_stores_redacted(settings: Settings) -> None:
    """With redaction off or read-only, the receiver's hot path has nothing to do."""
    assert store_redactor(settings) is None
    assert store_redactor(settings.model_copy(update={"pii_redaction": "read"})) is None
    redactor = store_redactor(settings.model_copy(update={"pii_redaction": "store"}))
    assert redactor is not None and redactor(1234567) is not None


def test_for_reader_redacts_unless_the_mode_is_off(settings: Settings) -> None:
    """What the analysis prompt and outbound events get: the raw text only when redaction is off."""
    said = "I am at jane@example.com"
    assert for_reader(said, 1, None, settings=settings) == said
    reading = settings.model_copy(update={"pii_redaction": "read"})
    assert for_reader(said, 1, None, settings=reading) == "I am at [EMAIL]"
