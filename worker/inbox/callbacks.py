"""What a ZEGO AI Agent callback is once its bytes are parsed: the few fields we route on, and its keys.

ZEGO posts JSON but tells receivers to URL-decode it first, so a body may be plain JSON,
percent-encoded JSON, or a form whose ``Data`` field holds JSON; all three parse to the same
payload. ZEGO adds fields and events over time, so nothing here rejects what it does not know.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson

KNOWN_EVENTS = frozenset(
    {
        "ASRResult",
        "LLMResult",
        "Exception",
        "Interrupted",
        "UserSpeakAction",
        "AgentSpeakAction",
        "AgentInstanceStatus",
        "UserAudioData",
        "AgentInstanceCreated",
        "AgentInstanceDeleted",
        "AgentInstanceMetaInfo",
    }
)
_INTEGER_FIELDS = ("AppId", "Timestamp", "Sequence")
# What a retry re-signs: the AI Agent's names, and the RTC room callbacks' (worker/inbox/rtc_callbacks.py).
_UNSIGNED_FIELDS = frozenset({"Nonce", "Timestamp", "Signature", "nonce", "timestamp", "signature"})
# ZEGO's deepest callback (MetaInfo inside Data) is four levels deep.
MAX_DEPTH = 32
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# Postgres text cannot hold U+0000; no routing field has a reason to carry any control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedCallback(ValueError):
    """The body is not a callback we can store: a 400, and ZEGO should not retry it unchanged."""


def parse_body(body: bytes) -> tuple[dict[str, Any], str]:
    """The payload and the form it came in: ``"json"`` or ``"form"``."""
    payload, form = _parse(body)
    check_depth(payload)
    return payload, form


def _parse(body: bytes) -> tuple[dict[str, Any], str]:
    stripped = body.strip()
    if not stripped:
        raise MalformedCallback("empty body")
    try:
        if stripped[:1] == b"{":
            return _as_object(orjson.loads(stripped)), "json"
        text = stripped.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedCallback(f"body is not valid JSON: {exc}") from None
    if text[:3].upper() == "%7B":
        try:
            return _as_object(orjson.loads(unquote_plus(text))), "form"
        except orjson.JSONDecodeError as exc:
            raise MalformedCallback(f"URL-decoded body is not valid JSON: {exc}") from None
    return _parse_form(text), "form"


def check_depth(value: Any) -> None:
    """Refuse a payload nested deeper than ``MAX_DEPTH``: orjson reads 1,024 levels but writes only
    254, so a deeper one would crash the hashing that follows. Iterative, so it has no limit itself."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise MalformedCallback(f"body is nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedCallback("body must be a JSON object")
    return value


def _parse_form(text: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise MalformedCallback("body is neither JSON nor URL-encoded fields") from None
    payload: dict[str, Any] = {}
    for key, value in pairs:
        payload[key] = value
        if value[:1] in ("{", "["):
            # Data arrives as JSON text; a Name like "[beta] bot" stays text (and a Data that
            # is not JSON is refused later, by name, as "Data must be an object").
            with contextlib.suppress(orjson.JSONDecodeError):
                payload[key] = orjson.loads(value)
    for key in _INTEGER_FIELDS:
        number = payload.get(key)
        if isinstance(number, str) and _INTEGER.fullmatch(number):
            payload[key] = int(number)
    return payload


@dataclass(frozen=True, slots=True)
class Callback:
    app_id: int
    event: str
    agent_instance_id: str
    sequence: int | None
    timestamp_ms: int
    signature: str
    payload: dict[str, Any]
    dedup_key: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Callback:
        """Validate the routing fields of an already verified payload."""
        event = payload.get("Event")
        if not isinstance(event, str) or not event or len(event) > 64 or _CONTROL.search(event):
            raise MalformedCallback("Event must be a non-empty string of at most 64 printable characters")
        instance = payload.get("AgentInstanceId")
        if isinstance(instance, int):
            instance = str(instance)
        if not isinstance(instance, str) or not instance or len(instance) > 128 or _CONTROL.search(instance):
            raise MalformedCallback("AgentInstanceId must be a non-empty string of ≤128 printable characters")
        sequence = payload.get("Sequence")
        if sequence in (None, ""):
            sequence = None
        else:
            try:
                sequence = int(sequence)
            except (TypeError, ValueError):
                raise MalformedCallback("Sequence must be an integer") from None
            if not 0 <= sequence < 2**63:
                raise MalformedCallback("Sequence must be between 0 and 2^63 - 1")
        data = payload.get("Data")
        if data is not None and not isinstance(data, dict):
            raise MalformedCallback("Data must be an object")
        timestamp = int(payload["Timestamp"])
        app_id = int(payload["AppId"])
        if not 0 < app_id < 2**63:
            raise MalformedCallback("AppId out of range")
        # The same callback delivered twice must collide here, however it was re-signed.
        key = f"{app_id}:{instance}:{event}:"
        key += str(sequence) if sequence is not None else f"h:{content_hash(payload)}"
        return cls(
            app_id=app_id,
            event=event,
            agent_instance_id=instance,
            sequence=sequence,
            timestamp_ms=timestamp if timestamp > 100_000_000_000 else timestamp * 1000,
            signature=str(payload["Signature"]).lower(),
            payload=payload,
            dedup_key=key,
        )

    @property
    def data(self) -> dict[str, Any]:
        data = self.payload.get("Data")
        return data if isinstance(data, dict) else {}


def content_hash(payload: dict[str, Any]) -> str:
    """A hash of what a callback says, blind to how it was signed: a re-signed retry hashes the same."""
    unsigned = {k: v for k, v in payload.items() if k not in _UNSIGNED_FIELDS}
    return hashlib.sha256(orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)).hexdigest()


def payload_hash(payload: dict[str, Any]) -> str:
    """A hash of everything a callback says, signature included, blind to how it was encoded:
    the replay guard compares these, so JSON and form copies of one callback are duplicates."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def int_field(value: Any) -> int | None:
    """A numeric field as ZEGO may send it (number or string), or None when absent or garbled."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def text_field(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)
