"""Finding sessions as an analyst does: every filter, sorting, keyset pages, summaries, detail.

Expectations come from the seed plan (``tests/seeded.py``), never from the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session as DbSession

from tests.seeded import DAY, OTHER_APP_ID, SEEDS, Seed, seed
from worker.analysis import catalog, detail, summary
from worker.analysis.catalog import FilterError, SessionFilter
from worker.models import Session
from worker.settings import Settings

# What each ZEGO deletion code means to an analyst (ZEGO's documentation, not roomwarden's table).
END_REASON = {0: "deleted", 1202: "user_absent", 1205: "disconnected"}


@pytest.fixture
def seeded(db: DbSession, settings: Settings) -> DbSession:
    seed(db, settings)
    return db


def newest_first(seeds: list[Seed]) -> list[str]:
    return [s.session_id for s in sorted(seeds, key=lambda s: (s.start, s.session_id), reverse=True)]


def everything(db: DbSession, f: SessionFilter, **options: Any) -> list[dict[str, Any]]:
    """Every page of a listing, checking on the way that each page but the last is full."""
    limit = options.pop("limit", 500)
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = catalog.list_sessions(db, f, limit=limit, cursor=cursor, **options)
        found += page.sessions
        if page.next_cursor is None:
            return found
        assert len(page.sessions) == limit
        cursor = page.next_cursor


FILTERS: list[tuple[dict[str, str], Callable[[Seed], bool]]] = [
    ({"since": "2026-11-17"}, lambda s: s.start >= DAY + dt.timedelta(days=1)),
    ({"until": "2026-11-17T11:00:00Z"}, lambda s: s.start < DAY + dt.timedelta(days=1, hours=11)),
    (
        {"since": "2026-11-17T11:00:00+00:00", "until": "2026-11-18T12:00:00"},
        lambda s: DAY + dt.timedelta(days=1, hours=11) <= s.start < DAY + dt.timedelta(days=2, hours=12),
    ),
    # A zone other than UTC: 16:00 in Shanghai is 08:00 UTC.
    ({"since": "2026-11-18T16:00:00+08:00"}, lambda s: s.start >= DAY + dt.timedelta(days=2, hours=8)),
    ({"app_id": str(OTHER_APP_ID)}, lambda s: s.app_id == OTHER_APP_ID),
    ({"room_id": "room-hotel-4"}, lambda s: s.room_id == "room-hotel-4"),
    ({"user_id": "u-amy"}, lambda s: s.user_id == "u-amy"),
    ({"agent_id": "support-bot"}, lambda s: s.agent_id == "support-bot"),
    ({"template": "support-zh"}, lambda s: s.template == "support-zh"),
    # Sessions only heard of through callbacks have no provider: ZEGO is the only one that calls back.
    ({"provider": "zego"}, lambda s: s.provider in ("zego", None)),
    ({"provider": "zego_digital_human"}, lambda s: s.provider == "zego_digital_human"),
    ({"provider": "coze"}, lambda s: False),
    ({"state": "active"}, lambda s: s.delete_code is None),
    ({"state": "ended"}, lambda s: s.delete_code is not None),
    (
        {"end_reason": "user_absent"},
        lambda s: s.delete_code is not None and END_REASON[s.delete_code] == "user_absent",
    ),
    ({"end_reason": "disconnected"}, lambda s: s.delete_code == 1205),
    ({"has_interruptions": "true"}, lambda s: s.interrupted),
    ({"has_interruptions": "no"}, lambda s: not s.interrupted),
    ({"has_exceptions": "1"}, lambda s: bool(s.exceptions)),
    ({"has_exceptions": "false"}, lambda s: not s.exceptions),
    ({"min_turns": "6"}, lambda s: s.turns >= 6),
    ({"min_turns": "0"}, lambda s: True),
    ({"agent_instance_id": "inst-en-short"}, lambda s: s.key == "inst-en-short"),
    ({"agent_instance_id": "no-such-instance"}, lambda s: False),
    (
        {"agent_id": "support-bot", "has_exceptions": "true", "state": "ended"},
        lambda s: s.agent_id == "support-bot" and bool(s.exceptions) and s.delete_code is not None,
    ),
]


def test_each_filter_finds_exactly_the_matching_sessions(seeded: DbSession) -> None:
    """Each filter lists the sessions it describes, newest first, and no others."""
    wrong = {}
    for params, wanted in FILTERS:
        expected = newest_first([s for s in SEEDS if wanted(s)])
        found = [s["id"] for s in everything(seeded, SessionFilter.from_query(params))]
        if found != expected:
            wrong[str(params)] = (found, expected)
    assert wrong == {}


def test_filters_that_select_something_are_not_vacuous() -> None:
    """Each filter above but the deliberately empty ones finds some seeds and leaves out others."""
    for params, wanted in FILTERS:
        matching = sum(wanted(s) for s in SEEDS)
        if params.get("provider") == "coze" or params.get("agent_instance_id") == "no-such-instance":
            assert matching == 0
        elif params.get("min_turns") == "0":
            assert matching == len(SEEDS)
        else:
            assert 0 < matching < len(SEEDS), params


def test_summaries_say_what_the_seed_did(seeded: DbSession) -> None:
    """Each summary's times, duration and counts are those of the conversation that was held."""
    found = {s["id"]: s for s in everything(seeded, SessionFilter())}
    assert set(found) == {s.session_id for s in SEEDS}
    for s in SEEDS:
        summary = found[s.session_id]
        assert summary["app_id"] == s.app_id
        assert (summary["room_id"], summary["user_id"], summary["agent_id"]) == (
            s.room_id,
            s.user_id,
            s.agent_id,
        )
        assert (summary["provider"], summary["template"]) == (s.provider, s.template)
        assert dt.datetime.fromisoformat(summary["started_at"]) == s.started_at
        if s.ended_at is None:
            assert summary["ended_at"] is None
            assert summary["duration_seconds"] is None
            assert summary["state"] == "active"
            assert summary["end_reason"] is None
        else:
            assert dt.datetime.fromisoformat(summary["ended_at"]) == s.ended_at
            assert summary["duration_seconds"] == pytest.approx(s.duration_seconds)
            assert summary["state"] == "ended"
            assert (summary["end_code"], summary["end_reason"]) == (s.delete_code, END_REASON[s.delete_code])
        assert summary["turns"] == s.turns
        assert summary["user_turns"] == summary["agent_turns"] == len(s.rounds)
        assert summary["interruptions"] == sum(r.played is not None for r in s.rounds)
        assert summary["exceptions"] == len(s.exceptions)
        assert (summary["instances"], summary["recreations"]) == (1, 0)
        assert summary["flag"] is None


def test_summaries_keep_the_order_asked_and_skip_unknown_ids(seeded: DbSession) -> None:
    """summaries() answers in the order of the ids given, once each, without unknown ones."""
    ids = [SEEDS[3].session_id, "nope", SEEDS[0].session_id, SEEDS[3].session_id]
    assert [s["id"] for s in summary.summaries(seeded, ids)] == [SEEDS[3].session_id, SEEDS[0].session_id]
    assert summary.summaries(seeded, []) == []


def test_summaries_cost_the_same_queries_for_one_session_or_all(seeded: DbSession) -> None:
    """No query per session: summarising ten sessions takes as many statements as summarising one."""
    statements: list[str] = []
    connection = seeded.connection()

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(connection, "before_cursor_execute", count)
    try:
        summary.summaries(seeded, [SEEDS[0].session_id])
        one = len(statements)
        statements.clear()
        summary.summaries(seeded, [s.session_id for s in SEEDS])
        assert len(statements) == one <= 4
    finally:
        event.remove(connection, "before_cursor_execute", count)


def by_duration(order: str) -> list[str]:
    """Ended sessions by duration then id, in the order asked; live ones (no duration) last."""
    descending = order == "desc"
    ended = sorted(
        (s for s in SEEDS if s.duration_seconds is not None),
        key=lambda s: (s.duration_seconds, s.session_id),
        reverse=descending,
    )
    live = sorted((s.session_id for s in SEEDS if s.duration_seconds is None), reverse=descending)
    return [s.session_id for s in ended] + live


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sorting_by_duration(seeded: DbSession, order: str) -> None:
    """Longest or shortest first, ties by id, the live session (no duration yet) last either way."""
    assert len({s.duration_seconds for s in SEEDS}) < len(SEEDS)  # the seed has ties to break
    found = everything(seeded, SessionFilter(), sort="duration", order=order)
    assert [s["id"] for s in found] == by_duration(order)


def test_sorting_oldest_first(seeded: DbSession) -> None:
    """order=asc lists by start, oldest first."""
    found = everything(seeded, SessionFilter(), order="asc")
    assert [s["id"] for s in found] == list(reversed(newest_first(SEEDS)))


def test_pages_cover_every_session_once(seeded: DbSession) -> None:
    """Paging with next_cursor visits every session once, in order: full pages, then the rest."""
    for sort, order in (
        ("started_at", "desc"),
        ("started_at", "asc"),
        ("duration", "asc"),
        ("duration", "desc"),
    ):
        expected = by_duration(order) if sort == "duration" else newest_first(SEEDS)
        if sort == "started_at" and order == "asc":
            expected.reverse()
        for limit in (1, 3, 5, 9, 10, 11):
            pages: list[list[str]] = []
            cursor = None
            while True:
                page = catalog.list_sessions(
                    seeded, SessionFilter(), sort=sort, order=order, limit=limit, cursor=cursor
                )
                pages.append([s["id"] for s in page.sessions])
                cursor = page.next_cursor
                if cursor is None:
                    break
                assert len(pages) <= len(SEEDS)
            assert [i for p in pages for i in p] == expected, (sort, order, limit)
            sizes = [min(limit, len(SEEDS) - k) for k in range(0, len(SEEDS), limit)]
            assert [len(p) for p in pages] == sizes, (sort, order, limit)


def test_pages_with_a_filter(seeded: DbSession) -> None:
    """The cursor pages within the filter: two at a time through the support bot's sessions."""
    f = SessionFilter(agent_id="support-bot")
    found = everything(seeded, f, limit=2, sort="duration", order="desc")
    support = [s.session_id for s in SEEDS if s.agent_id == "support-bot"]
    assert [s["id"] for s in found] == [i for i in by_duration("desc") if i in support]


def test_a_session_arriving_while_paging_shifts_nothing(seeded: DbSession, settings: Settings) -> None:
    """A new session between two pages neither repeats nor skips a session on the later pages."""
    first = catalog.list_sessions(seeded, SessionFilter(), limit=4)
    newer = dataclasses.replace(SEEDS[1], key="inst-en-newer", start=DAY + dt.timedelta(days=3))
    older = dataclasses.replace(SEEDS[1], key="inst-en-older", start=DAY - dt.timedelta(days=1))
    seed(seeded, settings, [newer, older])
    rest: list[dict[str, Any]] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = catalog.list_sessions(seeded, SessionFilter(), limit=4, cursor=cursor)
        rest += page.sessions
        cursor = page.next_cursor
    listed = [s["id"] for s in first.sessions + rest]
    # The newer one belongs before the first page (already read); the older one at the very end.
    assert listed == [*newest_first(SEEDS), older.session_id]


def test_sorting_by_duration_on_the_database_is_exact(seeded: DbSession) -> None:
    """The database's duration (whole ms) agrees with the seed's for every ended session."""
    from sqlalchemy import select

    rows = {i: ms for i, ms in seeded.execute(select(Session.id, catalog.session_duration_ms))}
    assert rows == {s.session_id: s.length_ms if s.delete_code is not None else None for s in SEEDS}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"sort": "length"}, "sort"),
        ({"order": "up"}, "order"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": "bm90IGpzb24"}, "cursor"),  # base64 of "not json"
        ({"cursor": "WzEsMiwzXQ"}, "cursor"),  # [1,2,3]
    ],
)
def test_bad_listing_options_name_their_field(seeded: DbSession, options: dict[str, Any], field: str) -> None:
    """A bad sort, order, limit or cursor is a FilterError naming it, not a crash or a guess."""
    with pytest.raises(FilterError) as raised:
        catalog.list_sessions(seeded, SessionFilter(), **options)
    assert raised.value.field == field


def test_a_cursor_only_works_for_the_listing_that_gave_it(seeded: DbSession) -> None:
    """A cursor from a listing by start is refused by a listing by duration or the other way round."""
    by_start = catalog.list_sessions(seeded, SessionFilter(), limit=2)
    by_length = catalog.list_sessions(seeded, SessionFilter(), sort="duration", limit=2)
    assert by_start.next_cursor is not None and by_length.next_cursor is not None
    for options in (
        {"sort": "duration", "cursor": by_start.next_cursor},
        {"order": "asc", "cursor": by_start.next_cursor},
        {"cursor": by_length.next_cursor},
    ):
        with pytest.raises(FilterError) as raised:
            catalog.list_sessions(seeded, SessionFilter(), **options)
        assert raised.value.field == "cursor"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"app_id": "abc"}, "app_id"),
        ({"min_turns": "1.5"}, "min_turns"),
        ({"has_interruptions": "maybe"}, "has_interruptions"),
        ({"has_exceptions": "2"}, "has_exceptions"),
        ({"provider": "openai"}, "provider"),
    ],
)
def test_bad_filters_name_their_field(params: dict[str, str], field: str) -> None:
    """A filter value that cannot be understood is refused with the parameter's name."""
    with pytest.raises(FilterError) as raised:
        SessionFilter.from_query(params)
    assert raised.value.field == field


def speak_end(s: Seed, i: int) -> dt.datetime:
    r = s.rounds[i]
    return s.start + dt.timedelta(milliseconds=2000 + i * s.round_gap_ms + r.speech_ms)


def test_detail_adds_summary_timeline_and_round_latency(seeded: DbSession) -> None:
    """A session's detail shows its summary, its events in time order, and each round's wait."""
    s = next(x for x in SEEDS if x.key == "inst-zh-tts-errors")
    session = seeded.get(Session, s.session_id)
    assert session is not None
    body = detail.session_detail(seeded, session)
    assert body["id"] == s.session_id and body["instances"][0]["agent_instance_id"] == s.key
    assert body["summary"] == summary.summaries(seeded, [s.session_id])[0]
    assert body["summary"]["exceptions"] == 2

    timeline = body["timeline"]
    times = [dt.datetime.fromisoformat(e["at"]) for e in timeline]
    assert times == sorted(times)
    assert timeline[0]["event"] == "AgentInstanceCreated" and times[0] == s.start
    assert timeline[-1]["event"] == "AgentInstanceDeleted" and timeline[-1]["detail"] == {"code": 1205}
    assert times[-1] == s.ended_at
    assert {e["agent_instance_id"] for e in timeline} == {s.key}
    ends = [e for e in timeline if e["event"] == "UserSpeakAction" and e["detail"]["Action"] == "SPEAK_END"]
    assert [(e["round"], dt.datetime.fromisoformat(e["at"])) for e in ends] == [
        (s.round_number(i), speak_end(s, i)) for i in range(len(s.rounds))
    ]
    errors = [e for e in timeline if e["event"] == "Exception"]
    assert [(e["round"], e["detail"]["code"], e["detail"]["message"]) for e in errors] == [
        (s.round_number(i), *r.exception) for i, r in enumerate(s.rounds) if r.exception is not None
    ]

    rounds = body["rounds"]
    assert [(r["agent_instance_id"], r["round"]) for r in rounds] == [
        (s.key, s.round_number(i)) for i in range(len(s.rounds))
    ]
    assert [r["response_ms"] for r in rounds] == [pytest.approx(r.response_ms) for r in s.rounds]
    assert [dt.datetime.fromisoformat(r["user_speak_end_at"]) for r in rounds] == [
        speak_end(s, i) for i in range(len(s.rounds))
    ]


def test_detail_of_a_live_session(seeded: DbSession) -> None:
    """A live session has no deletion in its timeline and no duration, yet its rounds are timed."""
    s = next(x for x in SEEDS if x.delete_code is None)
    session = seeded.get(Session, s.session_id)
    assert session is not None
    body = detail.session_detail(seeded, session)
    assert body["summary"]["duration_seconds"] is None
    assert "AgentInstanceDeleted" not in {e["event"] for e in body["timeline"]}
    assert [r["response_ms"] for r in body["rounds"]] == [pytest.approx(r.response_ms) for r in s.rounds]


def test_time_with_no_user_and_presence_read_back_as_the_room_callbacks_left_them(seeded: DbSession) -> None:
    """A user who left the room: 25 s billed without them, since when and why; their summary says
    the same figure. A session whose user no room callback ever mentioned reads null, not 0."""
    left, unheard = (next(x for x in SEEDS if x.key == key) for key in ("inst-zh-absent", "inst-en-weather"))
    session = seeded.get(Session, left.session_id)
    assert session is not None
    out_since = left.start + dt.timedelta(seconds=3)
    session.user_present, session.user_absent_since, session.user_logout_reason = False, out_since, "1"
    session.no_user_seconds = 25.0
    seeded.flush()

    found = {s["id"]: s for s in summary.summaries(seeded, [left.session_id, unheard.session_id])}
    assert found[left.session_id]["no_user_seconds"] == 25.0
    assert found[unheard.session_id]["no_user_seconds"] is None

    body = detail.session_detail(seeded, session)
    assert body["no_user_seconds"] == 25.0 == body["summary"]["no_user_seconds"]
    assert body["presence"] == {
        "user_present": False,
        "absent_since": out_since.isoformat(),
        "logout_reason": "1",
    }

    other = seeded.get(Session, unheard.session_id)
    assert other is not None
    body = detail.session_detail(seeded, other)
    assert body["no_user_seconds"] is None
    assert body["presence"] == {"user_present": None, "absent_since": None, "logout_reason": None}
