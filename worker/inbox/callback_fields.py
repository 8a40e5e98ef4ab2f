"""What a callback may carry, decided once at the receiver, the same for both databases.

A callback answered "stored" must be applicable. The drain writes callback fields into typed
columns, and Postgres refuses what SQLite takes without a word (a 200-character RoomId in a
VARCHAR(128), a Round past BIGINT, a timestamp no datetime holds, NUL in any text), so a value
checked only by the database parks the callback ``failed`` on one database and not the other.
Two rules close that:

- ``check`` refuses (400, naming the field) what ZEGO documents as impossible or no column can
  hold: ids longer than their column (the columns are sized from the vendor's limits), numbers of
  the wrong type (a float or a boolean where ZEGO sends an integer) or out of range. (Nesting
  deeper than any ZEGO callback is refused earlier, by ``callbacks.parse_body``.)
- ``scrub`` keeps what is merely odd. The raw body is stored as it came; when the drain reads it,
  every NUL in a string (keys included: JSONB refuses ``\\u0000`` too) becomes U+FFFD, so the text
  around it survives on both databases. Other control characters are stored as they are and
  escaped where they would reach a terminal.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from worker.inbox.callbacks import MalformedCallback

INT32 = (-(2**31), 2**31 - 1)
UINT32 = (1, 2**32 - 1)
BIGINT_NATURAL = (0, 2**63 - 1)
# Milliseconds from 1970 to the end of year 9999: the range a datetime (and both databases) holds.
EPOCH_MS = (0, 253_402_300_799_999)

# Strings the drain writes into VARCHAR columns, by their column's width (worker/models/).
TOP_STRINGS = {"AgentUserId": 64, "AgentId": 128, "Name": 256, "RoomId": 128}
DATA_STRINGS = {"UserId": 64, "Status": 16, "Format": 16}
# Strings the drain writes into TEXT columns: any length the body limit lets through.
DATA_TEXTS = ("Text", "Message", "PlayedText")

TOP_INTEGERS = {"AppId": UINT32, "Timestamp": BIGINT_NATURAL, "Sequence": BIGINT_NATURAL}
DATA_INTEGERS = {
    "Round": BIGINT_NATURAL,
    "Code": INT32,
    "Reason": INT32,
    "SampleRate": INT32,
    "CreatedTimestamp": EPOCH_MS,
    "DeletedTimestamp": EPOCH_MS,
}


# Every string rule by key, None for no width: what ``_fits`` looks up for each key a callback has.
_TOP_WIDTHS: dict[str, int | None] = dict(TOP_STRINGS)
_DATA_WIDTHS: dict[str, int | None] = {**DATA_STRINGS, **dict.fromkeys(DATA_TEXTS)}


def check(payload: dict[str, Any]) -> None:
    """Refuse, naming the field, any value that no retry will make storable and applicable."""
    data = payload.get("Data")
    if _fits(payload, TOP_INTEGERS, _TOP_WIDTHS) and (
        not isinstance(data, dict) or ("Audio" not in data and _fits(data, DATA_INTEGERS, _DATA_WIDTHS))
    ):
        return
    _check_in_order(payload)


def _fits(where: dict[str, Any], integers: dict[str, tuple[int, int]], widths: dict[str, int | None]) -> bool:
    """Whether every field of ``where`` that has a rule keeps it: one pass over the fields a
    callback carries (a handful) instead of a lookup per rule. Decides only the common case;
    anything it doubts goes to ``_check_in_order``, which names the first offending field."""
    for key, value in where.items():
        if value is None:
            continue
        bounds = integers.get(key)
        if bounds is not None:
            fits = type(value) is int and bounds[0] <= value <= bounds[1]
            if not fits and not (value == "" and key == "Sequence"):
                return False
        elif key in widths:
            width = widths[key]
            if type(value) is not str or (width is not None and len(value) > width):
                return False
    return True


def _check_in_order(payload: dict[str, Any]) -> None:
    for name, bounds in TOP_INTEGERS.items():
        _integer(payload, name, name, bounds)
    for name, width in TOP_STRINGS.items():
        _string(payload, name, name, width)
    data = payload.get("Data")
    if not isinstance(data, dict):
        return  # absent, or refused by name in Callback.from_payload
    for name, bounds in DATA_INTEGERS.items():
        _integer(data, name, f"Data.{name}", bounds)
    for name, width in DATA_STRINGS.items():
        _string(data, name, f"Data.{name}", width)
    for name in DATA_TEXTS:
        _string(data, name, f"Data.{name}", None)
    audio = data.get("Audio")
    if audio is not None:
        _string(data, "Audio", "Data.Audio", None)
        try:
            base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedCallback("Data.Audio must be base64") from None


def _integer(where: dict[str, Any], key: str, field: str, bounds: tuple[int, int]) -> None:
    value = where.get(key)
    if value is None or (value == "" and key == "Sequence"):
        return
    low, high = bounds
    # bool is an int in Python; ZEGO never sends one where it means a number.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedCallback(f"{field} must be an integer from {low} to {high}")


def _string(where: dict[str, Any], key: str, field: str, width: int | None) -> None:
    value = where.get(key)
    if value is None:
        return
    if not isinstance(value, str):
        raise MalformedCallback(f"{field} must be a string")
    if width is not None and len(value) > width:
        raise MalformedCallback(f"{field} must be at most {width} characters")


def scrub(value: Any) -> Any:
    """``value`` with every NUL in its strings (dict keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value
