"""The /ui page in a real browser against the real app (uvicorn) and a seeded Postgres.

An analyst opens /ui, gives the read token, filters the sessions to those with interruptions,
opens one and sees the interrupted agent turn as such: what was played, and struck through, what
the user cut off. The overview draws its charts from /v1/stats. A screenshot of the session is
saved to test-artifacts/ui-session.png for people to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from tests.conftest import REDIS_URL, ROOT, wipe
from tests.factories import APP_ID, CALLBACK_SECRET, Signer, apply_pending, ingest
from tests.processes import Stack, stack_env
from tests.seeded import SEEDS, Seed, seed_committed
from worker.db import make_sessionmaker, session_scope
from worker.models import Session
from worker.sessions.lifecycle import END_REASONS, session_id_for
from worker.settings import Settings

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect, sync_playwright

READ_TOKEN = "ui-read-token-0123456789"
NO_USER = next(s for s in SEEDS if s.key == "inst-en-booking")
ARTIFACTS = ROOT / "test-artifacts"


def chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, database_url: str, engine: Engine) -> Iterator[str]:
    """The seeded conversations behind a real uvicorn process; yields its base URL.

    One server for the module: the tests only read, and each start costs seconds.
    """
    if not database_url.startswith("postgresql"):
        pytest.skip("runs the production shape (uvicorn, Postgres); the page is the same on SQLite")
    if chromium() is None:
        pytest.skip("chromium is not installed")
    settings = Settings(
        database_url=database_url,
        broker_url=REDIS_URL,
        zego_app_id=APP_ID,
        zego_callback_secret=CALLBACK_SECRET,
        _env_file=None,
    )
    wipe(engine)
    seed_committed(make_sessionmaker(engine), settings)
    # The one session a room callback told about: its user was out for 25 billed seconds.
    with session_scope(make_sessionmaker(engine)) as db:
        db.execute(update(Session).where(Session.id == NO_USER.session_id).values(no_user_seconds=25.0))
    env = {**stack_env(database_url, REDIS_URL), "ROOMWARDEN_READ_TOKEN": READ_TOKEN}
    stack = Stack(tmp_path_factory.mktemp("ui"), env)
    stack.start_receiver()
    try:
        yield stack.url
    finally:
        stack.stop()
        wipe(engine)


@pytest.fixture(scope="module")
def browser(served: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser profile (no stored token) per test; page errors and console errors fail it."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, timezone_id="UTC")
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # A CSP violation, a failed script or a failed API call shows up as a console error.
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert problems == [], problems


def enter_token(page: Page, base: str) -> None:
    page.goto(f"{base}/ui")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", READ_TOKEN)
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden()


def shown_ids(page: Page) -> set[str]:
    rows = page.locator("#sessions-table tbody tr")
    return {rows.nth(i).get_attribute("data-session-id") or "" for i in range(rows.count())}


def test_analyst_filters_opens_an_interrupted_session_and_sees_what_was_cut(page: Page, served: str) -> None:
    """Filtering by interruptions lists exactly those sessions; the chat shows played and cut parts."""
    enter_token(page, served)
    expect(page.locator("#sessions-table tbody tr")).to_have_count(len(SEEDS))
    assert shown_ids(page) == {s.session_id for s in SEEDS}

    page.select_option("#f-has_interruptions", "true")
    page.click("#filters button[type=submit]")
    interrupted = [s for s in SEEDS if s.interrupted]
    expect(page.locator("#sessions-table tbody tr")).to_have_count(len(interrupted))
    assert shown_ids(page) == {s.session_id for s in interrupted}
    assert "has_interruptions=true" in page.url

    weather: Seed = next(s for s in interrupted if s.key == "inst-en-weather")
    page.click(f'#sessions-table tr[data-session-id="{weather.session_id}"] a')
    chat = page.locator("#chat")
    expect(chat.locator(".turn")).to_have_count(weather.turns)
    cut_round = next(i for i, r in enumerate(weather.rounds) if r.played is not None)
    said = weather.rounds[cut_round]
    turn = chat.locator(f'.turn.agent[data-round="{weather.round_number(cut_round)}"]')
    expect(turn).to_have_class("turn agent interrupted")
    expect(turn.locator(".badge")).to_have_text("interrupted")
    played = said.played or ""
    whole = " ".join(said.agent)  # English sentences are joined with a space
    expect(turn.locator(".played")).to_have_text(played)
    expect(turn.locator("del.cut")).to_have_text(whole[len(played) :])
    # Turns that were not cut off show no struck-through text.
    assert chat.locator("del.cut").count() == sum(r.played is not None for r in weather.rounds)
    # User on the right, agent on the left.
    user_box = chat.locator(".turn.user").first.bounding_box()
    agent_box = chat.locator(".turn.agent").first.bounding_box()
    assert user_box is not None and agent_box is not None
    assert user_box["x"] > agent_box["x"]
    expect(page.locator("#round-latency svg .bar")).to_have_count(len(weather.rounds))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-session.png"), full_page=True)


def test_paging_walks_every_session_once_newest_first(page: Page, served: str) -> None:
    """With a small page size, Next page follows next_cursor through all sessions, no repeats."""
    enter_token(page, served)
    page.goto(f"{served}/ui#/sessions?limit=4")
    seen: list[str] = []
    cursor = ""
    while True:
        # The table of the page this cursor asked for, not the one before it.
        rows = page.locator(f'section.sessions[data-cursor="{cursor}"] #sessions-table tbody tr')
        expect(rows.first).to_be_visible()
        seen += [rows.nth(i).get_attribute("data-session-id") or "" for i in range(rows.count())]
        expect(page.locator("section.sessions .pager")).to_be_attached()
        if page.locator("#next-page").count() == 0:
            break
        cursor = page.locator("#next-page").get_attribute("data-cursor") or ""
        page.click("#next-page")
    newest_first = sorted(SEEDS, key=lambda s: s.started_at, reverse=True)
    assert seen == [s.session_id for s in newest_first]


def test_session_with_exceptions_shows_them_inline_and_a_chinese_cut(page: Page, served: str) -> None:
    """Exceptions appear as system lines in the chat; a Chinese played part splits mid-sentence."""
    enter_token(page, served)
    errors = next(s for s in SEEDS if s.key == "inst-zh-tts-errors")
    page.goto(f"{served}/ui#/session/{errors.session_id}")
    chat = page.locator("#chat")
    expect(chat.locator(".system.exception")).to_have_count(len(errors.exceptions))
    for code, message in errors.exceptions:
        expect(chat.locator(".system.exception").first).to_contain_text(f"{code}")
        expect(chat.locator(".system.exception").first).to_contain_text(message)
    i = next(i for i, r in enumerate(errors.rounds) if r.played is not None)
    turn = chat.locator(f'.turn.agent[data-round="{errors.round_number(i)}"]')
    whole = "".join(errors.rounds[i].agent)  # CJK sentences are joined without spaces
    played = errors.rounds[i].played or ""
    expect(turn.locator(".played")).to_have_text(played)
    expect(turn.locator("del.cut")).to_have_text(whole[len(played) :])
    assert errors.delete_code is not None
    expect(chat.locator(".system.ended").last).to_contain_text(END_REASONS[errors.delete_code])


def test_the_session_header_shows_time_with_no_user_only_when_known(page: Page, served: str) -> None:
    """The header of the session whose user left the room says "No user 25s"; a session no room
    callback told about has no such fact at all, rather than a dash that could read as none."""
    enter_token(page, served)
    page.goto(f"{served}/ui#/session/{NO_USER.session_id}")
    expect(page.locator(".facts div", has_text="No user").locator("dd")).to_have_text("25s")
    other = next(s for s in SEEDS if s.key == "inst-en-weather")
    page.goto(f"{served}/ui#/session/{other.session_id}")
    expect(page.locator(".facts div", has_text="Duration")).to_be_visible()
    expect(page.locator(".facts div", has_text="No user")).to_have_count(0)


def test_overview_draws_sessions_per_day_end_reasons_and_latency(page: Page, served: str) -> None:
    """The overview's SVG charts carry one bar per seeded day and one per end reason."""
    enter_token(page, served)
    page.click("nav a[data-view=overview]")
    days = {s.started_at.date().isoformat() for s in SEEDS}
    bars = page.locator("#chart-per-day svg .bar")
    expect(bars).to_have_count(len(days))
    assert {bars.nth(i).get_attribute("data-label") for i in range(bars.count())} == {d[5:] for d in days}
    reasons = {END_REASONS[s.delete_code] for s in SEEDS if s.delete_code is not None}
    rows = page.locator("#chart-end-reasons svg .hbar")
    expect(rows).to_have_count(len(reasons))
    assert {rows.nth(i).get_attribute("data-label") for i in range(rows.count())} == reasons
    # Four latency measures, each with p50, p90 and p99 bars.
    expect(page.locator("#chart-latency svg .bar-group")).to_have_count(4)
    expect(page.locator("#kpis .kpi-value").first).to_have_text(str(len(SEEDS)))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-overview.png"), full_page=True)


def test_a_live_session_fills_in_as_it_happens(page: Page, served: str, engine: Engine) -> None:
    """The session page follows the session's event stream: a new turn shows without a reload.

    Last in this module: it adds a session to the seeded set the other tests count.
    """
    signer = Signer()
    instance = "live-instance-4242"
    factory = make_sessionmaker(engine)
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), _env_file=None)

    def arrive(*callbacks: tuple[str, dict[str, object]]) -> None:
        with session_scope(factory) as db:
            ingest(db, [signer.callback(event, data, instance=instance) for event, data in callbacks])
            apply_pending(db, settings, instance=instance)

    arrive(
        ("AgentInstanceCreated", {}),
        ("ASRResult", {"UserId": "guest", "Round": 1, "Text": "Is the pool open?"}),
    )
    session_id = session_id_for(APP_ID, instance)
    enter_token(page, served)
    page.goto(f"{served}/ui#/session/{session_id}")
    chat = page.locator("#chat")
    expect(chat.locator(".turn")).to_have_count(1)
    expect(page.locator(".badge.live")).to_be_visible()

    arrive(
        ("LLMResult", {"Round": 1, "Text": "Yes, until ten tonight."}),
        ("AgentInstanceStatus", {"Status": "IDLE", "Round": 1}),
    )
    expect(chat.locator(".turn.agent .bubble")).to_have_text("Yes, until ten tonight.", timeout=15_000)
    arrive(("AgentInstanceDeleted", {"Code": 0}))
    expect(page.locator(".badge.state-ended")).to_be_visible(timeout=15_000)
    expect(page.locator(".badge.live")).to_have_count(0)


def test_the_api_reference_renders_from_openapi_json_with_nothing_from_elsewhere(
    page: Page, served: str
) -> None:
    """/docs works on a host with no way out: every request it makes stays on this origin."""
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(served) else elsewhere.append(r.url))
    page.goto(f"{served}/docs")
    page.wait_for_selector("#tag-sessions")
    start = page.locator("details.op", has_text="Start a session")
    start.locator("summary").first.click()
    assert start.locator("text=Idempotency-Key").count() >= 1
    assert start.locator("text=202").count() >= 1
    assert elsewhere == []
