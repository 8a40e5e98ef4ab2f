"""The ZEGO API gateway: common query parameters, the md5 signature, the envelope, ids, rates.

Both ZEGO APIs (AI Agent and RTC) sit behind the same gateway and share these checks. ZEGO does
not document their order; this module uses vendor-facts section 5.1's order, except that the
AppId must be known before the md5 can be checked (the ServerSecret comes from it):

    Action missing 100000006, unknown 100000007; Timestamp / SignatureNonce / Signature /
    SignatureVersion missing 100000002 / 100000008 / 100000009 / 100000013; AppId not numeric
    100000001; Timestamp not an integer 100000003; SignatureVersion != "2.0" 100000014;
    |now - Timestamp| > 600 s 100000004; unknown AppId 100000010; md5 mismatch 100000005.

Every answer is the envelope ``{Code, Message, RequestId, Data}`` with HTTP 200, also for errors
(ZEGO's sample server checks ``response.ok`` and then ``Code``; a client must look at ``Code``).

Rate limits. ZEGO documents 10 requests/s per action per AppId for the AI Agent API but no code
for exceeding it. The emulator answers such a request with ``410000010`` ("insufficient service
resources"): a documented business code that a client must already treat as transient and retry
with backoff, so code that survives it here survives whatever the gateway really does; an
invented HTTP 429 would teach clients a shape ZEGO never promised. The RTC API documents ``206``
(App QPS limited) and ``207`` (room QPS limited), which it uses. ``EmulatorConfig.rate_limits``
turns all limits off; ``agent_rate_limit_code`` picks another code.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from emulator.config import ZegoAppSecrets

SIGNATURE_WINDOW_S = 600
TWITTER_EPOCH_MS = 1288834974657  # ZEGO's ids (e.g. 1912124734317838336) look like snowflakes


class ZegoError(Exception):
    """A non-zero envelope ``Code``. ``message`` goes to the client: never put a secret in it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def sign(app_id: int | str, nonce: str, server_secret: str, timestamp: int | str) -> str:
    """``md5(AppId + SignatureNonce + ServerSecret + Timestamp)`` as 32 lower-case hex chars."""
    raw = f"{app_id}{nonce}{server_secret}{timestamp}".encode()
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def check_request(
    params: Mapping[str, str],
    actions: frozenset[str],
    apps: Mapping[int, ZegoAppSecrets],
    now_s: float,
) -> tuple[str, int]:
    """Run the gateway checks on the query parameters; return (Action, AppId) or raise."""
    action = params.get("Action", "")
    if not action:
        raise ZegoError(100000006, "Action is empty")
    if action not in actions:
        raise ZegoError(100000007, "unsupported Action")
    for name, code in (
        ("Timestamp", 100000002),
        ("SignatureNonce", 100000008),
        ("Signature", 100000009),
        ("SignatureVersion", 100000013),
    ):
        if not params.get(name):
            raise ZegoError(code, f"{name} is empty")
    raw_app_id = params.get("AppId", "")
    if not raw_app_id.isascii() or not raw_app_id.isdigit() or int(raw_app_id) >= 2**32:
        raise ZegoError(100000001, "AppId format error")
    app_id = int(raw_app_id)
    raw_ts = params["Timestamp"]
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise ZegoError(100000003, "Timestamp format error") from None
    if params["SignatureVersion"] != "2.0":
        raise ZegoError(100000014, "unsupported SignatureVersion, only 2.0")
    if abs(now_s - timestamp) > SIGNATURE_WINDOW_S:
        raise ZegoError(100000004, "signature expired")
    app = apps.get(app_id)
    if app is None:
        raise ZegoError(100000010, "get ServerSecret failed, check AppId")
    expected = sign(app_id, params["SignatureNonce"], app.server_secret, raw_ts)
    if not hmac.compare_digest(expected, params["Signature"]):
        raise ZegoError(100000005, "signature invalid")
    return action, app_id


class IdGenerator:
    """19-digit numeric ids, ascending, shaped like the vendor's snowflakes."""

    def __init__(self) -> None:
        self._seq = itertools.count(secrets.randbelow(1000))
        self._worker = secrets.randbelow(1024)

    def next(self) -> str:
        ms = time.time_ns() // 1_000_000 - TWITTER_EPOCH_MS
        value = (ms << 22) | (self._worker << 12) | (next(self._seq) % 4096)
        text = str(value)
        assert len(text) == 19, text
        return text


_request_ids = IdGenerator()


def envelope(code: int = 0, message: str = "success", data: Any = None) -> JSONResponse:
    """The one response shape, HTTP 200 whatever the code."""
    body = {"Code": code, "Message": message, "RequestId": _request_ids.next(), "Data": data}
    return JSONResponse(body, status_code=200)


class RateLimiter:
    """A sliding one-second window per key; ``allow`` records the request when it passes."""

    def __init__(self) -> None:
        self._hits: dict[tuple[Any, ...], deque[float]] = {}

    def allow(self, key: tuple[Any, ...], per_second: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= 1.0:
            hits.popleft()
        if len(hits) >= per_second:
            return False
        hits.append(now)
        return True


class ApiFaults:
    """Control-injected failures: the next N calls of an action answer with a chosen code."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[tuple[int, str]]] = {}

    def add(self, action: str, code: int, message: str, count: int) -> None:
        self._pending.setdefault(action, deque()).extend([(code, message)] * count)

    def clear(self) -> None:
        self._pending.clear()

    def take(self, action: str) -> ZegoError | None:
        queue = self._pending.get(action)
        if not queue:
            return None
        code, message = queue.popleft()
        return ZegoError(code, message)

    def pending(self) -> dict[str, int]:
        return {action: len(queue) for action, queue in self._pending.items() if queue}
