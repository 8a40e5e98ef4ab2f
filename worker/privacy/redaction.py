"""``redact``: every detected value replaced by its typed placeholder (``[EMAIL]``, ``[PHONE]``, ...).

The placeholder keeps the sentence readable and says what was there, never how long it was or
how it started: an analyst reading ``my card is [CARD]`` learns that a card was given, not which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.privacy import detectors
from worker.privacy.detectors import CustomPattern


@dataclass(frozen=True, slots=True)
class Rules:
    """What to look for: built-in detectors by name and the user's own patterns."""

    kinds: tuple[str, ...] = detectors.BUILT_IN
    custom: Sequence[CustomPattern] = field(default_factory=tuple)


DEFAULT_RULES = Rules()


def find(text: str, rules: Rules = DEFAULT_RULES) -> list[detectors.Match]:
    """The values ``redact`` would replace, in text order, overlaps resolved."""
    if not text:
        return []
    return detectors.resolve(detectors.built_in(text, rules.kinds) + detectors.custom(text, rules.custom))


def redact(text: str, rules: Rules = DEFAULT_RULES) -> str:
    """``text`` with each detected value replaced by ``[KIND]``; the same string when none is found."""
    matches = find(text, rules)
    if not matches:
        return text
    parts: list[str] = []
    at = 0
    for match in matches:
        parts.append(text[at : match.start])
        parts.append(f"[{match.kind}]")
        at = match.end
    parts.append(text[at:])
    return "".join(parts)


def redacted_or_none(text: str | None, rules: Rules = DEFAULT_RULES) -> str | None:
    """The redacted text, or None when nothing was found (what a stored redacted copy holds)."""
    if not text:
        return None
    result = redact(text, rules)
    return None if result == text else result
