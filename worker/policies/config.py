"""The policy file: defaults a cautious operator would choose, overridden per app and per template.

``ROOMWARDEN_POLICIES_FILE`` names a TOML file; without one the defaults below apply::

    [defaults]                       # every section and key is optional
    dry_run = false                  # true: decide and record, never call the vendor

    [defaults.on_deleted]            # AgentInstanceDeleted, by Code
    user_absent = "close_room"       # 1202: close_room | end | wait (for the user, then recreate)
    wait_seconds = 300
    recreate_codes = [1201, 1203, 1204, 1205, 1206, 1207]
    max_recreations = 3              # within window_seconds, then end with reason gave_up
    window_seconds = 600
    backoff_seconds = 2.0            # doubled per recreation in the window, up to backoff_max
    backoff_max_seconds = 60.0
    on_lost = "end"                  # reconciliation found the agent gone: end | recreate

    [defaults.on_exception]
    end_at_once = [2203, 2303]       # LLM/TTS authentication: recreating cannot help
    [defaults.on_exception.families.llm]
    count = 5                        # this many 22xx within window_seconds...
    window_seconds = 60
    action = "end"                   # ...then end (or recreate)

    [defaults.idle]
    after_seconds = 600              # no user speech for this long; 0 turns it off
    warning = "Are you still there? I will hang up soon."   # spoken first, if set
    warning_seconds = 15
    user_absent_seconds = 60         # ZEGO's MaxIdleTime for agents roomwarden creates (10-1800;
                                     # unset: ZEGO's 120 s; a request's own value wins)

    [defaults.max_length]
    seconds = 3600                   # 0 turns it off

    [defaults.quota]                 # per ZEGO app
    voice_instances = 10
    digital_human_instances = 10
    when_full = "queue"              # queue | recycle_idle (end the longest-idle session first)
    queue_timeout_seconds = 600

    [defaults.reconcile]
    silent_seconds = 120             # active, no callback for this long: ask ZEGO
    unconfirmed_seconds = 60         # created, no AgentInstanceCreated for this long: ask ZEGO
    recheck_seconds = 120            # do not ask about the same session more often; the wait
                                     # doubles with each ask that settles nothing (alive, unknown)
    max_backoff_seconds = 3600       # ... up to this
    max_attempts = 8                 # inconclusive asks in a row, then flag reconcile_gave_up

    [defaults.coze]
    one_room_window_seconds = 600    # one live room per user and bot within this window
    rooms_per_minute = 20
    max_room_seconds = 3600          # past this a room is taken as gone (reason reconciled)

    [defaults.retention]
    transcript_days = 0              # days after a session ends that its words are kept; 0 keeps
                                     # them (see worker/privacy/retention.py, docs/erasure.md)

    [defaults.privacy]               # PII redaction (worker/privacy, docs/redaction.md)
    pii_redaction = "read"           # off | read | store; unset: ROOMWARDEN_PII_REDACTION
                                     # ("store" per app only: the receiver knows no template)
    [defaults.privacy.custom_patterns]
    ORDER_ID = 'ORD-\\d{8}'          # placeholder name = regex: matches become [ORDER_ID]

    [apps.1234567.quota]             # per ZEGO AppId
    when_full = "recycle_idle"

    [templates.concierge.idle]       # per agent template (worker/sessions/templates.py)
    after_seconds = 120

Template values win over app values, which win over defaults. Every combination is validated
when the file is read, and a mistake is a start-up error naming the key, e.g.
``templates.concierge.idle.after_seconds: Input should be a valid number``.
"""

from __future__ import annotations

import copy
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.postcall.section import AnalysisSection
from worker.privacy.detectors import custom_pattern
from worker.sessions.templates import merged


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnDeleted(_Section):
    user_absent: Literal["close_room", "end", "wait"] = "close_room"
    wait_seconds: float = Field(300.0, gt=0)
    wait_poll_seconds: float = Field(5.0, gt=0)
    recreate_codes: tuple[int, ...] = (1201, 1203, 1204, 1205, 1206, 1207)
    max_recreations: int = Field(3, ge=0)
    window_seconds: float = Field(600.0, gt=0)
    backoff_seconds: float = Field(2.0, ge=0)
    backoff_max_seconds: float = Field(60.0, ge=0)
    on_lost: Literal["end", "recreate"] = "end"
    dry_run: bool = False


class ExceptionRule(_Section):
    count: int = Field(5, ge=1)
    window_seconds: float = Field(60.0, gt=0)
    action: Literal["end", "recreate"] = "end"


def _default_families() -> dict[str, ExceptionRule]:
    return {"llm": ExceptionRule(), "tts": ExceptionRule()}


class OnException(_Section):
    end_at_once: tuple[int, ...] = (2203, 2303)
    # Keyed by lifecycle.exception_family: asr, llm, tts, agent_rtc, other.
    families: dict[str, ExceptionRule] = Field(default_factory=_default_families)

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: dict[str, ExceptionRule]) -> dict[str, ExceptionRule]:
        unknown = set(value) - {"asr", "llm", "tts", "agent_rtc", "other"}
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}: use asr, llm, tts, agent_rtc, other")
        return value

    dry_run: bool = False


class Idle(_Section):
    after_seconds: float = Field(600.0, ge=0)
    # A user who leaves without hanging up is silent too, but only after after_seconds; ZEGO sees
    # the user leave the room and deletes the agent MaxIdleTime later (1202), with no beat
    # interval on top. Unset keeps ZEGO's default (120 s).
    user_absent_seconds: int | None = Field(None, ge=10, le=1800)
    warning: str | None = Field(None, min_length=1, max_length=300)
    warning_seconds: float = Field(15.0, ge=0)
    dry_run: bool = False


class MaxLength(_Section):
    seconds: float = Field(3600.0, ge=0)
    dry_run: bool = False


class Quota(_Section):
    voice_instances: int = Field(10, ge=1)
    digital_human_instances: int = Field(10, ge=1)
    when_full: Literal["queue", "recycle_idle"] = "queue"
    queue_timeout_seconds: float = Field(600.0, gt=0)
    dry_run: bool = False


class Reconcile(_Section):
    silent_seconds: float = Field(120.0, gt=0)
    unconfirmed_seconds: float = Field(60.0, gt=0)
    recheck_seconds: float = Field(120.0, gt=0)
    max_backoff_seconds: float = Field(3600.0, gt=0)
    max_attempts: int = Field(8, ge=1)
    dry_run: bool = False


class CozeGuard(_Section):
    one_room_window_seconds: float = Field(600.0, ge=0)
    rooms_per_minute: int = Field(20, ge=1)
    max_room_seconds: float = Field(3600.0, gt=0)


class Retention(_Section):
    # Days after its end that a session's words (turns, sentences, stored callbacks, audio,
    # events' text) are kept; then removed, counts and timings kept. 0 keeps them for ever.
    transcript_days: int = Field(0, ge=0, le=36500)


class Privacy(_Section):
    # None: the process-wide ROOMWARDEN_PII_REDACTION (worker/privacy/modes.py).
    pii_redaction: Literal["off", "read", "store"] | None = None
    custom_patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("custom_patterns")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            custom_pattern(name, pattern)  # raises ValueError naming the pattern
        return value


class Policy(_Section):
    """Everything that applies to one session, resolved from defaults, its app and its template."""

    dry_run: bool = False
    on_deleted: OnDeleted = OnDeleted()
    on_exception: OnException = OnException()
    idle: Idle = Idle()
    max_length: MaxLength = MaxLength()
    quota: Quota = Quota()
    reconcile: Reconcile = Reconcile()
    coze: CozeGuard = CozeGuard()
    retention: Retention = Retention()
    privacy: Privacy = Privacy()
    analysis: AnalysisSection = AnalysisSection()  # post-call analysis (worker/postcall/)

    def dry(self, section: str) -> bool:
        """Whether decisions of ``section`` are only recorded: its own switch or the global one."""
        return self.dry_run or bool(getattr(getattr(self, section), "dry_run", False))


class PolicyBook:
    """The parsed file: resolve a session's policy with ``for_session`` (cached per combination)."""

    def __init__(
        self,
        defaults: dict[str, Any] | None = None,
        apps: dict[int, dict[str, Any]] | None = None,
        templates: dict[str, dict[str, Any]] | None = None,
        source: str = "<defaults>",
    ) -> None:
        self.source = source
        self._defaults = defaults or {}
        self._apps = apps or {}
        self._templates = templates or {}
        self._resolved: dict[tuple[int | None, str | None], Policy] = {}
        self.defaults = self._build(None, None)
        for app_id in self._apps:
            self._build(app_id, None)
            for name in self._templates:
                self._build(app_id, name)
        for name in self._templates:
            self._build(None, name)

    @property
    def app_ids(self) -> list[int]:
        """The AppIds the file configures on their own (for the slot gauges)."""
        return sorted(self._apps)

    @property
    def template_names(self) -> list[str]:
        """The templates the file configures on their own: with ``app_ids``, every policy a session
        can get (the scans' SQL prefilters spell out each one)."""
        return sorted(self._templates)

    def for_session(self, app_id: int | None, template: str | None) -> Policy:
        app_key = app_id if app_id in self._apps else None
        template_key = template if template in self._templates else None
        return self._resolved.get((app_key, template_key)) or self._build(app_key, template_key)

    def _build(self, app_id: int | None, template: str | None) -> Policy:
        layers = [("defaults", self._defaults)]
        if app_id is not None:
            layers.append((f"apps.{app_id}", self._apps[app_id]))
        if template is not None:
            layers.append((f"templates.{template}", self._templates[template]))
        raw: dict[str, Any] = {}
        for _name, layer in layers:
            raw = merged(raw, layer)
        try:
            policy = Policy.model_validate(raw)
        except ValidationError as exc:
            raise PolicyError(_describe(exc, layers, self.source)) from None
        self._resolved[(app_id, template)] = policy
        return policy


def _describe(exc: ValidationError, layers: list[tuple[str, dict[str, Any]]], source: str) -> str:
    messages = []
    for error in exc.errors():
        path = [str(part) for part in error["loc"]]
        # Name the layer that set the offending key: the most specific one that has it.
        owner = layers[0][0]
        for name, layer in layers:
            node: Any = layer
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                owner = name
        messages.append(f"{owner}.{'.'.join(path)}: {error['msg']}")
    return f"policy file {source}: " + "; ".join(messages)


def parse(text: str, *, source: str = "<string>") -> PolicyBook:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {source}: {exc}") from None
    unknown = set(raw) - {"defaults", "apps", "templates"}
    if unknown:
        raise PolicyError(f"policy file {source}: unknown top-level keys {sorted(unknown)}")
    tables = {name: raw.get(name, {}) for name in ("defaults", "apps", "templates")}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise PolicyError(f"policy file {source}: [{name}] must be a table")
    apps: dict[int, dict[str, Any]] = {}
    for key, table in tables["apps"].items():
        if not str(key).isdigit() or not isinstance(table, dict):
            raise PolicyError(f"policy file {source}: apps.{key} must be a table keyed by a ZEGO AppId")
        apps[int(key)] = table
    for key, table in tables["templates"].items():
        if not isinstance(table, dict):
            raise PolicyError(f"policy file {source}: templates.{key} must be a table")
        privacy = table.get("privacy")
        if isinstance(privacy, dict) and privacy.get("pii_redaction") == "store":
            raise PolicyError(
                f"policy file {source}: templates.{key}.privacy.pii_redaction: 'store' is per app only"
                " (the receiver stores a callback before it can know the session's template)"
            )
    return PolicyBook(copy.deepcopy(tables["defaults"]), apps, tables["templates"], source=source)


def load(path: Path | None) -> PolicyBook:
    if path is None:
        return PolicyBook()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from None
    return parse(text, source=str(path))


@lru_cache(maxsize=4)
def book_for(path: Path | None) -> PolicyBook:
    """The process's parsed policy file (read once; a change takes a restart, like the templates)."""
    return load(path)
