"""Which redaction mode applies where, and the one call every reader of transcript text makes.

``ROOMWARDEN_PII_REDACTION`` sets the mode for everything; the policy file's ``privacy`` section
overrides it per app and per template (worker/policies/config.py):

- ``off``: text is stored and shown as spoken (the behaviour before redaction existed);
- ``read``: stored as spoken; every reader but the admin token gets ``redact``-ed text;
- ``store``: redacted at the receiver, before the callback is written: nothing raw is stored.
  Per app only, because the receiver learns a session's template only later, from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from worker.jobs import context
from worker.policies.config import PolicyBook, book_for
from worker.privacy.detectors import custom_pattern
from worker.privacy.redaction import Rules, redact
from worker.settings import Settings

Mode = Literal["off", "read", "store"]


def mode_for(book: PolicyBook, default: Mode, app_id: int | None, template: str | None) -> Mode:
    """The mode for a session of this app and template: the policy file's, else the default."""
    configured = book.for_session(app_id, template).privacy.pii_redaction
    return configured if configured is not None else default


def rules_for(book: PolicyBook, app_id: int | None, template: str | None) -> Rules:
    """The built-in detectors and the patterns the policy file adds for this app and template."""
    patterns = book.for_session(app_id, template).privacy.custom_patterns
    return _rules(tuple(sorted(patterns.items())))


@lru_cache(maxsize=64)
def _rules(patterns: tuple[tuple[str, str], ...]) -> Rules:
    # Compiled once per combination: the policy file is read once per process.
    return Rules(custom=tuple(custom_pattern(name, pattern) for name, pattern in patterns))


def _book(settings: Settings) -> PolicyBook:
    return book_for(settings.policies_file)


def worker_settings(settings: Settings | None) -> Settings:
    """The settings given, else the worker's (its job context: a test's settings when one is installed)."""
    return settings if settings is not None else context.current().settings


def redacts_for_readers(
    app_id: int | None, template: str | None, *, settings: Settings | None = None
) -> bool:
    """Whether a non-admin reader of this session's text gets it redacted (``read`` or ``store``:
    in ``store`` the text is already redacted, and redacting again costs little and catches a
    value that a pattern added to the policy file since would find)."""
    settings = worker_settings(settings)
    return mode_for(_book(settings), settings.pii_redaction, app_id, template) != "off"


def for_reader(
    text: str, app_id: int | None, template: str | None, *, settings: Settings | None = None
) -> str:
    """``text`` as anyone but the admin token may read it: the analysis prompt, outbound events,
    read tokens. Unchanged when the session's mode is ``off``."""
    settings = worker_settings(settings)
    book = _book(settings)
    if mode_for(book, settings.pii_redaction, app_id, template) == "off":
        return text
    return redact(text, rules_for(book, app_id, template))


def store_redactor(settings: Settings) -> Callable[[int], Rules | None] | None:
    """For the receiver: None when no app stores redacted (one check on the hot path), else a
    function from a callback's AppId to the rules to redact it with (None: store it as it came)."""
    book = _book(settings)
    default: Mode = settings.pii_redaction
    apps = {app_id: mode_for(book, default, app_id, None) for app_id in book.app_ids}
    default_mode = mode_for(book, default, None, None)
    if default_mode != "store" and "store" not in apps.values():
        return None

    def rules(app_id: int) -> Rules | None:
        if apps.get(app_id, default_mode) != "store":
            return None
        return rules_for(book, app_id, None)

    return rules
