"""Finding personal data in spoken text: e-mail, phone, payment card, Chinese resident ID, IP address.

Each detector is a regular expression that proposes candidates and, where the data carries one, a
check that confirms them (Luhn for cards, GB 11643 checksum and birth date for resident IDs, the
stdlib ``ipaddress`` parser for IPs), so that order numbers and timestamps are left alone. What
they catch and miss is in docs/redaction.md; in short, they read *written* forms: an ASR result
that spells a number as words ("one three eight ...") or an address as "john at example dot com"
is not caught.

ASR text often comes with full-width characters (U+FF11 for 1, U+FF20 for @): the text is matched through a
width fold that keeps every character at its index, so a match's span is the original's span.

Overlapping matches are resolved once for all detectors: the longest wins, then the earlier
``PRIORITY`` (a card number holds digits a phone pattern would also take; a resident ID that
happens to pass Luhn is still an ID).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

EMAIL = "EMAIL"
PHONE = "PHONE"
CARD = "CARD"
ID_NUMBER = "ID_NUMBER"
IP = "IP"
BUILT_IN = (EMAIL, PHONE, CARD, ID_NUMBER, IP)
# Ties on length go to the stricter check: an ID's checksum and date say more than Luhn's digit.
PRIORITY = {ID_NUMBER: 0, CARD: 1, EMAIL: 2, PHONE: 3, IP: 4}

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space, one character for one: indices hold.
_WIDTH_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def fold(text: str) -> str:
    """``text`` with full-width ASCII made ASCII, same length and same indices."""
    return text.translate(_WIDTH_FOLD)


@dataclass(frozen=True, slots=True)
class Match:
    start: int
    end: int
    kind: str  # the placeholder's name: EMAIL, PHONE, ... or a custom pattern's name

    @property
    def length(self) -> int:
        return self.end - self.start


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13-19 digits, single spaces or dashes between groups allowed.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
# Chinese mobile: 1[3-9]x and 8 more digits, optionally after +86 / 0086 / 86, spaced or dashed.
_CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d){8}(?!\d)")
# International: a + and 7-15 digits in groups (E.164 with the separators people say and type).
_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,5}(?![\d])")
# North-American style without a +: (555) 123-4567, 555-123-4567, 555.123.4567.
_NANP = re.compile(r"(?<![\d-])(?:\(\d{3}\)\s?|\d{3}[.-])\d{3}[.-]\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}")


_ANY_DIGIT = re.compile(r"\d")


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit (ISO/IEC 7812) is right."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_ok(candidate: str, *, today: dt.date | None = None) -> bool:
    """GB 11643-1999: the 18th character is the ISO 7064 MOD 11-2 check of the first 17, and
    characters 7-14 are a real birth date between 1900 and today."""
    body, check = candidate[:17], candidate[17].upper()
    if _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11] != check:
        return False
    try:
        born = dt.date(int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14]))
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= (today or dt.datetime.now(dt.UTC).date())


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _find(
    pattern: re.Pattern[str], kind: str, text: str, check: Callable[[str], bool] | None = None
) -> Iterable[Match]:
    for found in pattern.finditer(text):
        if check is None or check(found.group()):
            yield Match(found.start(), found.end(), kind)


def _card_ok(candidate: str) -> bool:
    digits = _digits(candidate)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _international_ok(candidate: str) -> bool:
    return 7 <= len(_digits(candidate)) <= 15


def _ipv6_ok(candidate: str) -> bool:
    # "12:30:45" is a time, not an address: ipaddress refuses it, and a bare "::" says nothing.
    return any(c not in ":" for c in candidate) and _ip_ok(candidate)


def built_in(text: str, kinds: Iterable[str] = BUILT_IN) -> list[Match]:
    """Every candidate of the built-in detectors in ``kinds``, overlaps included (``resolve``)."""
    folded = fold(text)
    # Most sentences hold no digit and no @: one scan each, and the patterns are not run at all.
    digits = _ANY_DIGIT.search(folded) is not None
    wanted = set(kinds) if digits else set(kinds) & {EMAIL, IP}
    if "@" not in folded:
        wanted.discard(EMAIL)
    if ":" not in folded and not digits:
        wanted.discard(IP)
    found: list[Match] = []
    if EMAIL in wanted:
        found.extend(_find(_EMAIL, EMAIL, folded))
    if CARD in wanted:
        found.extend(_find(_CARD, CARD, folded, _card_ok))
    if ID_NUMBER in wanted:
        found.extend(_find(_ID_NUMBER, ID_NUMBER, folded, resident_id_ok))
    if PHONE in wanted:
        found.extend(_find(_CN_MOBILE, PHONE, folded))
        found.extend(_find(_INTERNATIONAL, PHONE, folded, _international_ok))
        found.extend(_find(_NANP, PHONE, folded))
    if IP in wanted:
        found.extend(_find(_IPV4, IP, folded, _ip_ok))
        found.extend(_find(_IPV6, IP, folded, _ipv6_ok))
    return found


@dataclass(frozen=True, slots=True)
class CustomPattern:
    """A user's own detector: matches of ``pattern`` become ``[name]``."""

    name: str
    pattern: re.Pattern[str]


_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


def custom_pattern(name: str, pattern: str) -> CustomPattern:
    """Validate a configured pattern: an upper-case placeholder name, a regex that compiles and
    cannot match the empty string (it would match everywhere and redact nothing useful)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"placeholder name {name!r} must be upper case letters, digits and _ (A-Z first)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern for {name} does not compile: {exc}") from None
    if compiled.fullmatch(""):
        raise ValueError(f"pattern for {name} matches the empty string")
    return CustomPattern(name, compiled)


def custom(text: str, patterns: Sequence[CustomPattern]) -> list[Match]:
    """Matches of the user's patterns, on the width-folded text like the built-in ones."""
    folded = fold(text)
    return [
        Match(found.start(), found.end(), p.name)
        for p in patterns
        for found in p.pattern.finditer(folded)
        if found.end() > found.start()
    ]


def resolve(matches: Iterable[Match]) -> list[Match]:
    """Non-overlapping matches in text order: the longest first, ties to ``PRIORITY`` (custom
    patterns after the built-in ones), then the earliest."""
    ranked = sorted(matches, key=lambda m: (-m.length, PRIORITY.get(m.kind, len(PRIORITY)), m.start))
    kept: list[Match] = []
    for match in ranked:
        if all(match.end <= k.start or match.start >= k.end for k in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m.start)
