"""The one root every vendor error sits under, and what a failure means to a session.

::

    VendorError                       .vendor, .code, .message, .http_status, .maybe_processed
    ├── TransientVendorError          worth retrying (with backoff, through ``RetryPolicy``)
    │   ├── ZegoTransientError ...    worker.vendors.zego.errors
    │   └── CozeTransientError ...    worker.vendors.coze.errors
    └── PermanentVendorError          the same request fails the same way
        ├── VendorValidationError     the vendor (or we, before sending) refused a parameter
        │   ├── SpecError             refused before anything was sent: names every field
        │   ├── ZegoValidationError
        │   └── CozeValidationError
        ├── ZegoPermanentError ...
        └── CozePermanentError ...

Callers that only need "may I try again, and what do I tell the user" use :func:`classify`;
callers that care about one vendor's codes catch that vendor's classes. ``VendorNotConfigured``
is not a vendor's answer but this deployment's gap (no credentials), so it stands apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class VendorError(Exception):
    """A failed call to a vendor; ``code`` is the vendor's business code when one came back."""

    vendor: str = "vendor"
    code: int | None = None
    message: str = ""
    http_status: int | None = None
    # Whether the vendor may have acted although the call failed (a read timeout, a proxy's 502):
    # a non-idempotent request (one that creates, and bills) is repeated only when this is False.
    maybe_processed: bool = False

    @property
    def transient(self) -> bool:
        return isinstance(self, TransientVendorError)


class TransientVendorError(VendorError):
    """Worth retrying later: the vendor was busy, rate-limited us, or could not be reached."""


class PermanentVendorError(VendorError):
    """Retrying the same request will not help; something has to change first."""


class VendorValidationError(PermanentVendorError):
    """A parameter was refused."""


class SpecError(VendorValidationError, ValueError):
    """A request that breaks a vendor's documented constraint, caught before anything is sent.

    ``field`` is the first offending field as a dotted path in the vendor's own spelling
    (``LLM.Temperature``, ``config.video_config.video_frame_rate``); ``errors`` lists every
    ``(field, message)``. It is also a ``ValueError``, so plain validation code can catch it.
    """

    def __init__(self, errors: Sequence[tuple[str, str]], *, spec: str | None = None) -> None:
        self.errors: list[tuple[str, str]] = list(errors) or [("", "invalid request")]
        self.field = self.errors[0][0]
        self.spec = spec
        self.message = "; ".join(f"{f}: {m}" if f else m for f, m in self.errors)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"invalid {self.spec or 'vendor'} request, nothing sent: {self.message}"


class VendorNotConfigured(Exception):
    """The request names an app or vendor this deployment has no credentials for."""


@dataclass(frozen=True)
class Failure:
    code: int | None
    message: str
    transient: bool


def classify(exc: BaseException) -> Failure | None:
    """What a vendor exception means for a session, or None for an exception that is ours."""
    if isinstance(exc, VendorError):
        return Failure(exc.code, str(exc), exc.transient)
    return None
