"""Stats: the figures an analyst reads for a set of sessions, checked against the seeded conversations."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import Counter
from typing import Any

import pytest
from sqlalchemy.orm import Session as DbSession

from tests.seeded import OTHER_APP_ID, SEEDS, Seed, seed
from worker.analysis import catalog, stats
from worker.models import Session
from worker.settings import Settings

RATES = {"zego": 0.02, "zego_digital_human": 0.1}
# What the seeds' deletion codes and exception codes mean (vendor facts), written out here.
REASONS = {0: "deleted", 1202: "user_absent", 1205: "disconnected"}
FAMILIES = {2101: "asr", 2203: "llm", 2301: "tts"}


def percentiles(values: list[float]) -> dict[str, Any]:
    """p50/p90/p99 by linear interpolation (statistics' 'inclusive' method, numpy's default)."""
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None}
    if len(values) == 1:
        return {"count": 1, "p50": values[0], "p90": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"count": len(values), "p50": statistics.median(values), "p90": cuts[89], "p99": cuts[98]}


def expected(seeds: list[Seed]) -> dict[str, Any]:
    """Every figure, from the seed plan alone."""
    ended = [s for s in seeds if s.delete_code is not None]
    durations = [s.length_ms / 1000 for s in ended]
    rounds = [r for s in seeds for r in s.rounds]
    minutes: Counter[str] = Counter()
    for s in ended:
        minutes[s.provider or "zego"] += s.length_ms / 60000
    days: dict[dt.date, dict[str, Any]] = {}
    for s in sorted(seeds, key=lambda s: s.start):
        day = days.setdefault(s.start.date(), {"sessions": 0, "minutes": 0.0})
        day["sessions"] += 1
        if s.delete_code is not None:
            day["minutes"] += s.length_ms / 60000
    with_latency = [s.latency for s in ended if s.latency]
    by_provider = {p: m * RATES[p] for p, m in minutes.items()}
    return {
        "sessions": len(seeds),
        "ended_sessions": len(ended),
        "duration_seconds": {
            "total": sum(durations),
            "median": statistics.median(durations) if durations else None,
            "p90": percentiles(durations)["p90"],
        },
        # The seeds heard no room callback: unknown everywhere, which counts as nothing.
        "no_user_seconds": {"total": 0.0, "median": None, "p90": None, "sessions": 0},
        "turns": sum(s.turns for s in seeds),
        "user_turns": len(rounds),
        "agent_turns": len(rounds),
        "interrupted_turns": sum(r.played is not None for r in rounds),
        "interruption_rate": sum(r.played is not None for r in rounds) / len(rounds),
        "sessions_with_interruptions": sum(s.interrupted for s in seeds),
        "end_reasons": dict(Counter(REASONS[s.delete_code] for s in ended if s.delete_code is not None)),
        "deletion_codes": dict(Counter(str(s.delete_code) for s in ended)),
        "exceptions": dict(Counter(FAMILIES[code] for s in seeds for code, _ in s.exceptions)),
        "latency": {
            "llm_ttft_ms": percentiles([d["LLMTTFT"] for d in with_latency]),
            "tts_first_frame_ms": percentiles([d["TTSAudioFirstFrameTime"] for d in with_latency]),
            "total_cost_ms": percentiles([d["TotalCost"] for d in with_latency]),
            "response_ms": percentiles([float(r.response_ms) for r in rounds]),
        },
        "cost": {
            "currency": "EUR",
            "total": sum(by_provider.values()),
            "by_provider": by_provider,
            "rates": RATES,
            "unpriced_minutes": {},
        },
        "per_day": [{"date": d.isoformat(), **v} for d, v in sorted(days.items())],
    }


def close(got: Any, want: Any, path: str = "") -> None:
    """Equal, numbers up to float rounding; says where they differ."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys {got} != {want}"
        for key in want:
            close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, str):
        assert got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-3), (
            f"{path}: {got} != {want}"
        )
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


FILTERS = [
    ("everything", catalog.SessionFilter(), lambda s: True),
    ("other app", catalog.SessionFilter(app_id=OTHER_APP_ID), lambda s: s.app_id == OTHER_APP_ID),
    ("interrupted", catalog.SessionFilter(has_interruptions=True), lambda s: s.interrupted),
    (
        "from the 17th",
        catalog.SessionFilter(since=dt.datetime(2026, 11, 17, tzinfo=dt.UTC)),
        lambda s: s.start >= dt.datetime(2026, 11, 17, tzinfo=dt.UTC),
    ),
]


@pytest.mark.parametrize(("name", "f", "keep"), FILTERS, ids=[name for name, _, _ in FILTERS])
def test_stats_equal_the_figures_of_the_seeded_sessions(
    db: DbSession, settings: Settings, name: str, f: catalog.SessionFilter, keep: Any
) -> None:
    """Counts, durations, outcomes, interruptions, exceptions, latency percentiles, cost and days."""
    seed(db, settings)
    got = stats.compute(db, f, rates=RATES, currency="EUR")
    close(got, expected([s for s in SEEDS if keep(s)]))


def test_providers_without_a_rate_are_unpriced_not_free(db: DbSession, settings: Settings) -> None:
    """With a rate for ZEGO voice only, digital human minutes show as unpriced and cost nothing listed."""
    seed(db, settings)
    got = stats.compute(db, catalog.SessionFilter(), rates={"zego": 0.5}, currency="USD")
    human = sum(
        s.length_ms for s in SEEDS if s.provider == "zego_digital_human" and s.delete_code is not None
    )
    voice = sum(s.length_ms for s in SEEDS if s.provider in (None, "zego") and s.delete_code is not None)
    assert got["cost"]["by_provider"] == {"zego": pytest.approx(voice / 60000 * 0.5)}
    assert got["cost"]["total"] == pytest.approx(voice / 60000 * 0.5)
    assert got["cost"]["unpriced_minutes"] == {"zego_digital_human": pytest.approx(human / 60000, abs=1e-3)}


def test_no_sessions_gives_zeros_and_no_percentiles(db: DbSession, settings: Settings) -> None:
    """A filter that finds nothing answers with empty figures, not an error."""
    seed(db, settings)
    got = stats.compute(db, catalog.SessionFilter(room_id="no-such-room"), rates=RATES, currency="USD")
    assert got["sessions"] == 0 and got["turns"] == 0 and got["per_day"] == []
    assert got["interruption_rate"] is None
    assert got["latency"]["response_ms"] == {"count": 0, "p50": None, "p90": None, "p99": None}
    assert got["duration_seconds"] == {"total": 0, "median": None, "p90": None}
    assert got["no_user_seconds"] == {"total": 0, "median": None, "p90": None, "sessions": 0}


def test_time_with_no_user_counts_the_ended_sessions_where_it_is_known(
    db: DbSession, settings: Settings
) -> None:
    """Three ended sessions lost their user for 10, 25 and 60 s; a live one's 400 s still grows and
    one never heard of in a room callback is unknown: neither is in the total, median or count."""
    seed(db, settings)
    ended = [s for s in SEEDS if s.delete_code is not None and s.app_id != OTHER_APP_ID]
    live = next(s for s in SEEDS if s.delete_code is None)
    figures = {ended[0].session_id: 10.0, ended[1].session_id: 25.0, ended[2].session_id: 60.0}
    for session_id, seconds in {**figures, live.session_id: 400.0}.items():
        session = db.get(Session, session_id)
        assert session is not None
        session.no_user_seconds = seconds
    db.flush()

    got = stats.compute(db, catalog.SessionFilter(), rates=RATES, currency="EUR")["no_user_seconds"]
    assert got == {"total": 95.0, "median": 25.0, "p90": pytest.approx(53.0), "sessions": 3}

    only = catalog.SessionFilter(room_id=ended[1].room_id)
    assert stats.compute(db, only, rates=RATES, currency="EUR")["no_user_seconds"] == {
        "total": 25.0,
        "median": 25.0,
        "p90": 25.0,
        "sessions": 1,
    }
