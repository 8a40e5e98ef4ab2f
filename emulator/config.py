"""What an emulator run knows: the apps and their secrets, where callbacks go, quotas, ports.

Secrets are ``repr=False`` so that printing a config (in a test failure, a log line) never shows
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ZegoAppSecrets:
    server_secret: str = field(repr=False)
    callback_secret: str = field(repr=False)


@dataclass
class EmulatorConfig:
    zego_apps: dict[int, ZegoAppSecrets] = field(default_factory=dict)
    # None: callbacks are built and recorded in the sender's log, never sent.
    callback_url: str | None = None
    # Where the RTC room callbacks go (room_login, room_logout, stream_create, stream_close);
    # None: built and logged only, as above.
    rtc_callback_url: str | None = None
    # Vendor seconds per real second (see emulator.clock).
    time_scale: float = 1.0
    # Concurrent running instances per AppId (ZEGO's defaults; raised on request by ZEGO business).
    voice_quota: int = 10
    digital_human_quota: int = 10
    # Coze: bearer token -> the permissions it carries; the bot ids that exist.
    coze_tokens: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    coze_bots: frozenset[str] = frozenset()
    host: str = "127.0.0.1"
    zego_agent_port: int = 0
    zego_rtc_port: int = 0
    coze_port: int = 0
    llm_port: int = 0
    # Per-action request rate limits (10/s AI Agent; RTC as documented per action). Off for
    # load tests that deliberately exceed them.
    rate_limits: bool = True
    # The AI Agent API documents no rate-limit code; see emulator.zego_gateway for the choice.
    agent_rate_limit_code: int = 410000010
