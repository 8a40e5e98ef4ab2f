"""The scans read only the sessions they may act on (SQL prefilters), and decide as the pure checks do."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session as DbSession

from tests.factories import APP_ID
from tests.worker.policies.rows import live_session
from worker.db import utcnow
from worker.models import COZE_APP_ID, AgentInstance, Provider, Session, SessionState
from worker.policies import scans
from worker.policies.config import PolicyBook, parse

OTHER_APP = 7654321

# Thresholds that differ by app and by template, one of them off: each combination must get its own.
BOOK = parse(
    f"""
[defaults.idle]
after_seconds = 600
[defaults.max_length]
seconds = 3600
[defaults.reconcile]
silent_seconds = 120
unconfirmed_seconds = 60
recheck_seconds = 100
max_backoff_seconds = 1000
max_attempts = 8
[apps.{APP_ID}.idle]
after_seconds = 300
[apps.{APP_ID}.max_length]
seconds = 1800
[templates.quick.idle]
after_seconds = 60
[templates.quick.max_length]
seconds = 600
[templates.quick.reconcile]
silent_seconds = 600
[templates.never.idle]
after_seconds = 0
[templates.never.max_length]
seconds = 0
[templates.never.coze]
max_room_seconds = 600
"""
)
TEMPLATES = (None, "quick", "never", "not_in_the_file")


@contextmanager
def session_loads() -> Iterator[list[str]]:
    """The ids of the Session rows the ORM builds from query results while the block runs."""
    loaded: list[str] = []

    def on_load(target: Session, _context: object) -> None:
        loaded.append(target.id)

    event.listen(Session, "load", on_load)
    try:
        yield loaded
    finally:
        event.remove(Session, "load", on_load)


def on_app(db: DbSession, session: Session, agent: AgentInstance, app_id: int) -> None:
    session.app_id = agent.app_id = app_id
    db.flush()


def many_sessions(
    db: DbSession, ages: list[tuple[float, float | None]]
) -> list[tuple[Session, AgentInstance]]:
    """Every (started_ago, quiet_for) under both apps and every template, plus speech nobody hears."""
    made = []
    for app_id in (APP_ID, OTHER_APP):
        for template in TEMPLATES:
            for started_ago, quiet_for in ages:
                session, agent = live_session(
                    db, template=template, started_ago=started_ago, quiet_for=quiet_for
                )
                on_app(db, session, agent, app_id)
                made.append((session, agent))
            # Callback sessions without speech callbacks: silence proves nothing, never idle.
            made.append(
                live_session(db, origin="callback", template=template, quiet_for=None, started_ago=5000)
            )
    return made


def test_the_idle_scan_reads_only_sessions_past_their_own_threshold(db: DbSession) -> None:
    """Of 56 live sessions the idle scan reads only those its policy would recycle, and recycles exactly
    what idle_decision says, per app and template (60 s, 300 s, 600 s, off)."""
    made = many_sessions(db, [(1000, q) for q in (30, 90, 200, 400, 700)] + [(1000, None)])
    now = utcnow()
    expected = {
        s.id
        for s, i in made
        if scans.idle_decision(BOOK.for_session(s.app_id, s.template), s, i, now) is not None
    }
    assert 10 < len(expected) < len(made) / 2  # the case is not trivial either way
    db.expunge_all()
    with session_loads() as loaded:
        recorded = scans.recycle_idle(db, BOOK, now)
    assert {a.session_id for a in recorded} == expected
    assert sorted(loaded) == sorted(expected)


def test_the_idle_scan_reads_users_out_of_the_room_past_their_own_threshold(db: DbSession) -> None:
    """Sessions whose speech nobody hears, their user out of the room (RTC callbacks) for 30 s to
    700 s, or in it: the scan reads and recycles exactly those idle_decision calls idle."""
    now = utcnow()
    made = []
    for app_id in (APP_ID, OTHER_APP):
        for template in TEMPLATES:
            for out_for in (30, 90, 400, 700, None):
                session, agent = live_session(
                    db, origin="callback", template=template, quiet_for=None, started_ago=1000
                )
                session.user_present = out_for is None
                session.user_absent_since = now - dt.timedelta(seconds=out_for) if out_for else None
                on_app(db, session, agent, app_id)
                made.append((session, agent))
    expected = {
        s.id
        for s, i in made
        if scans.idle_decision(BOOK.for_session(s.app_id, s.template), s, i, now) is not None
    }
    assert 5 < len(expected) < len(made) / 2
    db.expunge_all()
    with session_loads() as loaded:
        recorded = scans.recycle_idle(db, BOOK, now)
    assert {a.session_id for a in recorded} == expected
    assert sorted(loaded) == sorted(expected)
    assert {a.trigger_key.split(":")[1] for a in recorded} == {"absent"}


def test_the_length_scan_reads_only_sessions_past_their_own_maximum(db: DbSession) -> None:
    """Of 40 live sessions the length scan reads only those past their policy's maximum length
    (600 s, 1800 s, 3600 s, off), and recycles exactly what length_decision says."""
    made = many_sessions(db, [(age, 5.0) for age in (300, 900, 2000, 4000)])
    now = utcnow()
    expected = {
        s.id
        for s, i in made
        if scans.length_decision(BOOK.for_session(s.app_id, s.template), s, i, now) is not None
    }
    assert 5 < len(expected) < len(made) / 2
    db.expunge_all()
    with session_loads() as loaded:
        recorded = scans.enforce_max_length(db, BOOK, now)
    assert {a.session_id for a in recorded} == expected
    assert sorted(loaded) == sorted(expected)


def reconcile_case(
    db: DbSession,
    *,
    silent_for: float,
    asked_ago: float | None = None,
    attempts: int = 0,
    template: str | None = None,
    confirmed: bool = True,
    provisioned_ago: float = 1000.0,
) -> Session:
    now = utcnow()
    session, agent = live_session(db, template=template, started_ago=1000)
    agent.last_event_at = now - dt.timedelta(seconds=silent_for)
    if not confirmed:
        agent.created_at = None
    session.provisioned_at = now - dt.timedelta(seconds=provisioned_ago)
    session.reconciled_at = now - dt.timedelta(seconds=asked_ago) if asked_ago is not None else None
    session.reconcile_attempts = attempts
    db.flush()
    return session


def test_reconciliation_reads_only_agents_due_to_be_asked_about(db: DbSession) -> None:
    """Only agents silent past their threshold whose next ask is due (backoff 100, 100, 200, 400, 800,
    then the 1000 s cap; 8 asks at most) are read and become suspects."""
    due = [
        reconcile_case(db, silent_for=200),  # never asked, silent past 120 s
        reconcile_case(db, silent_for=900, asked_ago=150, attempts=1),  # waits 100 s
        reconcile_case(db, silent_for=900, asked_ago=250, attempts=2),  # waits 200 s
        reconcile_case(db, silent_for=5000, asked_ago=1100, attempts=7),  # waits the 1000 s cap
        reconcile_case(db, silent_for=700, template="quick"),  # its template: 600 s
        reconcile_case(db, silent_for=0, confirmed=False, provisioned_ago=100),  # unconfirmed past 60 s
    ]
    for kwargs in (
        {"silent_for": 30},  # heard from recently
        {"silent_for": 900, "asked_ago": 50, "attempts": 1},
        {"silent_for": 900, "asked_ago": 150, "attempts": 2},
        {"silent_for": 900, "asked_ago": 700, "attempts": 4},  # waits 800 s
        {"silent_for": 5000, "asked_ago": 900, "attempts": 6},  # waits the cap
        {"silent_for": 5000, "asked_ago": 5000, "attempts": 8},  # gave up
        {"silent_for": 300, "template": "quick"},
        {"silent_for": 0, "confirmed": False, "provisioned_ago": 30},
    ):
        reconcile_case(db, **kwargs)  # type: ignore[arg-type]
    wanted = {s.id for s in due}
    db.expunge_all()
    with session_loads() as loaded:
        found = scans.suspects(db, BOOK, utcnow(), limit=50)
    assert {s.session_id for s in found} == wanted
    assert sorted(loaded) == sorted(wanted)


def test_coze_rooms_are_ended_past_their_own_template_lifetime(db: DbSession) -> None:
    """Coze rooms are taken as gone past coze.max_room_seconds of their template (600 s) or the
    default (3600 s), and no sooner."""
    now = utcnow()
    ended = set()
    for template, age in ((None, 3000), (None, 3700), ("never", 500), ("never", 700)):
        started = now - dt.timedelta(seconds=age)
        session = Session(
            id=str(uuid.uuid4()), app_id=COZE_APP_ID, origin="api", state=SessionState.ACTIVE,
            provider=Provider.COZE, template=template, user_id="u", agent_id="bot", room_id=f"r{age}",
            created_at=started, started_at=started, provisioned_at=started, start_attempts=1,
        )  # fmt: skip
        db.add_all(
            [
                session,
                AgentInstance(
                    app_id=COZE_APP_ID,
                    agent_instance_id=f"coze:{session.id}",
                    session_id=session.id,
                    state="active",
                    created_at=started,
                    last_event_at=started,
                ),
            ]
        )
        if age in (3700, 700):
            ended.add(session.id)
    db.flush()
    assert set(scans.coze_overdue(db, BOOK, now)) == ended


def test_a_book_without_overrides_gives_one_plain_predicate() -> None:
    """Without per-app or per-template values the prefilter is a single comparison, not a CASE of policies."""
    from worker.policies import candidates

    sql = str(candidates.too_long(PolicyBook(), utcnow()).compile())
    assert sql.count("sessions.started_at") == 1 and " OR " not in sql
