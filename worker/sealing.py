"""Vendor secrets inside stored session specs, sealed at rest.

A session keeps the vendor request that started it so that it can be started again (issue 4's
recreation), and that request carries the customer's LLM ApiKey and TTS credentials. They are
sealed with Fernet (AES-CBC + HMAC, from the ``cryptography`` project) under
``ROOMWARDEN_SECRET_KEY``; a sealed value is stored as ``{"$sealed": "<token>"}`` in place of the
secret, so the rest of the spec stays readable for analysts and the API.

Several comma-separated keys rotate: the first seals, any of them unseals.

What counts as a secret is decided twice over (``secret_paths``): by a known list of where the
vendors put credentials, and by the name of any key anywhere in the spec (``api_key``,
``access_token``, ``Authorization``, ``client_secret``, ``password``...), because ``LLM.Params``
and the ASR/TTS ``Params`` are free-form and pass through to other vendors. A false positive only
costs a ``***`` on screen; a false negative leaks a customer's key to every reader. Strings are
sealed as they are; any other value (a number, an object) as JSON under ``$sealed_json``, so
unsealing gives back exactly what was sent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SEALED = "$sealed"
SEALED_JSON = "$sealed_json"
REDACTED = "***"

Path = tuple[str | int, ...]

# Where vendors document credentials: ZEGO's LLM ApiKey and every TTS ``app`` field.
_KNOWN: tuple[Path, ...] = (("LLM", "ApiKey"),)
_KNOWN_OBJECTS: tuple[Path, ...] = (("TTS", "Params", "app"), ("ASR", "Params", "app"))
# Key names that hold credentials, once lower-cased with everything but letters and digits gone.
_SECRET_NAME = re.compile(
    r"(secret|passw(or)?d|credential|cookie|signature|privatekey|apikey|accesskey)"
    r"|(key|token)$|^(auth|bearer|session)"
)


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
            if isinstance(value, dict) and (SEALED in value or SEALED_JSON in value):
                continue
            if isinstance(value, str):
                parent[key] = {SEALED: self._fernet.encrypt(value.encode()).decode()}
            else:
                token = self._fernet.encrypt(orjson.dumps(value)).decode()
                parent[key] = {SEALED_JSON: token}
        return sealed

    def unseal(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``body`` with every sealed value opened: the request to send to the vendor."""

        def open_(token: str, as_json: bool) -> Any:
            try:
                opened = self._fernet.decrypt(token.encode())
            except InvalidToken as exc:
                raise SealingError("a sealed value does not open with the configured keys") from exc
            return orjson.loads(opened) if as_json else opened.decode()

        return _replace_sealed(body, open_)


def redact(body: dict[str, Any]) -> dict[str, Any]:
    """A copy fit to show: sealed values (and nothing else) replaced by ``***``."""
    return _replace_sealed(body, lambda _token, _as_json: REDACTED)


def secret_paths(body: dict[str, Any]) -> list[Path]:
    """Where credentials sit in a vendor request body: the known places, and every key whose name
    says credential (``_SECRET_NAME``), at any depth, lists included. A credential that is an
    object is one path (sealed whole); nothing under it is listed again."""
    paths: list[Path] = [p for p in _KNOWN if _at(body, p) is not None]
    for prefix in _KNOWN_OBJECTS:
        app = _at(body, prefix)
        if isinstance(app, dict):
            paths.extend((*prefix, key) for key in app)
    known = set(paths)

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                here = (*path, key)
                if here in known or child is None:
                    continue
                if _SECRET_NAME.search(re.sub(r"[^a-z0-9]", "", str(key).lower())):
                    paths.append(here)
                else:
                    walk(child, here)
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, (*path, index))

    walk(body, ())
    return paths


def _at(body: Any, path: Path) -> Any:
    node = body
    for part in path:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _replace_sealed(body: dict[str, Any], replace: Callable[[str, bool], Any]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {SEALED}:
                return replace(str(value[SEALED]), False)
            if set(value) == {SEALED_JSON}:
                return replace(str(value[SEALED_JSON]), True)
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    result: dict[str, Any] = walk(body)
    return result


def _slots(body: dict[str, Any], paths: Iterable[Path]) -> Iterator[tuple[Any, str | int]]:
    """(container, key) of each path that holds a value, in dicts and lists alike."""
    for path in paths:
        if not path:
            continue
        node, last = _at(body, path[:-1]), path[-1]
        if (isinstance(node, dict) and node.get(last) is not None) or (
            isinstance(node, list)
            and isinstance(last, int)
            and 0 <= last < len(node)
            and node[last] is not None
        ):
            yield node, last
