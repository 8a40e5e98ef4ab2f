"""What the detectors catch in spoken text, and the look-alikes they must leave alone."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.privacy import detectors
from worker.privacy.detectors import custom_pattern
from worker.privacy.redaction import Rules, redact, redacted_or_none


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("mail me at john.doe+tag@example.co.uk please", "mail me at [EMAIL] please"),
        ("It's ANNA_LI@Mail.Example.com.", "It's [EMAIL]."),
        # Public Luhn test numbers (Visa, Mastercard, Amex), spaced, dashed and run together.
        ("card 4111 1111 1111 1111 thanks", "card [CARD] thanks"),
        ("5555-5555-5555-4444", "[CARD]"),
        ("amex 378282246310005", "amex [CARD]"),
        # GB 11643's own example, with an X check character, and a valid one ending in a digit.
        ("my ID is 11010519491231002X", "my ID is [ID_NUMBER]"),
        ("身份证号110105198001010016呢", "身份证号[ID_NUMBER]呢"),
        ("call 13812345678", "call [PHONE]"),
        ("call +86 138 1234 5678 now", "call [PHONE] now"),
        ("电话是138-1234-5678。", "电话是[PHONE]。"),
        ("ring +44 20 7946 0958 or +1 (555) 123-4567", "ring [PHONE] or [PHONE]"),
        ("office (555) 123-4567", "office [PHONE]"),
        ("server 192.168.10.254 is down", "server [IP] is down"),
        ("v6 2001:db8::8a2e:370:7334 too", "v6 [IP] too"),
        # ASR output in full-width characters is matched too, and replaced whole.
        ("号码１３８１２３４５６７８", "号码[PHONE]"),
        ("ｊｏｈｎ＠ｅｘａｍｐｌｅ．ｃｏｍ", "[EMAIL]"),
    ],
)
def test_what_is_detected_becomes_its_placeholder(said: str, shown: str) -> None:
    """A user who says an address, a number or an ID sees only its type in the redacted text."""
    assert redact(said) == shown


@pytest.mark.parametrize(
    "said",
    [
        "order 4111 1111 1111 1112 shipped",  # one digit off: Luhn fails
        "110105194912310022",  # wrong check character
        "身份证号110105198001010017",  # one digit off
        "110105194902300011",  # February 30th: no such birth date
        "tracking 1234567890123",  # 13 digits, Luhn fails
        "meet at 12:30:45 on 2026-12-04",  # times and dates are not IPv6 or phones
        "version 1.2.3.4.5 and 999.1.1.1",  # not an IPv4 address
        "call 12812345678",  # 12x is not a Chinese mobile prefix
        "room 1024, floor 3, 42 people",
        "an @ sign alone, user@localhost",
    ],
)
def test_look_alikes_are_left_alone(said: str) -> None:
    """Order numbers, times and versions in a transcript stay readable."""
    assert redact(said) == said


def test_a_card_is_not_also_read_as_a_phone_number() -> None:
    """Overlapping candidates resolve to one placeholder: the longest match wins."""
    assert redact("4111111111111111") == "[CARD]"
    assert [m.kind for m in detectors.resolve(detectors.built_in("13812345678 4111111111111111"))] == [
        "PHONE",
        "CARD",
    ]


def test_a_resident_id_born_in_the_future_is_not_an_id() -> None:
    """The birth date must be real and past: a checksum alone is one digit in eleven."""
    assert detectors.resident_id_ok("11010519491231002X", today=dt.date(2026, 12, 4))
    assert not detectors.resident_id_ok("11010519491231002X", today=dt.date(1949, 12, 30))


def test_the_users_own_patterns_get_their_own_placeholders() -> None:
    """A configured pattern redacts what the built-in detectors cannot know about."""
    rules = Rules(custom=(custom_pattern("ORDER_ID", r"ORD-\d{6}"),))
    assert redact("order ORD-123456 to john@example.com", rules) == "order [ORDER_ID] to [EMAIL]"


@pytest.mark.parametrize(
    ("name", "pattern", "complaint"),
    [
        ("order", r"ORD-\d+", "upper case"),
        ("ORDER", r"ORD-(\d+", "does not compile"),
        ("ANYTHING", r"\d*", "empty string"),
    ],
)
def test_a_bad_custom_pattern_is_refused_with_its_name(name: str, pattern: str, complaint: str) -> None:
    """A mistake in the policy file names the pattern and what is wrong with it."""
    with pytest.raises(ValueError, match=complaint):
        custom_pattern(name, pattern)


def test_text_with_nothing_to_redact_keeps_no_copy() -> None:
    """The stored redacted copy is NULL when it would repeat the text."""
    assert redacted_or_none("hello there") is None
    assert redacted_or_none("") is None
    assert redacted_or_none("at 10.0.0.1") == "at [IP]"
