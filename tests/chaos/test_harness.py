"""The chaos suite's comparison itself: it must see every kind of loss and doubling it is there for."""

from __future__ import annotations

import copy
from collections import Counter

from tests.chaos.harness import (
    APPS,
    OUT_OF_ORDER,
    Expectation,
    ExpectedTurn,
    Observed,
    conversations,
    differences,
    expect,
    identity,
)


def as_stored(expected: Expectation) -> Observed:
    """What roomwarden would have stored had everything gone right, to spoil one thing at a time."""
    observed = Observed(
        sessions=dict(expected.sessions),
        turns=copy.deepcopy(expected.turns),
        exceptions=copy.deepcopy(expected.exceptions),
        actions=Counter(expected.actions),
        events=Counter(expected.events),
        inbox=Counter({"done": expected.callbacks or 0}),
        deliveries=sum(expected.events.values()),
    )
    assert differences(expected, observed) == []
    return observed


def test_a_doubled_event_a_lost_turn_and_a_stray_session_are_each_reported() -> None:
    """Each departure from the expected result is named on a line of its own."""
    expected = expect(conversations(2, APPS))
    observed = as_stored(expected)
    event = next(k for k in expected.events if k[0] == "turn.completed")
    observed.events[event] += 1
    key = next(iter(observed.turns))
    observed.turns[key] = observed.turns[key][:-1]
    observed.sessions[(APPS[0].app_id, "chaos_room_0 (again)")] = ("ended", "deleted", 0)
    observed.inbox.update(done=-1, pending=1)  # one callback left unapplied
    found = differences(expected, observed)
    assert any(line.startswith("event: unexpected 1x ('turn.completed'") for line in found), found
    assert any(line.startswith(f"transcript {key}: expected") for line in found), found
    assert any("(again)" in line and "unexpected" in line for line in found), found
    assert "inbox: callbacks not applied: {'pending': 1}" in found
    assert len(found) == 4, found


def test_the_same_turns_filed_under_the_other_app_are_a_difference() -> None:
    """Two apps with the same room ids: transcripts swapped between the apps show on both sides."""
    expected = expect(conversations(2, APPS))
    observed = as_stored(expected)
    mine, theirs = (APPS[0].app_id, "chaos_room_1"), (APPS[1].app_id, "chaos_room_1")
    observed.turns[mine], observed.turns[theirs] = observed.turns[theirs], observed.turns[mine]
    found = differences(expected, observed)
    assert len(found) == 2 and all(line.startswith("transcript") for line in found), found


def test_out_of_order_turn_events_may_be_fewer_but_never_twice() -> None:
    """Reversed delivery: a Round announced once or not at all passes; announced twice does not."""
    convs = conversations(1)
    expected = expect(convs, at_most_once=OUT_OF_ORDER)
    observed = as_stored(expected)
    turn_events = [k for k in expected.events if k[0] == "turn.completed"]
    for lost in turn_events[2:]:
        del observed.events[lost]
    assert differences(expected, observed) == []
    observed.events[turn_events[0]] += 1
    assert differences(expected, observed) == [f"event: announced 2x {identity(turn_events[0])!r}"]
    observed.events[turn_events[0]] -= 1
    partial = (*turn_events[1][:5], "", *turn_events[1][6:])  # announced before its words came
    observed.events[turn_events[1]] -= 1
    observed.events[partial] += 1
    assert differences(expected, observed) == []
    observed.turns[convs[0].key][0] = ExpectedTurn(1, "user", "never said")
    assert len(differences(expected, observed)) == 1
