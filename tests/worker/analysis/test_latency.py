"""Per-round response times: how long a user waited for the agent after they stopped speaking."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session as DbSession

from tests.factories import Signer, apply_pending, ingest
from tests.seeded import SEEDS, seed
from worker.analysis import catalog, latency
from worker.settings import Settings


def test_each_seeded_round_has_the_response_time_the_conversation_had(
    db: DbSession, settings: Settings
) -> None:
    """Every Round of every seeded session: SPEAK_END, first output, and the wait between them."""
    seed(db, settings)
    for s in SEEDS:
        got = latency.round_latencies(db, session_id=s.session_id)
        expected = []
        for i, r in enumerate(s.rounds):
            end = s.start + dt.timedelta(milliseconds=2000 + i * s.round_gap_ms + r.speech_ms)
            out = end + dt.timedelta(milliseconds=r.response_ms)
            expected.append((s.session_id, s.key, s.round_number(i), end, out, float(r.response_ms)))
        assert [
            (
                g.session_id,
                g.agent_instance_id,
                g.round,
                g.user_speak_end_at,
                g.first_output_at,
                g.response_ms,
            )
            for g in got
        ] == expected


def test_a_filter_selects_the_rounds_of_the_sessions_it_finds(db: DbSession, settings: Settings) -> None:
    """Rounds for a filter (digital human sessions) come from those sessions only, all their Rounds."""
    seed(db, settings)
    f = catalog.SessionFilter(provider="zego_digital_human")
    got = latency.round_latencies(db, sessions=catalog.filtered(f))
    wanted = [s for s in SEEDS if s.provider == "zego_digital_human"]
    assert sorted((g.session_id, g.round, g.response_ms) for g in got) == sorted(
        (s.session_id, s.round_number(i), float(r.response_ms))
        for s in wanted
        for i, r in enumerate(s.rounds)
    )
    assert len(latency.round_latencies(db)) == sum(len(s.rounds) for s in SEEDS)


def test_speaking_status_counts_as_output_and_rounds_missing_a_side_have_no_time(
    db: DbSession, signer: Signer, settings: Settings
) -> None:
    """SPEAKING before any LLMResult is the first output; the last SPEAK_END counts; a greeting has no time."""
    base = 1_800_000_000_000

    def cb(offset: int, event: str, data: dict[str, object]) -> dict[str, object]:
        return signer.callback(event, data, timestamp=base + offset)

    ingest(
        db,
        [
            cb(0, "AgentInstanceCreated", {"CreatedTimestamp": base}),
            # Round 1: a greeting, the agent speaks first.
            cb(100, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": 1}),
            cb(150, "LLMResult", {"Round": 1, "Text": "Hello!"}),
            # Round 2: the user pauses, goes on, stops; the agent speaks before its text arrives.
            cb(1000, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_BEGIN", "Round": 2}),
            cb(1500, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 2}),
            cb(1800, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 2}),
            cb(2450, "AgentInstanceStatus", {"Status": "SPEAKING", "Round": 2}),
            cb(2600, "LLMResult", {"Round": 2, "Text": "Sure."}),
            # Round 3: the user spoke, the agent never answered.
            cb(4000, "UserSpeakAction", {"UserId": "u", "Action": "SPEAK_END", "Round": 3}),
        ],
    )
    apply_pending(db, settings)
    got = {g.round: g for g in latency.round_latencies(db)}
    assert sorted(got) == [1, 2, 3]
    assert got[1].response_ms is None and got[1].user_speak_end_at is None
    assert got[1].first_output_at == dt.datetime.fromtimestamp((base + 100) / 1000, dt.UTC)
    assert got[2].response_ms == 650.0
    assert got[2].user_speak_end_at == dt.datetime.fromtimestamp((base + 1800) / 1000, dt.UTC)
    assert got[3].response_ms is None and got[3].first_output_at is None
