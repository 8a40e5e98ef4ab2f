"""Presence folded from RTC callbacks that ZEGO delivers late, retried and reordered."""

from __future__ import annotations

import itertools
import math

from worker.inbox.rtc_callbacks import RtcEvent
from worker.sessions.presence import (
    Presence,
    absences,
    apply,
    billed_absence_seconds,
    record_change,
    rejoined_on_new_stream,
)


def login(seq: int, session: str, at: int) -> RtcEvent:
    return RtcEvent("room_login", "room-1", "user-1", seq, session_id=session, login_time_ms=at, at_ms=at)


def logout(seq: int, session: str, login_at: int, at: int, reason: str = "2") -> RtcEvent:
    return RtcEvent(
        "room_logout",
        "room-1",
        "user-1",
        seq,
        session_id=session,
        login_time_ms=login_at,
        logout_time_ms=at,
        reason=reason,
        at_ms=at,
    )


def fold(events: list[RtcEvent]) -> Presence:
    presence = Presence()
    for event in events:
        presence = apply(presence, event)
    return presence


def test_leave_then_return_in_order() -> None:
    """The user logs in, drops (reason 2), comes back: present again, the absence cleared."""
    gone = fold([login(1, "a", 1000), logout(2, "a", 1000, 5000)])
    assert (gone.present, gone.absent_since_ms, gone.logout_reason) == (False, 5000, "2")
    back = apply(gone, login(3, "b", 9000))
    assert (back.present, back.absent_since_ms, back.session_id) == (True, 0, "b")


def test_any_order_and_duplicates_end_the_same() -> None:
    """However the callbacks are shuffled or retried, the user_update_seq order decides the outcome."""
    events = [login(1, "a", 1000), logout(2, "a", 1000, 5000), login(3, "b", 9000)]
    outcomes = {fold(list(order) + list(order[:1])) for order in itertools.permutations(events)}
    assert {(p.present, p.session_id, p.user_seq) for p in outcomes} == {(True, "b", 3)}


def test_a_late_logout_of_an_old_login_does_not_undo_the_new_one() -> None:
    """The logout of the first login arrives after the second login: the user stays present."""
    presence = fold([login(1, "a", 1000), login(3, "b", 9000), logout(2, "a", 1000, 5000)])
    assert presence.present and presence.session_id == "b"


def test_a_rejoin_on_a_new_stream_names_the_stream_to_follow() -> None:
    """A new stream_create for the user asks for UpdateAgentInstance; the same stream asks nothing."""
    first = RtcEvent("stream_create", "room-1", "user-1", 1, stream_id="st-1")
    before = apply(Presence(), first)
    after = apply(before, RtcEvent("stream_create", "room-1", "user-1", 1, stream_id="st-2"))
    assert rejoined_on_new_stream(before, after, agent_user_stream_id="st-1") == "st-2"
    assert rejoined_on_new_stream(Presence(), before, agent_user_stream_id="st-1") is None
    closed = apply(after, RtcEvent("stream_close", "room-1", "user-1", 2, stream_id="st-2"))
    assert closed.stream_id == ""


def changes_of(events: list[RtcEvent]) -> list[list[object]]:
    changes: list[list[object]] = []
    for event in events:
        changes = record_change(changes, event)
    return changes


def test_billed_absence_is_the_same_whatever_order_the_changes_came_in() -> None:
    """Out from 5 s to 9 s, inside an agent alive from 2 s to 20 s: 4 s, however shuffled or retried."""
    events = [login(1, "a", 1000), logout(2, "a", 1000, 5000), login(3, "b", 9000)]
    for order in itertools.permutations(events):
        changes = changes_of([*order, order[0]])
        assert len(changes) == 3
        assert billed_absence_seconds(changes, [(2000, 20000)]) == 4.0


def test_the_time_before_a_first_login_is_absence_and_an_open_logout_runs_to_the_end() -> None:
    """Agent from 0 to 10 s; the user logs in at 3 s and leaves at 8 s for good: 3 + 2 = 5 s."""
    changes = changes_of([login(1, "a", 3000), logout(2, "a", 3000, 8000)])
    assert billed_absence_seconds(changes, [(0, 10000)]) == 5.0
    # Two instances, with a gap between them that nobody paid for: only their lives count.
    assert billed_absence_seconds(changes, [(0, 2000), (8500, 10000)]) == 3.5


def test_a_lost_login_between_two_logouts_is_bridged_and_nothing_heard_is_unknown() -> None:
    """Logouts 2 and 4 with login 3 lost: out from the first logout to the next login heard."""
    changes = changes_of(
        [login(1, "a", 0), logout(2, "a", 0, 1000), logout(4, "c", 2000, 3000), login(5, "d", 6000)]
    )
    assert absences(changes) == [(-math.inf, 0.0), (1000.0, 6000.0)]
    assert billed_absence_seconds([], [(0, 10000)]) is None


def test_a_late_create_of_the_old_stream_does_not_bring_it_back() -> None:
    """The user moved from the camera to the phone; the camera's create, retried, arrives last.
    stream_seq counts per stream, so time orders the two streams: the phone stays."""
    camera = RtcEvent("stream_create", "room-1", "user-1", 1, stream_id="cam", at_ms=1000)
    camera_closed = RtcEvent("stream_close", "room-1", "user-1", 2, stream_id="cam", at_ms=5000)
    phone = RtcEvent("stream_create", "room-1", "user-1", 1, stream_id="phone", at_ms=6000)
    for order in itertools.permutations([camera, camera_closed, phone]):
        assert fold([*order, camera]).stream_id == "phone"
    # A closed stream's late create does not reopen it, whether it comes after its close or twice.
    assert fold([camera, camera_closed, camera]).stream_id == ""
    assert fold([camera_closed, camera]).stream_id == ""
