"""Whether a session's user is in the room, folded from RTC callbacks that arrive late and reordered.

ZEGO's advice (vendor facts, section 3.1): ``user_update_seq`` grows by one per login or logout of
a user, so an event at or below the stored sequence is stale and changes nothing. The sequence is
what orders: a logout of the next login may arrive before that login, and it still wins, because
its sequence is higher; a late logout of an older login has a lower one and is dropped.
``no_user_seconds`` is the agent time billed while nobody was in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def apply(presence: Presence, event: RtcEvent) -> Presence:
    """The presence after ``event``; the same presence when the event is stale or does not match."""
    if event.event == "room_login":
        if event.seq <= presence.user_seq:
            return presence
        return replace(
            presence,
            present=True,
            user_seq=event.seq,
            session_id=event.session_id,
            login_time_ms=event.login_time_ms,
            absent_since_ms=0,
            logout_reason="",
        )
    if event.event == "room_logout":
        if event.seq <= presence.user_seq:
            return presence
        return replace(
            presence,
            present=False,
            user_seq=event.seq,
            session_id=event.session_id,
            login_time_ms=event.login_time_ms,
            absent_since_ms=event.logout_time_ms,
            logout_reason=event.reason,
        )
    if event.event == "stream_create":
        if event.stream_id == presence.stream_id and event.seq <= presence.stream_seq:
            return presence
        return replace(presence, stream_id=event.stream_id, stream_seq=event.seq)
    if event.stream_id == presence.stream_id and event.seq > presence.stream_seq:
        return replace(presence, stream_id="", stream_seq=event.seq)
    return presence


def rejoined_on_new_stream(before: Presence, after: Presence, agent_user_stream_id: str) -> str | None:
    """The stream the agent should now listen to (UpdateAgentInstance ``UserStreamId``), if it changed."""
    if after.stream_id and after.stream_id != before.stream_id and after.stream_id != agent_user_stream_id:
        return after.stream_id
    return None


def no_user_seconds(absent_since_ms: int, until_ms: int) -> float:
    """Agent seconds billed from the user's logout until ``until_ms`` (a login or the session's end)."""
    return max(0, until_ms - absent_since_ms) / 1000 if absent_since_ms else 0.0
