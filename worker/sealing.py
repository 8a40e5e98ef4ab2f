"""Vendor secrets inside stored session specs, sealed at rest.

A session keeps the vendor request that started it so that it can be started again (issue 4's
recreation), and that request carries the customer's LLM ApiKey and TTS credentials. They are
sealed with Fernet (AES-CBC + HMAC, from the ``cryptography`` project) under
``ROOMWARDEN_SECRET_KEY``; a sealed value is stored as ``{"$sealed": "<token>"}`` in place of the
secret, so the rest of the spec stays readable for analysts and the API.

Several comma-separated keys rotate: the first seals, any of them unseals.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SEALED = "$sealed"
REDACTED = "***"

Path = tuple[str, ...]


class SealingError(Exception):
    """No key, a bad key, or a value sealed under a key this deployment no longer has."""


class Sealer:
    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise SealingError("ROOMWARDEN_SECRET_KEY is empty")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except (ValueError, TypeError) as exc:
            raise SealingError(
                "ROOMWARDEN_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from exc

    def seal(self, body: dict[str, Any], paths: Iterable[Path]) -> dict[str, Any]:
        """A copy of ``body`` with the value at each path sealed."""
        sealed = copy.deepcopy(body)
        for parent, key in _slots(sealed, paths):
            value = parent[key]
            if isinstance(value, dict) and SEALED in value:
                continue
            parent[key] = {SEALED: self._fernet.encrypt(str(value).encode()).decode()}
        return sealed

    def unseal(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``body`` with every sealed value opened: the request to send to the vendor."""

        def open_(token: str) -> str:
            try:
                return self._fernet.decrypt(token.encode()).decode()
            except InvalidToken as exc:
                raise SealingError("a sealed value does not open with the configured keys") from exc

        return _replace_sealed(body, open_)


def redact(body: dict[str, Any]) -> dict[str, Any]:
    """A copy fit to show: sealed values (and nothing else) replaced by ``***``."""
    return _replace_sealed(body, lambda _token: REDACTED)


def _replace_sealed(body: dict[str, Any], replace: Callable[[str], Any]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {SEALED}:
                return replace(str(value[SEALED]))
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    result: dict[str, Any] = walk(body)
    return result


def _slots(body: dict[str, Any], paths: Iterable[Path]) -> Iterator[tuple[dict[str, Any], str]]:
    for path in paths:
        node: Any = body
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path and path[-1] in node and node[path[-1]] is not None:
            yield node, path[-1]
