"""ZEGO's own books: agent-seconds billed per instance, who was in the room, and what was refused.

The vendor bills an agent instance from its creation to its deletion, whatever the app believes
about it; a cost-control bench (``bench/billed_day``) needs that ground truth, and only the
vendor has it. The ledger keeps, per instance, when it was created and deleted, and per room
and end user, when the person was there; "billed while no user was in the room" is the billed
time minus its overlap with the creating user's presence in the instance's room.

Times are vendor seconds on ``Clock.vendor_now`` (monotonic, scaled), so a time-scaled run
reports what ZEGO would have billed at full length, and the wall clock stepping cannot bend them.

Presence is the person's, not the room's member list: joining starts it, leaving ends it, and
so does losing the heartbeat (the person is gone, although ZEGO keeps the user in the room for
100 s more before dropping them, vendor facts 3). Agents logging in are not end users and are
not recorded; an end user kicked out (CloseRoom, KickoutUser, an agent taking their id) has left.

Refusals are counted per API, action and code, so that a bench can count the rate-limit answers
(410000010 by default, RTC 206/207) and the quota answers (410000011, 410001031) it caused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emulator.clock import Clock

Interval = tuple[float, float]


@dataclass
class BilledInstance:
    app_id: int
    agent_instance_id: str
    room_id: str
    user_id: str
    digital_human: bool
    created_s: float
    live: bool = False  # a live digital human (no user: its NoUserS is all of its time)
    deleted_s: float | None = None
    deleted_code: int | None = None


@dataclass
class Presence:
    """One end user's visits to one room: closed intervals, plus the one still open."""

    visits: list[Interval] = field(default_factory=list)
    since: float | None = None

    def intervals(self, now: float) -> list[Interval]:
        return [*self.visits, (self.since, now)] if self.since is not None else list(self.visits)


def overlap(span: Interval, intervals: list[Interval]) -> float:
    """Seconds of ``span`` covered by ``intervals`` (which do not overlap each other)."""
    start, end = span
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in intervals)


class Ledger:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._instances: dict[str, BilledInstance] = {}
        self._presence: dict[tuple[str, str], Presence] = {}
        self.refusals: Counter[tuple[str, str, int]] = Counter()

    # --- what the world tells it ---------------------------------------------------------------

    def agent_started(
        self,
        app_id: int,
        instance_id: str,
        room_id: str,
        user_id: str,
        *,
        digital_human: bool,
        live: bool = False,
    ) -> None:
        self._instances[instance_id] = BilledInstance(
            app_id, instance_id, room_id, user_id, digital_human, self._clock.vendor_now(), live
        )

    def agent_stopped(self, instance_id: str, code: int) -> None:
        billed = self._instances.get(instance_id)
        if billed is not None and billed.deleted_s is None:
            billed.deleted_s, billed.deleted_code = self._clock.vendor_now(), code

    def user_present(self, room_id: str, user_id: str) -> None:
        presence = self._presence.setdefault((room_id, user_id), Presence())
        if presence.since is None:
            presence.since = self._clock.vendor_now()

    def user_gone(self, room_id: str, user_id: str) -> None:
        presence = self._presence.get((room_id, user_id))
        if presence is not None and presence.since is not None:
            presence.visits.append((presence.since, self._clock.vendor_now()))
            presence.since = None

    def refused(self, api: str, action: str, code: int) -> None:
        self.refusals[(api, action, code)] += 1

    # --- what it reports -----------------------------------------------------------------------

    def running(self) -> int:
        return sum(billed.deleted_s is None for billed in self._instances.values())

    def report(self, room_id: str | None = None) -> dict[str, Any]:
        """Every instance (or one room's) with its billed, user-present and no-user vendor seconds."""
        now = self._clock.vendor_now()
        instances = []
        for billed in self._instances.values():
            if room_id is not None and billed.room_id != room_id:
                continue
            end = now if billed.deleted_s is None else billed.deleted_s
            presence = self._presence.get((billed.room_id, billed.user_id), Presence())
            present = overlap((billed.created_s, end), presence.intervals(now))
            instances.append(
                {
                    "AgentInstanceId": billed.agent_instance_id,
                    "AppId": billed.app_id,
                    "RoomId": billed.room_id,
                    "UserId": billed.user_id,
                    "DigitalHuman": billed.digital_human,
                    "Live": billed.live,
                    "CreatedS": billed.created_s,
                    "DeletedS": billed.deleted_s,
                    "DeletedCode": billed.deleted_code,
                    "Running": billed.deleted_s is None,
                    "BilledS": end - billed.created_s,
                    "UserPresentS": present,
                    "NoUserS": max(0.0, end - billed.created_s - present),
                }
            )
        visits = [
            {"RoomId": room, "UserId": user, "Visits": [list(v) for v in p.intervals(now)]}
            for (room, user), p in self._presence.items()
            if room_id is None or room == room_id
        ]
        refusals = [
            {"Api": api, "Action": action, "Code": code, "Count": count}
            for (api, action, code), count in sorted(self.refusals.items())
        ]
        return {
            "NowS": now,
            "TimeScale": self._clock.scale,
            "Running": self.running(),
            "Instances": instances,
            "Presence": visits,
            "Refusals": refusals,
        }
