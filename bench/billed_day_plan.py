"""The day a billed-day run plays: who arrives when, what they do, and the policies it compares.

Everything here is emulated (vendor) seconds and a seeded random generator, so that the three
runs of one invocation (native, default, aggressive) play the very same day, and a run can be
repeated. ``bench/billed_day.py`` turns it into real time with the run's time scale.

The arrivals: three quarters spread evenly over the day, an eighth around late morning and an
eighth around early evening (normal curves, 90 minutes wide). A realistic day: the quota is
pressed at the peaks only. With 1,000 sessions, roomwarden's policies keep the offered load
under ZEGO's 10 concurrent voice instances most of the day, above it for minutes at the peaks
(the line absorbs those); without policies (ZEGO's rules alone) silent users' agents linger for
half an hour and the peaks ask for more than 10 for about an hour. (The first plan put half the
day in two 75-minute peaks: more than 10 for hours even with the policies, 600+ sessions in line.)

Users wait ``PATIENCE_S`` in the line, as a caller on hold would, then hang up: the session is
lost to quota. With first-come first-served slots and no latency, the default policy's line
would be at most about 140 s long on this day (seed 20261204), the aggressive one's about 10 s.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from dataclasses import dataclass

DAY_S = 86_400.0
KINDS = ("normal", "leaves", "quiet", "rtc_fault", "dropped_deletion")
MIX = {"normal": 0.40, "leaves": 0.20, "quiet": 0.15, "rtc_fault": 0.15, "dropped_deletion": 0.10}
RTC_CODES = (1201, 1203, 1204, 1205, 1206, 1207)
PEAKS = ((11.0 * 3600, 0.125), (19.0 * 3600, 0.125))  # (centre, share of the day's arrivals)
PEAK_WIDTH_S = 90 * 60.0
GAP_S = (10.0, 40.0)  # silence before each utterance
PATIENCE_S = 180.0  # a user in the line hangs up after three minutes (roomwarden's gives up at 600)
RECOVERY_PATIENCE_S = 120.0  # and this long for a new one after theirs dropped out


@dataclass(frozen=True)
class Visit:
    """One end user's session; times are emulated seconds."""

    n: int
    kind: str
    arrival_s: float
    gaps_s: tuple[float, ...]  # the silence before each utterance
    linger_s: float = 0.0  # leaves, dropped_deletion: after the last utterance, before leaving
    quiet_s: float = 0.0  # quiet: silent in the room this long, then the app dies (heartbeat lost)
    fault_after: int = 0  # rtc_fault: the agent drops out after this many utterances
    fault_code: int = 0
    lose_callback: bool = False  # dropped_deletion: ZEGO's deletion callback is lost (else the app's DELETE)

    @property
    def room_id(self) -> str:
        return f"room_{self.n}"

    @property
    def user_id(self) -> str:
        return f"user_{self.n}"


def _arrival(rng: random.Random, span_s: float) -> float:
    pick = rng.random()
    for centre, share in PEAKS:
        if pick < share:
            scale = span_s / DAY_S
            value = rng.gauss(centre * scale, PEAK_WIDTH_S * scale)
            return min(max(value, 0.0), span_s - 1.0)
        pick -= share
    return rng.uniform(0.0, span_s - 1.0)


def _gaps(rng: random.Random, talk_s: float) -> tuple[float, ...]:
    gaps: list[float] = []
    while sum(gaps) < talk_s:
        gaps.append(rng.uniform(*GAP_S))
    return tuple(gaps)


def _visit(rng: random.Random, n: int, kind: str, arrival_s: float) -> Visit:
    if kind == "normal":
        return Visit(n, kind, arrival_s, _gaps(rng, rng.uniform(120, 360)))
    if kind == "leaves":
        return Visit(n, kind, arrival_s, _gaps(rng, rng.uniform(60, 300)), linger_s=rng.uniform(5, 30))
    if kind == "quiet":
        return Visit(n, kind, arrival_s, _gaps(rng, rng.uniform(60, 180)), quiet_s=rng.uniform(600, 1800))
    if kind == "rtc_fault":
        gaps = _gaps(rng, rng.uniform(120, 360))
        return Visit(
            n, kind, arrival_s, gaps, fault_after=max(1, len(gaps) // 2), fault_code=rng.choice(RTC_CODES)
        )
    return Visit(
        n,
        kind,
        arrival_s,
        _gaps(rng, rng.uniform(60, 300)),
        linger_s=rng.uniform(5, 30),
        lose_callback=n % 2 == 0,
    )


def day(sessions: int, *, seed: int, span_s: float = DAY_S) -> list[Visit]:
    """``sessions`` visits over ``span_s`` emulated seconds, in order of arrival, kinds in ``MIX`` shares."""
    rng = random.Random(seed)
    counts = {kind: math.floor(share * sessions) for kind, share in MIX.items()}
    counts["normal"] += sessions - sum(counts.values())
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    arrivals = sorted(_arrival(rng, span_s) for _ in range(sessions))
    return [_visit(rng, n, kind, at) for n, (kind, at) in enumerate(zip(kinds, arrivals, strict=True))]


def window(visits: list[Visit], start_s: float, end_s: float) -> list[Visit]:
    """The visits arriving in [start_s, end_s) of the day, their clock starting at ``start_s``.

    They keep their numbers (and so their rooms and users): a window of the same day is the same
    people whatever else is played.
    """
    chosen = [v for v in visits if start_s <= v.arrival_s < end_s]
    return [dataclasses.replace(v, arrival_s=v.arrival_s - start_s) for v in chosen]


def peak_arrivals_per_hour(visits: list[Visit]) -> int:
    """The busiest hour's arrivals (sliding by minutes): the load the quota meets at its worst."""
    minutes = Counter(int(v.arrival_s // 60) for v in visits)
    last = max(minutes, default=0)
    return max((sum(minutes[m] for m in range(start, start + 60)) for start in range(last + 1)), default=0)


# --------------------------------------------------------------------------- policies

# Every duration of the policy file, at ZEGO's scale (emulated seconds): the defaults of
# worker/policies/config.py. A run divides each by its time scale, since roomwarden's clock is real.
DEFAULT_DURATIONS: dict[str, dict[str, float]] = {
    "on_deleted": {
        "wait_seconds": 300,
        "wait_poll_seconds": 5,
        "window_seconds": 600,
        "backoff_seconds": 2,
        "backoff_max_seconds": 60,
    },
    "idle": {"after_seconds": 600, "warning_seconds": 15},
    "max_length": {"seconds": 3600},
    "quota": {"queue_timeout_seconds": 600},
    "reconcile": {
        "silent_seconds": 120,
        "unconfirmed_seconds": 60,
        "recheck_seconds": 120,
        "max_backoff_seconds": 3600,
    },
}
AGGRESSIVE_DURATIONS: dict[str, dict[str, float]] = {
    "on_deleted": {"backoff_seconds": 1},
    "idle": {"after_seconds": 60},
    "max_length": {"seconds": 1800},
    "reconcile": {"silent_seconds": 60, "unconfirmed_seconds": 30, "recheck_seconds": 30},
}
AGGRESSIVE_CHOICES: dict[str, dict[str, str]] = {
    "on_deleted": {"user_absent": '"end"'},  # the agent is gone already: no CloseRoom to pay for
    "quota": {"when_full": '"recycle_idle"'},  # a full app hangs up on its longest-silent user
    # Sent to ZEGO as MaxIdleTime: counted on ZEGO's (the emulator's) clock, so never scaled.
    "idle": {"user_absent_seconds": "60"},
}
POLICIES = ("native", "default", "aggressive")
NATIVE_DRY = ("on_deleted", "on_exception", "idle", "max_length", "quota")


@dataclass(frozen=True)
class PolicyRun:
    name: str
    toml: str
    idle_after_s: float  # emulated; 0 = off
    description: str


def policy(name: str, scale: float) -> PolicyRun:
    """The run's policy file, its durations divided by ``scale``."""
    durations = {section: dict(values) for section, values in DEFAULT_DURATIONS.items()}
    choices: dict[str, dict[str, str]] = {}
    if name == "native":
        # Decide and record, never call ZEGO: only its own rules end agents. Reconciliation stays
        # on: it only corrects roomwarden's record of agents ZEGO has already deleted (a lost
        # deletion callback would otherwise hold one of roomwarden's quota slots for good).
        choices = {section: {"dry_run": "true"} for section in NATIVE_DRY}
        description = (
            "policies dry-run but reconcile: ZEGO's own rules end agents (roomwarden still queues at quota)"
        )
    elif name == "aggressive":
        for section, values in AGGRESSIVE_DURATIONS.items():
            durations[section].update(values)
        choices = AGGRESSIVE_CHOICES
        description = "idle 60 s, MaxIdleTime 60 s, user_absent end, recycle_idle, reconcile after 60 s"
    elif name == "default":
        description = "worker/policies/config.py defaults (idle 600 s, user_absent close_room)"
    else:
        raise ValueError(f"unknown policy {name!r}: one of {POLICIES}")
    lines = []
    for section in dict.fromkeys([*durations, *choices]):
        lines.append(f"[defaults.{section}]")
        lines += [f"{key} = {value / scale!r}" for key, value in durations.get(section, {}).items()]
        lines += [f"{key} = {value}" for key, value in choices.get(section, {}).items()]
        lines.append("")
    idle = durations["idle"]["after_seconds"] if name != "native" else 0.0
    return PolicyRun(name, "\n".join(lines), idle, description)
