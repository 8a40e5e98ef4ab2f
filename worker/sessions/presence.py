"""Whether a session's user is in the room, folded from RTC callbacks that arrive late and reordered.

ZEGO's advice (vendor facts, section 3.1): ``user_update_seq`` grows by one per login or logout of
a user, so an event at or below the stored sequence is stale and changes nothing. The sequence is
what orders: a logout of the next login may arrive before that login, and it still wins, because
its sequence is higher; a late logout of an older login has a lower one and is dropped.
``no_user_seconds`` is the agent time billed while nobody was in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from worker.inbox.rtc_callbacks import RtcEvent


@dataclass(frozen=True, slots=True)
class Presence:
    present: bool = False
    user_seq: int = -1
    session_id: str = ""
    login_time_ms: int = 0
    # When the user was last seen leaving (ms), and ZEGO's logout reason; 0/"" while present.
    absent_since_ms: int = 0
    logout_reason: str = ""
    stream_id: str = ""
    stream_seq: int = -1
    # When the current stream was created, or the last one closed (ms): ``stream_seq`` counts per
    # stream, so only time orders two different streams' callbacks.
    stream_at_ms: int = 0


def apply(presence: Presence, event: RtcEvent) -> Presence:
    """The presence after ``event``; the same presence when the event is stale or does not match."""
    if event.event in ("room_login", "room_logout"):
        if event.seq <= presence.user_seq:
            return presence
        left = event.event == "room_logout"
        return replace(
            presence,
            present=not left,
            user_seq=event.seq,
            session_id=event.session_id,
            login_time_ms=event.login_time_ms,
            absent_since_ms=event.logout_time_ms if left else 0,
            logout_reason=event.reason if left else "",
        )
    if event.event == "stream_create":
        if event.stream_id == presence.stream_id:
            stale = event.seq <= presence.stream_seq
        else:  # another stream (or none): a late create of an older one must not come back
            stale = event.at_ms < presence.stream_at_ms
        if stale:
            return presence
        return replace(presence, stream_id=event.stream_id, stream_seq=event.seq, stream_at_ms=event.at_ms)
    if event.stream_id == presence.stream_id and event.seq > presence.stream_seq:
        return replace(presence, stream_id="", stream_seq=event.seq, stream_at_ms=event.at_ms)
    if not presence.stream_id and event.at_ms > presence.stream_at_ms:
        # The close of a stream whose create is still on its way: that create, older, stays out.
        return replace(presence, stream_at_ms=event.at_ms)
    return presence


def rejoined_on_new_stream(before: Presence, after: Presence, agent_user_stream_id: str) -> str | None:
    """The stream the agent should now listen to (UpdateAgentInstance ``UserStreamId``), if it changed."""
    if after.stream_id and after.stream_id != before.stream_id and after.stream_id != agent_user_stream_id:
        return after.stream_id
    return None


# A user's logins and logouts as kept on ``room_users.changes``: [user_update_seq, "in" | "out", at_ms].
Change = list[Any]
# Enough for a day of a user dropping in and out every few minutes; the oldest go first.
MAX_CHANGES = 1000


def record_change(changes: list[Change], event: RtcEvent) -> list[Change]:
    """``changes`` with this login or logout in seq order; the same list when it is known already
    (a retry) or is not a login or logout."""
    if event.event not in ("room_login", "room_logout") or any(c[0] == event.seq for c in changes):
        return changes
    kind = "in" if event.event == "room_login" else "out"
    at = event.login_time_ms if kind == "in" else event.logout_time_ms
    merged = sorted([*changes, [event.seq, kind, at]], key=lambda c: int(c[0]))
    return merged[-MAX_CHANGES:]


def absences(changes: list[Change]) -> list[tuple[float, float]]:
    """When the user was out, in ms, read in seq order (not arrival order).

    Before the first change heard the user is taken to be in the opposite state: out before a
    first login, in before a first logout (whose login was not heard). A missing change between
    two of the same kind is bridged: out from the first logout until the next login.
    """
    ordered = sorted(changes, key=lambda c: int(c[0]))
    if not ordered:
        return []
    out: list[tuple[float, float]] = []
    since: float | None = -math.inf if ordered[0][1] == "in" else None
    for _seq, kind, at in ordered:
        if kind == "in" and since is not None:
            out.append((since, float(at)))
            since = None
        elif kind == "out" and since is None:
            since = float(at)
    if since is not None:
        out.append((since, math.inf))
    return out


def billed_absence_seconds(changes: list[Change], windows: list[tuple[float, float]]) -> float | None:
    """Agent seconds inside ``windows`` (each instance's life, in ms) during which the user was out;
    None when no change of the user was ever heard (roomwarden cannot tell)."""
    if not changes:
        return None
    gaps = absences(changes)
    total = 0.0
    for start, end in windows:
        for out_from, out_until in gaps:
            total += max(0.0, min(end, out_until) - max(start, out_from))
    return round(total / 1000, 3)
