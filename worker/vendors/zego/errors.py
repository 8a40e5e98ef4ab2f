"""The errors a ZEGO API call can end in, as one tree, and the table that maps vendor codes onto it.

::

    ZegoError(code, message, request_id, action)    under worker.vendors.errors.VendorError
    ├── ZegoTransientError            (a TransientVendorError) retried with backoff (worker.vendors.retries)
    │   ├── ZegoConnectError          the request never reached ZEGO (refused, DNS, TLS)
    │   ├── ZegoTimeoutError          .phase connect|pool (not processed) or read|write (maybe)
    │   ├── ZegoHttpError             HTTP 5xx or 429 without a ZEGO envelope
    │   ├── ZegoProtocolError         an answer that is not a ZEGO envelope (maybe processed)
    │   ├── ZegoRateLimitError        our own limiter would not grant a slot in time
    │   └── (codes) 100000015 gateway internal, 410000001 system error, 410000009 internal
    │       call failed, 410000010 insufficient resources, 41000100x/-11/-22/-24/-28/-32
    │       "... failed" on ZEGO's side, 410001025 digital-human resources, 410001029
    │       digital-human rate limit, RTC 1 failed, 206/207 QPS limited
    └── ZegoPermanentError            (a PermanentVendorError) never retried; unknown codes land here too
        ├── ZegoValidationError       410000003 bad parameter, 410000004 bad JSON, 410000014,
        │                             410001026/-27/-48 digital-human parameters, 100000001-3,
        │                             -6-9, -12-14 malformed request, RTC 2/3/8/50011/50012
        │                             (a VendorValidationError, as the shared SpecError raised
        │                             client-side before sending is)
        ├── ZegoAuthError             100000000/-4/-5/-10/-11/-16/-17 signing, AppId, service
        │                             not enabled; 410000002/-5/-6; 410001033-35 test account
        │                             expired; 410001047 zego_test with a foreign LLM.Url; RTC 9
        ├── ZegoNotFoundError         410001002 instance gone, 410001009 agent unknown,
        │                             410001016 user not in room, RTC 104/105/5018/5024/50001/50003
        ├── ZegoConflictError         410001008 agent exists, 410001030 digital-human stream
        │                             duplicated, RTC 1012
        ├── ZegoQuotaError            410000011 voice instances, 410001031 digital humans
        └── ZegoInstanceBusyError     410001041 shutting down, 410001013 listening, 410001042 not
                                      walkie-talkie, 410001043 stale Sequence, 410001046 user
                                      not streaming, 410001049 live digital human

``str(error)`` shows the action, code, vendor message and request id: never the signed URL, the
server secret or a request body (those never enter an error in the first place).

``maybe_processed`` says whether ZEGO may have acted on the request even though the call failed
(a read timeout, a 500/502/504 from a proxy). Callers use it to decide whether a non-idempotent
action such as CreateAgentInstance may be repeated.
"""

from __future__ import annotations

from typing import Literal

from worker.vendors.errors import (
    PermanentVendorError,
    TransientVendorError,
    VendorError,
    VendorValidationError,
)


class ZegoError(VendorError):
    """A failed ZEGO API call; ``code`` is the vendor's Code, or None when no envelope came back."""

    vendor = "zego"

    def __init__(
        self,
        code: int | None,
        message: str,
        *,
        request_id: str | None = None,
        action: str | None = None,
        http_status: int | None = None,
        maybe_processed: bool = False,
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.action = action
        self.http_status = http_status
        self.maybe_processed = maybe_processed
        super().__init__(code, message)

    def __str__(self) -> str:
        parts = [f"ZEGO {self.action or 'request'} failed"]
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.http_status is not None and (self.code is None or self.http_status != 200):
            parts.append(f"HTTP {self.http_status}")
        text = ", ".join(parts) + f": {self.message}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"request_id={self.request_id!r}, action={self.action!r})"
        )


class ZegoTransientError(ZegoError, TransientVendorError):
    """Worth retrying: ZEGO was busy, unreachable or failed internally."""


class ZegoConnectError(ZegoTransientError):
    """The connection failed before the request was sent; ZEGO cannot have acted on it."""


class ZegoTimeoutError(ZegoTransientError):
    """No answer in time. ``phase`` is httpx's: connect and pool timeouts happen before sending."""

    def __init__(
        self, message: str, *, phase: Literal["connect", "read", "write", "pool"], action: str
    ) -> None:
        self.phase = phase
        super().__init__(None, message, action=action, maybe_processed=phase in ("read", "write"))


class ZegoHttpError(ZegoTransientError):
    """HTTP 5xx or 429 without a ZEGO envelope (a proxy or load balancer answered)."""


class ZegoProtocolError(ZegoTransientError):
    """A 2xx answer without a readable envelope, or a connection cut mid-answer."""


class ZegoRateLimitError(ZegoTransientError):
    """The client-side limiter had no slot within its timeout; nothing was sent."""


class ZegoPermanentError(ZegoError, PermanentVendorError):
    """Retrying the same request cannot succeed; the caller must change something."""


class ZegoValidationError(ZegoPermanentError, VendorValidationError):
    """ZEGO rejected a parameter (its Message names the field) or the request was malformed."""


class ZegoAuthError(ZegoPermanentError):
    """Signing, AppId, ServerSecret, enabled service or test-account problems."""


class ZegoNotFoundError(ZegoPermanentError):
    """The instance, agent, room or user does not exist (any more)."""


class ZegoConflictError(ZegoPermanentError):
    """The thing being created already exists."""


class ZegoQuotaError(ZegoPermanentError):
    """The account's concurrent-instance limit is reached; raising it is a ZEGO business matter."""


class ZegoInstanceBusyError(ZegoPermanentError):
    """The instance exists but its state forbids this action right now (shutting down, listening)."""


# One table for both APIs: AI Agent codes are nine digits, RTC room codes are small, the
# 1000000xx gateway codes are shared, so no two meanings collide.
CODE_CLASSES: dict[int, type[ZegoError]] = {
    # Gateway (both APIs).
    100000000: ZegoAuthError,  # wrong Host header
    100000001: ZegoValidationError,  # AppId format
    100000002: ZegoValidationError,  # Timestamp empty
    100000003: ZegoValidationError,  # Timestamp format
    100000004: ZegoAuthError,  # signature expired (clock skew beyond ±10 min)
    100000005: ZegoAuthError,  # signature wrong (ServerSecret)
    100000006: ZegoValidationError,  # Action empty
    100000007: ZegoValidationError,  # unsupported Action
    100000008: ZegoValidationError,  # SignatureNonce empty
    100000009: ZegoValidationError,  # Signature empty
    100000010: ZegoAuthError,  # cannot get ServerSecret: AppId wrong
    100000011: ZegoAuthError,  # cannot get App config
    100000012: ZegoValidationError,  # cannot read HTTP body
    100000013: ZegoValidationError,  # SignatureVersion empty
    100000014: ZegoValidationError,  # unsupported SignatureVersion
    100000015: ZegoTransientError,  # internal gateway error
    100000016: ZegoAuthError,  # App not configured for production (RTC)
    100000017: ZegoAuthError,  # service not enabled for this App
    # AI Agent business codes.
    410000001: ZegoTransientError,  # system error
    410000002: ZegoAuthError,  # invalid AppID
    410000003: ZegoValidationError,  # invalid parameter (Message names it)
    410000004: ZegoValidationError,  # JSON parse failed
    410000005: ZegoAuthError,  # gateway auth failed
    410000006: ZegoAuthError,  # service not enabled
    410000009: ZegoTransientError,  # internal service call failed
    410000010: ZegoTransientError,  # insufficient service resources
    410000011: ZegoQuotaError,  # concurrent voice instances limit
    410000014: ZegoValidationError,  # invalid digital-human parameter
    410001002: ZegoNotFoundError,  # instance not found (deleted)
    410001003: ZegoTransientError,  # instance create failed
    410001004: ZegoTransientError,  # instance modify failed
    410001005: ZegoTransientError,  # instance delete failed
    410001006: ZegoTransientError,  # active LLM call failed
    410001007: ZegoTransientError,  # active TTS call failed
    410001008: ZegoConflictError,  # agent already registered
    410001009: ZegoNotFoundError,  # agent not registered
    410001010: ZegoTransientError,  # message history load failed
    410001011: ZegoTransientError,  # instance update failed
    410001013: ZegoInstanceBusyError,  # agent is listening: no LLM/TTS now
    410001016: ZegoNotFoundError,  # user not in the instance's room
    410001022: ZegoTransientError,  # get instance context failed
    410001023: ZegoTransientError,  # reset context failed
    410001024: ZegoTransientError,  # interrupt failed
    410001025: ZegoTransientError,  # digital-human resources insufficient
    410001026: ZegoValidationError,  # ConfigId not supported
    410001027: ZegoValidationError,  # DigitalHumanId wrong
    410001028: ZegoTransientError,  # digital-human instance create failed
    410001029: ZegoTransientError,  # digital-human interface rate limit
    410001030: ZegoConflictError,  # digital-human stream id duplicated
    410001031: ZegoQuotaError,  # concurrent digital humans limit
    410001032: ZegoTransientError,  # digital-human system error
    410001033: ZegoAuthError,  # LLM test account expired
    410001034: ZegoAuthError,  # TTS test account expired
    410001035: ZegoAuthError,  # App test account expired
    410001041: ZegoInstanceBusyError,  # graceful shutdown in progress
    410001042: ZegoInstanceBusyError,  # not in walkie-talkie mode
    410001043: ZegoInstanceBusyError,  # Sequence outdated
    410001044: ZegoTransientError,  # start listening failed
    410001045: ZegoTransientError,  # stop listening failed
    410001046: ZegoInstanceBusyError,  # user not streaming yet
    410001047: ZegoAuthError,  # zego_test ApiKey with a non-test LLM.Url
    410001048: ZegoValidationError,  # DigitalHumanId not bound to this App
    410001049: ZegoInstanceBusyError,  # live digital human: only TTS driving allowed
    # RTC room signalling codes.
    1: ZegoTransientError,  # "failed", no detail: retried within the bound
    2: ZegoValidationError,  # bad param
    3: ZegoValidationError,  # param too long
    8: ZegoValidationError,  # decode failed
    9: ZegoAuthError,  # no permission
    104: ZegoNotFoundError,  # room does not exist
    105: ZegoNotFoundError,  # user does not exist
    206: ZegoTransientError,  # App QPS limited
    207: ZegoTransientError,  # room QPS limited
    1012: ZegoConflictError,  # several users operating on one stream
    5018: ZegoNotFoundError,  # room already destroyed
    5024: ZegoNotFoundError,  # room does not exist
    50001: ZegoNotFoundError,  # room does not exist
    50003: ZegoNotFoundError,  # user online info not found
    50011: ZegoValidationError,  # user list too long
    50012: ZegoValidationError,  # message too long
}


def error_for_code(
    code: int, message: str, *, request_id: str | None, action: str, http_status: int | None = None
) -> ZegoError:
    """The typed error for a non-zero envelope Code; unknown codes are permanent (never retried)."""
    cls = CODE_CLASSES.get(code, ZegoPermanentError)
    return cls(code, message, request_id=request_id, action=action, http_status=http_status)


def error_for_http_status(status: int, *, action: str, request_id: str | None = None) -> ZegoError:
    """An HTTP failure that carried no ZEGO envelope.

    429 and 503 mean the request was turned away unprocessed; 500/502/504 may come from a proxy
    after ZEGO acted, so they are marked ``maybe_processed``.
    """
    message = f"HTTP {status} without a ZEGO envelope"
    if status == 429 or status >= 500:
        return ZegoHttpError(
            None,
            message,
            request_id=request_id,
            action=action,
            http_status=status,
            maybe_processed=status not in (429, 503),
        )
    return ZegoPermanentError(None, message, request_id=request_id, action=action, http_status=status)


def is_transient(error: BaseException) -> bool:
    """Retry predicate for idempotent actions: any transient error."""
    return isinstance(error, ZegoTransientError)


def is_transient_unprocessed(error: BaseException) -> bool:
    """Retry predicate for non-idempotent actions: transient and surely not acted on by ZEGO."""
    return isinstance(error, ZegoTransientError) and not error.maybe_processed
