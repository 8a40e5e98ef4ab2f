"""bench/billed_day's day and policy files: the same day for every run, and files roomwarden accepts."""

from __future__ import annotations

import pytest

from bench.billed_day_plan import DAY_S, KINDS, MIX, POLICIES, day, peak_arrivals_per_hour, policy, window
from worker.policies.config import parse

SCALE = 288.0


def test_one_seed_plays_one_day_with_the_mix_and_peaks() -> None:
    """Every run of an invocation meets the same visitors, in the planned shares, busiest at the peaks."""
    visits = day(1000, seed=7)
    assert visits == day(1000, seed=7) and visits != day(1000, seed=8)
    assert {kind: sum(v.kind == kind for v in visits) for kind in KINDS} == {
        kind: round(share * 1000) for kind, share in MIX.items()
    }
    arrivals = [v.arrival_s for v in visits]
    assert arrivals == sorted(arrivals) and arrivals[0] >= 0 and arrivals[-1] < DAY_S
    # Busier at the peaks than the mean hour, but not the old plan's two-fold crush.
    assert 1.4 * 1000 / 24 < peak_arrivals_per_hour(visits) < 2 * 1000 / 24
    assert all(v.fault_code in (1201, 1203, 1204, 1205, 1206, 1207) for v in visits if v.kind == "rtc_fault")
    assert {v.lose_callback for v in visits if v.kind == "dropped_deletion"} == {True, False}


def test_a_window_plays_the_same_visitors_of_that_part_of_the_day() -> None:
    """The evening peak of the day: its visitors, unchanged but for a clock that starts with the window."""
    visits = day(1000, seed=7)
    evening = window(visits, 17 * 3600.0, 21 * 3600.0)
    arriving = [v for v in visits if 17 * 3600.0 <= v.arrival_s < 21 * 3600.0]
    assert [v.n for v in evening] == [v.n for v in arriving] and 0 < len(evening) < len(visits)
    assert [v.arrival_s + 17 * 3600.0 for v in evening] == pytest.approx([v.arrival_s for v in arriving])
    assert [v.gaps_s for v in evening] == [v.gaps_s for v in arriving]


@pytest.mark.parametrize("name", POLICIES)
def test_each_run_s_policy_file_is_one_roomwarden_accepts_at_the_time_scale(name: str) -> None:
    """The files parse with roomwarden's own parser; every duration is divided by the scale."""
    run = policy(name, SCALE)
    book = parse(run.toml, source=name)
    defaults = book.defaults
    assert defaults.reconcile.silent_seconds == pytest.approx((60 if name == "aggressive" else 120) / SCALE)
    assert defaults.quota.queue_timeout_seconds == pytest.approx(600 / SCALE)
    assert defaults.idle.after_seconds == pytest.approx((60 if name == "aggressive" else 600) / SCALE)
    dry = {section: defaults.dry(section) for section in ("on_deleted", "idle", "max_length", "quota")}
    assert dry == dict.fromkeys(dry, name == "native")
    assert defaults.dry("reconcile") is False  # it only mends roomwarden's record of ZEGO's deletions


def test_an_unknown_policy_name_is_refused() -> None:
    """A typo in --policies stops the run before anything starts."""
    with pytest.raises(ValueError, match="unknown policy"):
        policy("agressive", SCALE)
