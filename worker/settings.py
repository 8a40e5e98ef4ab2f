"""One typed settings object, read from ``ROOMWARDEN_*`` environment variables once.

The defaults are the embedded ones (a SQLite database and a SQLite-backed Celery broker under
``./var/``) so that a newcomer can run the service with nothing else installed; production points
``ROOMWARDEN_DATABASE_URL`` at Postgres and ``ROOMWARDEN_BROKER_URL`` at Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class ZegoApp(BaseModel):
    """The secrets of one ZEGO AppId: callbacks are verified with one, API calls signed with the other."""

    callback_secret: SecretStr
    server_secret: SecretStr | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMWARDEN_", extra="ignore")

    database_url: str = f"sqlite:///{VAR_DIR}/roomwarden.sqlite3"
    broker_url: str = f"sqla+sqlite:///{VAR_DIR}/broker.sqlite3"

    # One app through the three flat variables, several through ROOMWARDEN_ZEGO_APPS as JSON:
    # {"1234567": {"callback_secret": "...", "server_secret": "..."}}. Both may be used together.
    zego_app_id: int | None = None
    zego_callback_secret: SecretStr | None = None
    zego_server_secret: SecretStr | None = None
    zego_apps: dict[int, ZegoApp] = Field(default_factory=dict)

    # Bearer tokens (webhooks/auth.py): admin can do everything, read only look. Comma-separated
    # for several (rotation).
    api_token: SecretStr | None = None
    read_token: SecretStr | None = None

    # Vendor secrets inside stored session specs (LLM ApiKey, TTS app credentials) are sealed
    # with this Fernet key. Several keys, comma-separated, rotate: the first seals, all unseal.
    secret_key: SecretStr | None = None

    # Vendor endpoints. Production leaves them alone; tests and the demo point them at the emulator.
    zego_api_url: str = "https://aigc-aiagent-api.zegotech.cn"
    zego_rtc_url: str = "https://rtc-api.zego.im"
    coze_api_url: str = "https://api.coze.com"
    coze_token: SecretStr | None = None
    vendor_timeout_seconds: float = 10.0
    # Live control (say, interrupt, messages, PATCH, context) calls ZEGO inside the API request:
    # the longest such a request may spend on it, waiting for a rate-limit slot included.
    control_timeout_seconds: float = 8.0
    # A Redis for what every process on every host must share (the vendors' rate limits). With a
    # Redis broker it defaults to the broker; with RabbitMQ, set it, or each process keeps its own
    # limits and together they can exceed the vendor's.
    redis_url: str | None = None
    # Where the rate limits live, if not there ("" keeps them per process, as the embedded default).
    rate_limit_redis_url: str | None = None

    # Named agent templates (TOML); POST /v1/sessions may name one instead of spelling it out.
    templates_file: Path | None = None

    # Sessions started through the API.
    start_max_attempts: int = 5
    start_retry_base_seconds: float = 2.0
    start_stale_seconds: float = 60.0
    # Coze has no room callbacks and no end-room API: a room is taken as closed once nobody has
    # spoken for this long (Coze's longest_silence_ms default, 180 s; 3 minutes with no user).
    coze_silence_seconds: float = 180.0
    coze_poll_interval_seconds: float = 5.0

    # Policies (worker/policies/config.py documents the file); without a file, cautious defaults.
    policies_file: Path | None = None
    # Beat cadence of the policy jobs: idle recycling, maximum length, reconciliation, the
    # action sweeper and the start queue. A decision lands within one interval of being due.
    policy_interval_seconds: float = 5.0
    # An action claimed this long ago by a worker that never finished is taken over.
    action_stale_seconds: float = 60.0
    action_max_attempts: int = 5
    # Retention: raw callback payloads are emptied after this many days (0 keeps them); the
    # sessions and transcripts derived from them stay.
    raw_payload_retention_days: int = 30
    # Applied callbacks whose payload retention already emptied are deleted this many days after
    # they came (0 keeps the rows). Deduplication needs them only within the signature window
    # (ROOMWARDEN_TIMESTAMP_WINDOW_SECONDS, minutes): an older retry is refused as stale anyway.
    inbox_retention_days: int = 90

    host: str = "127.0.0.1"
    port: int = 8080

    # Receiver.
    timestamp_window_seconds: int = 600
    max_body_bytes: int = 1024 * 1024
    ingest_writers: int = 2
    ingest_batch_max: int = 256
    ingest_timeout_seconds: float = 10.0
    # Slow clients (webhooks/slow_clients.py): a request's headers must be complete this long after
    # its connection opened (or the previous response ended), and its body read within the body
    # budget (else 408); each web process takes at most this many connections (then 503).
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 1000

    # Worker.
    apply_max_attempts: int = 6
    apply_retry_base_seconds: float = 2.0
    sweep_interval_seconds: float = 5.0
    sweep_after_seconds: float = 5.0
    store_user_audio: bool = False
    # PII in transcripts (worker/privacy): off | read (redacted for all but the admin token) |
    # store (redacted before anything is written). The policy file overrides it per app/template.
    pii_redaction: Literal["off", "read", "store"] = "off"
    user_audio_retention_days: int = 7
    # Events out (outbox, deliveries, attempts) are kept this many days once none is pending.
    event_retention_days: int = 30

    # /metrics answers only with this bearer token when it is set.
    metrics_token: SecretStr | None = None
    # A host with workers and no web process: each worker's main process serves this host's
    # counters (multiprocess mode) on this port. The state gauges come from any web process.
    metrics_port: int | None = None

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    # Analyst views
    # Every statement of an API read (list, search, stats, a session, a transcript) must finish
    # within this budget, or the read stops and answers 503 read_timeout: on SQLite a read never
    # holds the write lock, but a runaway one still costs a core.
    read_timeout_seconds: float = 10.0
    # What a minute of a session costs, by provider ("zego", "zego_digital_human", "coze"), for
    # /v1/stats: ROOMWARDEN_COST_PER_MINUTE='{"zego": 0.02, "zego_digital_human": 0.1}'.
    # Providers without a rate are reported as unpriced minutes, not as free.
    cost_per_minute: dict[str, float] = Field(default_factory=dict)
    cost_currency: str = "USD"

    # Events out (worker/events/): endpoints on loopback, link-local or private addresses are
    # refused unless this is true (tests and the local demo), so the API cannot be turned on
    # the network it runs in.
    endpoints_allow_private: bool = False
    # Each POST to an app's endpoint: this long at most, and this many at once per endpoint.
    delivery_timeout_seconds: float = 10.0
    delivery_concurrency: int = 4
    # Seconds to wait after each failed attempt (timeouts, connection errors, 429, 5xx): about
    # 27 hours in all, as Svix does. Other 4xx fail the delivery after delivery_4xx_attempts.
    delivery_retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    delivery_4xx_attempts: int = 3
    # How often beat turns new outbox events into deliveries and wakes endpoints with due ones.
    outbound_interval_seconds: float = 1.0
    # How long one delivery task works for one endpoint before it makes way (a new one follows).
    delivery_budget_seconds: float = 10.0

    # Post-call analysis through the user's own LLM (worker/postcall/, docs/analysis.md): the full
    # OpenAI-compatible chat completions URL (as in ZEGO's LLM.Url); without it, analysis is off.
    analysis_url: str | None = None
    analysis_api_key: SecretStr | None = None  # sent as a Bearer token, never logged or shown
    analysis_model: str = "gpt-4o-mini"
    # The JSON Schema the extracted ``data`` must meet, and what a successful call means.
    analysis_data_schema: dict[str, Any] = Field(default_factory=dict)
    analysis_criteria: str = ""
    # The model's context in tokens (about 4 characters each); longer transcripts are split.
    analysis_context_tokens: int = 8000
    analysis_rate_per_second: float = 2.0
    analysis_timeout_seconds: float = 60.0
    # Beat cadence of the sweep that analyses ended sessions (none is lost to a broker outage).
    analysis_interval_seconds: float = 30.0
    # A sweep starts no new session after this long: it shares the worker with the drain.
    analysis_budget_seconds: float = 10.0

    @field_validator(
        "zego_callback_secret",
        "zego_server_secret",
        "api_token",
        "read_token",
        "secret_key",
        "coze_token",
        "metrics_token",
        "analysis_api_key",
        "analysis_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `ROOMWARDEN_METRICS_TOKEN=` (compose's `${VAR:-}`) means "not set", not "the empty token".
        return None if value == "" else value

    @field_validator(
        "timestamp_window_seconds",
        "max_body_bytes",
        "ingest_writers",
        "ingest_batch_max",
        "apply_max_attempts",
        "read_timeout_seconds",
        "header_timeout_seconds",
        "body_timeout_seconds",
        "max_connections",
        "delivery_timeout_seconds",
        "delivery_concurrency",
        "delivery_4xx_attempts",
        "outbound_interval_seconds",
        "delivery_budget_seconds",
        "analysis_context_tokens",
        "analysis_rate_per_second",
        "analysis_timeout_seconds",
        "analysis_interval_seconds",
        "analysis_budget_seconds",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _dedup_outlives_retries(self) -> Settings:
        # A deleted inbox row frees its dedup key: that is safe only once no retry of it can pass
        # the signature window any more.
        if 0 < self.inbox_retention_days * 86400 <= self.timestamp_window_seconds:
            raise ValueError("inbox_retention_days must outlast timestamp_window_seconds")
        if self.inbox_retention_days < 0:
            raise ValueError("inbox_retention_days must be 0 (keep) or more")
        return self

    def zego_app(self, app_id: int) -> ZegoApp | None:
        """The configured secrets for ``app_id``, or None for an AppId this deployment does not serve."""
        if app_id in self.zego_apps:
            return self.zego_apps[app_id]
        if self.zego_app_id == app_id and self.zego_callback_secret is not None:
            return ZegoApp(callback_secret=self.zego_callback_secret, server_secret=self.zego_server_secret)
        return None

    def rate_limit_url(self) -> str | None:
        if self.rate_limit_redis_url is not None:
            return self.rate_limit_redis_url or None
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def production(self) -> bool:
        """A shared database means several processes, maybe several hosts: no made-up secrets."""
        return not self.is_sqlite

    def missing_for_production(self, *, serves_api: bool) -> list[str]:
        """What a production process must be given rather than invent: every host must seal and
        unseal with the same key, and an API with no token at all is a mistake, not a mode."""
        if not self.production:
            return []
        missing = [] if self.secret_key is not None else ["ROOMWARDEN_SECRET_KEY"]
        if serves_api and self.api_token is None and self.read_token is None:
            missing.append("ROOMWARDEN_API_TOKEN (or ROOMWARDEN_READ_TOKEN)")
        return missing


class ProductionMisconfigured(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            "a Postgres database means production, and production needs "
            + ", ".join(missing)
            + " set the same on every host (see docs/deploy.md); refusing to start"
        )


def require_production(settings: Settings, *, serves_api: bool) -> None:
    missing = settings.missing_for_production(serves_api=serves_api)
    if missing:
        raise ProductionMisconfigured(missing)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
