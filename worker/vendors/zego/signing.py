"""Signing ZEGO server API requests (AI Agent and RTC share the scheme).

Every request carries ``AppId``, ``SignatureNonce``, ``Timestamp`` (Unix seconds), ``Signature``
and ``SignatureVersion=2.0`` in its query. The signature is
``md5(str(AppId) + SignatureNonce + ServerSecret + str(Timestamp))`` as 32 lower-case hex
characters, and must be rebuilt for every request with a fresh nonce: ZEGO accepts a timestamp
within ±10 minutes, so a signed URL is replayable for that long and is treated as a secret (it
is never logged).
"""

from __future__ import annotations

import hashlib
import secrets
import time

SIGNATURE_VERSION = "2.0"


def api_signature(app_id: int, nonce: str, server_secret: str, timestamp: int) -> str:
    """The request signature ZEGO expects for these four values."""
    material = f"{app_id}{nonce}{server_secret}{timestamp}"
    # MD5 is the vendor's scheme, not our choice of hash.
    return hashlib.md5(material.encode("utf-8"), usedforsecurity=False).hexdigest()


def new_nonce() -> str:
    """16 hex characters from 8 random bytes, the nonce format the docs ask for."""
    return secrets.token_hex(8)


def signed_params(
    app_id: int, server_secret: str, *, now: float | None = None, nonce: str | None = None
) -> dict[str, str]:
    """The common query parameters of one request, signed with a fresh nonce unless one is given."""
    timestamp = int(time.time() if now is None else now)
    nonce = new_nonce() if nonce is None else nonce
    return {
        "AppId": str(app_id),
        "SignatureNonce": nonce,
        "Timestamp": str(timestamp),
        "Signature": api_signature(app_id, nonce, server_secret, timestamp),
        "SignatureVersion": SIGNATURE_VERSION,
    }
