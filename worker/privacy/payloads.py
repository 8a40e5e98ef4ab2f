"""``store`` mode at the receiver: a callback's spoken words redacted before the inbox row is written.

Only what a person said or an agent answered is rewritten: ``Data.Text`` (ASRResult, LLMResult),
``Data.PlayedText`` (Interrupted) and every string inside ``Data.MetaInfo``. Identifiers (AppId,
RoomId, UserId, AgentInstanceId), the signature and the timing fields are kept as sent, so that
the drain, dedup and replay detection read the same fields as before. The replay guard's hash is
taken from the original payload by the caller (webhooks/receiver.py), before this runs; the
conflict check compares stored and incoming payloads both redacted, so a retried callback is
still a duplicate.
"""

from __future__ import annotations

from typing import Any

from worker.privacy.redaction import Rules, redact

SPOKEN_FIELDS = ("Text", "PlayedText")


def redact_payload(payload: dict[str, Any], rules: Rules) -> tuple[dict[str, Any], bool]:
    """A copy of ``payload`` with its spoken text redacted, and whether anything changed
    (unchanged: the payload itself, so the caller can keep the body's own bytes)."""
    data = payload.get("Data")
    if not isinstance(data, dict):
        return payload, False
    new_data = dict(data)
    for name in SPOKEN_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            new_data[name] = redact(value, rules)
    if "MetaInfo" in data:
        new_data["MetaInfo"] = _strings(data["MetaInfo"], rules)
    if new_data == data:
        return payload, False
    return {**payload, "Data": new_data}, True


def _strings(value: Any, rules: Rules) -> Any:
    if isinstance(value, str):
        return redact(value, rules)
    if isinstance(value, dict):
        return {key: _strings(item, rules) for key, item in value.items()}
    if isinstance(value, list):
        return [_strings(item, rules) for item in value]
    return value
