"""The vendor clients a process uses, made once per process from the settings.

Every call to ZEGO or Coze goes through these: one httpx client per vendor and app, with the
settings' timeouts, a rate limiter shared through Redis when there is one (so that twenty
workers recovering at once still send ZEGO ten requests a second, not two hundred), and the
vendor's error tree (``worker.vendors.errors``, which reduces any of them to the two questions a
task asks: may I try again, and what do I tell the user).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from worker.settings import Settings
from worker.vendors.chat_completions import ChatCompletionsClient
from worker.vendors.coze.client import CozeClient
from worker.vendors.errors import VendorNotConfigured
from worker.vendors.ratelimit import Limiter, LocalLimiter, RedisLimiter
from worker.vendors.zego.agent import ZegoAgentClient
from worker.vendors.zego.rtc import ZegoRtcClient

Z = TypeVar("Z", ZegoAgentClient, ZegoRtcClient)


class Vendors:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._agents: dict[int, ZegoAgentClient] = {}
        self._rtc: dict[int, ZegoRtcClient] = {}
        self._coze: CozeClient | None = None
        self._limiter: Limiter | None = None
        self._llms: dict[tuple[str, str], ChatCompletionsClient] = {}

    def limiter(self) -> Limiter:
        with self._lock:
            if self._limiter is None:
                url = self.settings.rate_limit_url()
                self._limiter = RedisLimiter.from_url(url) if url else LocalLimiter()
            return self._limiter

    def _server_secret(self, app_id: int) -> str:
        app = self.settings.zego_app(app_id)
        if app is None or app.server_secret is None:
            raise VendorNotConfigured(f"no ZEGO ServerSecret configured for AppId {app_id}")
        return app.server_secret.get_secret_value()

    def zego_agent(self, app_id: int) -> ZegoAgentClient:
        return self._zego(self._agents, ZegoAgentClient, self.settings.zego_api_url, app_id)

    def zego_rtc(self, app_id: int) -> ZegoRtcClient:
        return self._zego(self._rtc, ZegoRtcClient, self.settings.zego_rtc_url, app_id)

    def _zego(self, made: dict[int, Z], kind: Callable[..., Z], url: str, app_id: int) -> Z:
        secret = self._server_secret(app_id)
        limiter = self.limiter()
        with self._lock:
            if app_id not in made:
                made[app_id] = kind(
                    url, app_id, secret, timeout=self.settings.vendor_timeout_seconds, limiter=limiter
                )
            return made[app_id]

    def coze(self) -> CozeClient:
        token = self.settings.coze_token
        if token is None:
            raise VendorNotConfigured("set ROOMWARDEN_COZE_TOKEN to start Coze sessions")
        limiter = self.limiter()
        with self._lock:
            if self._coze is None:
                self._coze = CozeClient(
                    self.settings.coze_api_url,
                    token.get_secret_value(),
                    timeout=self.settings.vendor_timeout_seconds,
                    limiter=limiter,
                )
            return self._coze

    def llm(self, url: str, model: str) -> ChatCompletionsClient:
        """The user's own LLM for post-call analysis (worker/postcall/), one client per URL and model."""
        key = self.settings.analysis_api_key
        limiter = self.limiter()
        with self._lock:
            if (url, model) not in self._llms:
                self._llms[url, model] = ChatCompletionsClient(
                    url,
                    key.get_secret_value() if key is not None else None,
                    model=model,
                    timeout=self.settings.analysis_timeout_seconds,
                    limiter=limiter,
                    rate_per_second=self.settings.analysis_rate_per_second,
                )
            return self._llms[url, model]

    def close(self) -> None:
        with self._lock:
            for llm in self._llms.values():
                llm.close()
            self._llms.clear()
            for client in [*self._agents.values(), *self._rtc.values(), self._coze]:
                if client is not None:
                    client.close()
            self._agents.clear()
            self._rtc.clear()
            self._coze = None
