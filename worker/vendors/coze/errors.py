"""Typed errors for the Coze API, so that callers decide "retry or give up" by class, not by code.

::

    CozeError(code, msg, logid, endpoint, http_status, maybe_processed)
    │                             under worker.vendors.errors.VendorError
    ├── CozeTransientError        (a TransientVendorError) retry with backoff: timeouts,
    │                             connection errors, HTTP 5xx/429, 4009 (system request
    │                             cap), 4020 (RPM peak), 5000 (internal error)
    └── CozePermanentError        (a PermanentVendorError) do not retry: the same request
                                  fails the same way
        ├── CozeAuthError         4100 (token invalid / wrong region), 4101 (permission point
        │                         missing), 700012006 (access token invalid)
        ├── CozeNotFoundError     4006 (bot), 4002 (conversation), 4200 (resource)
        ├── CozeValidationError   4000 (bad parameter), 4003/4004/4005 (meta_data, messages);
        │                         a VendorValidationError, as the shared SpecError (raised
        │                         before sending, naming the field) is
        └── CozeQuotaError        4008 (daily bot usage), 4011/4019/4022 (balance or arrears),
                                  4027/4028 (overdue, free credits gone) if they ever surface

The vendor answers ``{"code", "msg", "detail": {"logid"}}``; its SDK raises whenever ``code > 0``
whatever the HTTP status, and so do we. The ``logid`` is kept: it is what Coze support asks for.
Codes not listed are permanent unless they are 5xxx (server side). Messages come from the vendor;
the client scrubs its own token from them before an error is built, so ``str(error)`` is safe to log.

``maybe_processed`` says whether Coze may have acted on the request although the call failed (a
read timeout, a 5xx without an envelope). Create-room bills from the moment it succeeds, so the
client repeats it only when the vendor certainly did not act (a business code such as 4009/4020,
or a connection that never opened); callers use the flag the same way.
"""

from __future__ import annotations

from worker.vendors.errors import (
    PermanentVendorError,
    SpecError,
    TransientVendorError,
    VendorError,
    VendorValidationError,
)

__all__ = ["SpecError"]  # the shared one, re-exported beside the Coze classes

TRANSIENT_CODES = frozenset({4009, 4020, 5000})
AUTH_CODES = frozenset({4100, 4101, 700012006})
NOT_FOUND_CODES = frozenset({4002, 4006, 4200})
VALIDATION_CODES = frozenset({4000, 4003, 4004, 4005})
QUOTA_CODES = frozenset({4008, 4011, 4019, 4022, 4027, 4028})


class CozeError(VendorError):
    """A failed Coze call. ``code`` is the vendor's business code (None when there was none)."""

    vendor = "coze"

    def __init__(
        self,
        code: int | None,
        msg: str,
        logid: str | None = None,
        *,
        endpoint: str | None = None,
        http_status: int | None = None,
        maybe_processed: bool = False,
    ) -> None:
        self.code = code
        self.msg = msg
        self.message = msg
        self.logid = logid
        self.endpoint = endpoint
        self.http_status = http_status
        self.maybe_processed = maybe_processed
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"coze {self.endpoint}" if self.endpoint else "coze"
        parts = [f"{where} failed"]
        if self.code is not None:
            parts.append(f"code={self.code}")
        parts.append(f"msg={self.msg!r}")
        if self.logid:
            parts.append(f"logid={self.logid}")
        return " ".join(parts)


class CozeTransientError(CozeError, TransientVendorError):
    """Worth retrying later: the vendor was busy, rate-limited us, or could not be reached."""


class CozePermanentError(CozeError, PermanentVendorError):
    """Retrying the same request will not help."""


class CozeAuthError(CozePermanentError):
    """The token is wrong, expired, for the other region, or lacks the endpoint's permission point."""


class CozeNotFoundError(CozePermanentError):
    """The bot, conversation or resource does not exist (or belongs to someone else)."""


class CozeValidationError(CozePermanentError, VendorValidationError):
    """A parameter was refused."""


class CozeQuotaError(CozePermanentError):
    """Usage or balance exhausted: needs a human (top-up, plan change) or tomorrow."""


def error_for(
    code: int | None,
    msg: str,
    logid: str | None,
    *,
    endpoint: str | None = None,
    http_status: int | None = None,
) -> CozeError:
    """The error for a vendor answer: by business code when there is one, else by HTTP status."""
    cls: type[CozeError]
    if code is not None and code > 0:
        if code in TRANSIENT_CODES or 5000 <= code < 6000:
            cls = CozeTransientError
        elif code in AUTH_CODES:
            cls = CozeAuthError
        elif code in NOT_FOUND_CODES:
            cls = CozeNotFoundError
        elif code in VALIDATION_CODES:
            cls = CozeValidationError
        elif code in QUOTA_CODES:
            cls = CozeQuotaError
        else:
            cls = CozePermanentError
    elif http_status is not None and (http_status >= 500 or http_status in (408, 429)):
        cls = CozeTransientError
    elif http_status in (401, 403):
        cls = CozeAuthError
    elif http_status == 404:
        cls = CozeNotFoundError
    else:
        cls = CozePermanentError
    maybe = (code is None or code <= 0) and http_status is not None and http_status >= 500
    return cls(code, msg, logid, endpoint=endpoint, http_status=http_status, maybe_processed=maybe)
