"""Bearer tokens and their scopes.

Two scopes, two kinds of token, so that an analyst's dashboard cannot end a session:

- ``admin`` (``ROOMWARDEN_API_TOKEN``): everything, starting and ending sessions, running policies;
- ``read`` (``ROOMWARDEN_READ_TOKEN``): sessions, transcripts, search, stats, exports and ``/ui``.

Ingest has no token: ZEGO's callbacks are verified by their signatures (``worker/inbox/signatures.py``).
Several tokens of one scope may be given comma-separated, so that one can be rotated out.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Awaitable, Callable

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from webhooks.receiver import error
from worker.settings import Settings

Endpoint = Callable[[Request], Awaitable[Response]]


class Scope(enum.StrEnum):
    READ = "read"
    ADMIN = "admin"


def _tokens(secret: SecretStr | None) -> list[bytes]:
    if secret is None:
        return []
    return [t.strip().encode() for t in secret.get_secret_value().split(",") if t.strip()]


def scope_of(settings: Settings, given: str) -> Scope | None:
    """The scope a token grants, or None. Every comparison runs, in constant time, whatever matches."""
    token = given.encode()
    admin = any([hmac.compare_digest(token, t) for t in _tokens(settings.api_token)])
    read = any([hmac.compare_digest(token, t) for t in _tokens(settings.read_token)])
    if admin:
        return Scope.ADMIN
    return Scope.READ if read else None


def bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def requires(scope: Scope) -> Callable[[Endpoint], Endpoint]:
    """Wrap an endpoint: 401 without a valid token, 403 with a token of too narrow a scope."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def wrapper(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            if settings.api_token is None and (scope is Scope.ADMIN or settings.read_token is None):
                names = "ROOMWARDEN_API_TOKEN" if scope is Scope.ADMIN else "ROOMWARDEN_READ_TOKEN"
                return error(503, "api_disabled", f"set {names} to enable the API")
            given = bearer(request)
            granted = scope_of(settings, given) if given is not None else None
            if granted is None:
                return error(401, "unauthorized", "a valid bearer token is required")
            if scope is Scope.ADMIN and granted is not Scope.ADMIN:
                return error(403, "forbidden", "this token has the read scope; this needs admin")
            request.state.scope = granted  # what the endpoint may show (sees_raw_text)
            return await endpoint(request)

        wrapper.__name__ = endpoint.__name__
        wrapper.__doc__ = endpoint.__doc__
        return wrapper

    return wrap


def sees_raw_text(request: Request) -> bool:
    """Whether this caller may read transcript text as spoken: the admin token only. Everyone else
    gets the redacted copy where PII redaction keeps one (worker/privacy/turns.py)."""
    return getattr(request.state, "scope", None) is Scope.ADMIN


authorized = requires(Scope.ADMIN)
readable = requires(Scope.READ)
