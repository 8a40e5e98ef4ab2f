"""Callbacks as ZEGO may deliver them: five times each, backwards, two apps at once. The stored
result and the app's events are exactly the expected ones.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.chaos import scenarios
from tests.chaos.scenarios import Lab

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

SESSIONS = 6


def test_a_storm_of_five_copies_of_every_callback_is_applied_once(lab: Lab) -> None:
    """Each callback five times at once (copies and re-signed retries): stored, applied and announced once."""
    scenarios.duplicate_storm(lab, sessions=SESSIONS, copies=5)


def test_callbacks_in_fully_reversed_order_leave_the_same_transcripts(lab: Lab) -> None:
    """All backwards, the deletion first: the same sessions and transcripts, no turn told twice."""
    scenarios.reversed_order(lab, sessions=SESSIONS)


def test_two_apps_interleaved_keep_their_sessions_apart(lab: Lab) -> None:
    """Two apps with the same instance and room ids, interleaved: each app gets exactly its own."""
    scenarios.two_apps_interleaved(lab, sessions=SESSIONS)


def test_an_agent_whose_deletion_came_first_is_still_announced_as_live(lab: Lab) -> None:
    """The deletion callback overtakes the rest: the app still hears that its agent was live, once."""
    # The tables match within seconds; only the event never comes, so do not wait the full minute.
    scenarios.deletion_before_creation(dataclasses.replace(lab, converge_timeout=20.0))
