"""ZEGO callback signatures, verified the way the Standard Webhooks libraries verify theirs.

ZEGO signs a callback with ``sha1`` over the sorted concatenation of the callback secret, the
``Timestamp`` and the ``Nonce`` (vendor facts, section 2). The body is *not* covered, which is
why the inbox also keeps a replay guard on the signature. Everything that can be wrong with a
signature raises the one error type, ``InvalidSignature``, with a machine-readable reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

SIGNED_FIELDS = ("AppId", "Timestamp", "Nonce", "Signature")


class InvalidSignature(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def callback_signature(secret: str, timestamp: int | str, nonce: int | str) -> str:
    parts = sorted((secret, str(timestamp), str(nonce)))
    return hashlib.sha1("".join(parts).encode()).hexdigest()  # noqa: S324 - ZEGO's scheme


def timestamp_seconds(timestamp: int) -> float:
    """AI Agent callbacks carry milliseconds, RTC callbacks and the doc's vector carry seconds."""
    return timestamp / 1000 if timestamp > 100_000_000_000 else float(timestamp)


def verify_callback(
    payload: Mapping[str, Any],
    *,
    secret_for: Callable[[int], str | None],
    now: float,
    window_seconds: int,
) -> None:
    """Raise ``InvalidSignature`` unless ``payload`` is signed by the secret of its own AppId, recently."""
    missing = [name for name in SIGNED_FIELDS if payload.get(name) in (None, "")]
    if missing:
        raise InvalidSignature("missing_fields", "missing " + ", ".join(missing))
    try:
        app_id = int(payload["AppId"])
        timestamp = int(payload["Timestamp"])
    except (TypeError, ValueError):
        raise InvalidSignature("bad_fields", "AppId and Timestamp must be integers") from None
    signature = payload["Signature"]
    if not isinstance(signature, str):
        raise InvalidSignature("bad_fields", "Signature must be a string")
    secret = secret_for(app_id)
    if secret is None:
        raise InvalidSignature("unknown_app", "unknown AppId")
    if abs(now - timestamp_seconds(timestamp)) > window_seconds:
        raise InvalidSignature("stale_timestamp", "Timestamp outside the accepted window")
    expected = callback_signature(secret, payload["Timestamp"], payload["Nonce"])
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise InvalidSignature("bad_signature", "signature does not match")
