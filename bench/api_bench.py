"""bench/api: the beat's policy scans over 10,000 active sessions, and the read API over 1,000,000 turns.

Seeds a fresh Postgres database (``INSERT ... SELECT generate_series``, then ``VACUUM ANALYZE``):
10,000 active sessions (a few idle past the default 600 s, a few past the 3600 s maximum
length, a few silent agents for reconciliation, a few without audible speech, Coze rooms, a
short queue) and enough ended sessions over the last 30 days to make 1,000,000 turns in all,
with the timeline events and agent sentences the latency figures read, instance LatencyData,
exceptions and interruptions. Turn texts draw words from a vocabulary with a skewed
(Zipf-like) distribution, so frequent and rare words are both searched honestly.

Then ``measure`` times:

- each beat scan's domain call in this process, in a transaction rolled back after each run (so
  every run sees the same state): median and max of ``--runs`` (target < 1 s each);
- the HTTP API through a real uvicorn process of ``webhooks.app:app``: list (each filter, sort
  by duration both ways, a second page), detail, search and stats, ``--requests`` sequential
  requests each after one warm-up: p50 and p99 (target p99 < 300 ms).

``measure(database_url, redis_url=...)`` is importable (bench/scale calls it with ``--no-seed``'s
meaning: whatever the database holds, "now" being the newest agent activity in it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import _common as common
import httpx

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/roomwarden_api_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
ACTIVE = 10_000
TARGET_SCAN_S = 1.0
TARGET_P99_MS = 300.0
SECOND_APP_ID = 7654321

VOCABULARY = """
the a to you i it and is that of for on my can in your me we this be have with please what do
not at so just order will are was help would like about if there know one get account time
thank thanks yes no okay sure right now need want check booking appointment delivery payment
refund card number address phone email password reset change cancel update confirm schedule
tomorrow today monday tuesday wednesday thursday friday saturday sunday morning afternoon evening
week month year minute hour store branch downtown airport station hotel room table flight train
ticket seat window aisle luggage bag package parcel shipment tracking courier invoice receipt
balance credit debit transfer bank loan mortgage insurance claim policy coverage premium doctor
clinic prescription pharmacy insurance dentist nurse visit test result report issue problem error
broken missing late early wrong damaged replacement return exchange warranty repair technician
internet router modem signal network outage speed plan upgrade downgrade contract subscription
renewal discount coupon promotion offer price cost fee charge total amount dollars euros pounds
blue red green black white large small medium size colour model version stock available
unavailable reservation dinner lunch breakfast menu vegetarian allergy gluten dessert coffee tea
parking garage entrance exit floor elevator lobby reception manager supervisor agent colleague
transfer hold wait moment second please sorry apologise understand explain repeat again louder
slowly spell name surname birthday code pin verification identity security question answer
weather rain snow sunny forecast temperature traffic route directions map distance kilometres
miles street avenue road corner building apartment house city country language english spanish
french german chinese japanese translate message voicemail callback reminder notification alarm
calendar meeting conference presentation document file upload download attachment printer scanner
laptop phone tablet charger battery screen keyboard mouse software app login logout settings
"""
WORDS = VOCABULARY.split()

CHINESE = ("您好请问有什么可以帮您", "好的已为您查到订单退款将在三个工作日内到账", "请稍等我帮您转接人工客服")
END_REASONS = (
    "deleted",
    "deleted",
    "deleted",
    "user_absent",
    "user_absent",
    "idle",
    "kicked_out",
    "max_length",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/api",
        description=(
            "Beat scan durations over 10,000 active sessions and the read API's p50/p99 over 1,000,000 "
            "turns (list, detail, search, stats) through a real uvicorn process. Prints figures."
        ),
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and re-created")
    parser.add_argument(
        "--redis-url", default=DEFAULT_REDIS_URL, help="the app's broker (it publishes nothing here)"
    )
    parser.add_argument("--turns", type=int, default=1_000_000, help="turns in all (default 1,000,000)")
    parser.add_argument("--active", type=int, default=ACTIVE, help="active sessions (default 10,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each beat scan (default 5)")
    parser.add_argument("--requests", type=int, default=30, help="requests per API figure (default 30)")
    seeding = parser.add_mutually_exclusive_group()
    seeding.add_argument("--reuse", action="store_true", help="keep the database if a previous run seeded it")
    seeding.add_argument(
        "--no-seed", action="store_true", help="measure whatever the database holds (another bench filled it)"
    )
    parser.add_argument("--skip-scans", action="store_true", help="only the API figures")
    parser.add_argument("--skip-api", action="store_true", help="only the beat scan figures")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- seeding


def seeded(database_url: str) -> bool:
    """Whether a previous run finished seeding this database (its last step is VACUUM ANALYZE)."""
    try:
        with common.connect(database_url) as conn:
            return bool(common.scalar(conn, "SELECT count(*) > 0 FROM turns"))
    except Exception:
        return False


def seed(database_url: str, *, turns: int, active: int) -> float:
    """Fill a freshly migrated database; returns seconds taken."""
    started = time.perf_counter()
    active_rounds = sum(1 + n % 20 for n in range(active))  # rounds of the active sessions
    ended = max(0, (turns - 2 * active_rounds) // 40)  # ended sessions average 20 rounds (40 turns)
    params: dict[str, Any] = {
        "active": active,
        "ended": ended,
        "app": common.APP_ID,
        "app2": SECOND_APP_ID,
        "words": WORDS,
        "nwords": len(WORDS),
        "zh": list(CHINESE),
        "reasons": list(END_REASONS),
    }
    with common.connect(database_url) as conn:
        conn.execute("SELECT setseed(0.42)")
        # Built after the load: maintaining them row by row would make seeding, not measuring,
        # the long part. Recreated below exactly as migration 0004 makes them.
        # The search indexes as the migrations made them (their definitions change between
        # revisions), dropped for the load and made again after it.
        search_indexes = [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'turns'"
                " AND indexname IN ('ix_turns_text_tsv', 'ix_turns_text_trgm', 'ix_turns_text_bigrams')"
            )
        ]
        conn.execute("DROP INDEX IF EXISTS ix_turns_text_tsv, ix_turns_text_trgm, ix_turns_text_bigrams")
        # Revision 0011 keeps only settled turns (Round over) in them: mark what the drain would.
        settled = bool(
            common.scalar(
                conn,
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_name = 'turns' AND column_name = 'settled'",
            )
        )
        conn.execute("CREATE TEMP TABLE anchor AS SELECT date_trunc('second', now()) AS t")
        # Active sessions: n = 0..active-1, ZEGO voice, started 1 to 51 minutes ago; every 100th
        # past the maximum length, every 50th idle past 600 s, every 33rd silent (no speech heard,
        # no spec: not judged idle), every 100th (+7) agent silent past the reconcile threshold.
        conn.execute(
            """
            INSERT INTO sessions (id, app_id, origin, state, room_id, user_id, agent_id, agent_name,
                                  created_at, started_at, last_activity_at, last_user_speech_at,
                                  start_attempts, reconcile_attempts)
            SELECT 'live-' || lpad(n::text, 8, '0'), CASE WHEN n %% 4 = 0 THEN %(app2)s ELSE %(app)s END,
                   'callback', 'active', 'room-' || n, 'user-' || (n %% 5000), 'bench-bot', 'Bench bot',
                   st, st, a.t - (n %% 10) * interval '1 second',
                   CASE WHEN n %% 33 = 0 THEN NULL
                        WHEN n %% 50 = 0 THEN a.t - interval '700 seconds'
                        ELSE a.t - (n %% 60) * interval '1 second' END,
                   0, 0
              FROM anchor a, generate_series(0, %(active)s - 1) AS n,
                   LATERAL (SELECT a.t - (CASE WHEN n %% 100 = 0 THEN 3700 ELSE 60 + (n * 37) %% 3000 END)
                                         * interval '1 second' AS st) s
            """,
            params,
        )
        # Ended sessions over the last 30 days, 30 s to 30 min long, one in ten through the API.
        conn.execute(
            """
            INSERT INTO sessions (id, app_id, origin, state, end_reason, end_code, room_id, user_id,
                                  agent_id, agent_name, template, provider, created_at, started_at,
                                  ended_at, last_activity_at, start_attempts, reconcile_attempts)
            SELECT 'done-' || lpad(n::text, 8, '0'), CASE WHEN n %% 4 = 0 THEN %(app2)s ELSE %(app)s END,
                   CASE WHEN n %% 10 = 0 THEN 'api' ELSE 'callback' END, 'ended',
                   (%(reasons)s::text[])[1 + n %% 8], CASE WHEN n %% 8 IN (3, 4) THEN 1202 ELSE 0 END,
                   'room-d' || n, 'user-' || (n %% 5000), 'bench-bot', 'Bench bot',
                   CASE WHEN n %% 10 = 0 THEN 'concierge' END, CASE WHEN n %% 10 = 0 THEN 'zego' END,
                   st, st, st + d, st + d, 1, 0
              FROM anchor a, generate_series(0, %(ended)s - 1) AS n,
                   LATERAL (SELECT a.t - interval '1 hour'
                                   - (n::float8 / greatest(%(ended)s, 1)) * interval '30 days' AS st,
                                   (30 + (n * 7919) %% 1770) * interval '1 second' AS d) s
            """,
            params,
        )
        # Coze rooms (every tenth past its 3600 s lifetime) and a short queue, for their scans.
        conn.execute(
            """
            INSERT INTO sessions (id, app_id, origin, state, provider, user_id, agent_id, created_at,
                                  started_at, queued_at, start_attempts, reconcile_attempts)
            SELECT 'coze-' || n, 0, 'api', 'active', 'coze', 'user-c' || n, 'bot', st, st, NULL, 1, 0
              FROM anchor a, generate_series(0, 99) AS n,
                   LATERAL (SELECT a.t - (CASE WHEN n %% 10 = 0 THEN 4000 ELSE 300 END) * interval '1 second'
                                   AS st) s
            UNION ALL
            SELECT 'queued-' || n, %(app)s, 'api', 'queued', 'zego', 'user-q' || n, 'bench-bot',
                   a.t - n * interval '1 second', NULL, a.t - n * interval '1 second', 0, 0
              FROM anchor a, generate_series(0, 19) AS n
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO agent_instances (app_id, agent_instance_id, session_id, state, agent_user_id,
                                         room_id, created_at, deleted_at, delete_code, latency,
                                         first_seen_at, last_event_at, last_sequence)
            SELECT s.app_id, 'inst-' || s.id, s.id,
                   CASE WHEN s.state = 'active' THEN 'active' ELSE 'deleted' END, 'agent-' || s.id,
                   s.room_id, s.started_at, s.ended_at, s.end_code,
                   CASE WHEN s.state = 'ended' THEN jsonb_build_object(
                        'LLMTTFT', 250 + hashtext(s.id) %% 500 + 500,
                        'TTSAudioFirstFrameTime', 120 + abs(hashtext(s.id)) %% 400,
                        'TotalCost', 900 + abs(hashtext(s.id)) %% 1500) END,
                   s.started_at,
                   CASE WHEN s.state = 'active' AND s.id LIKE 'live-%%'
                             AND substr(s.id, 6)::int %% 100 = 7 THEN a.t - interval '300 seconds'
                        ELSE coalesce(s.ended_at, s.last_activity_at, s.started_at) END,
                   100
              FROM sessions s, anchor a
             WHERE s.state IN ('active', 'ended')
            """,
            params,
        )
        # Rounds per instance: 1..20 for live sessions, 10..30 (20 on average) for ended ones.
        conn.execute(
            """
            CREATE TEMP TABLE seeded_rounds AS
            SELECT i.id AS instance_id, i.session_id, i.created_at AS t0, r,
                   s.state = 'active' AS live,
                   CASE WHEN s.state = 'active' THEN 1 + substr(s.id, 6)::int %% 20 END AS last_live
              FROM agent_instances i JOIN sessions s ON s.id = i.session_id
             CROSS JOIN LATERAL generate_series(1, CASE WHEN s.state = 'active'
                                                        THEN 1 + substr(s.id, 6)::int %% 20
                                                        ELSE 10 + substr(s.id, 6)::int %% 21 END) AS r
             WHERE i.app_id <> 0
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO turns (session_id, instance_id, round, speaker, text, user_id, spoken_at,
                               interrupted, interrupt_reason, played_text{settled_column})
            SELECT x.session_id, x.instance_id, x.r, sp.speaker,
                   CASE WHEN x.instance_id %% 40 = 0
                        THEN (%(zh)s::text[])[1 + (x.instance_id + x.r) %% 3]
                        ELSE array_to_string(ARRAY(
                            SELECT (%(words)s::text[])[1 + floor(%(nwords)s * power(random(), 2.2))::int]
                              FROM generate_series(1, 4 + (x.instance_id + x.r + sp.o) %% 17)
                             WHERE x.r IS NOT NULL), ' ') END,
                   CASE WHEN sp.speaker = 'user' THEN 'user-' || (x.instance_id %% 5000) END,
                   x.t0 + x.r * interval '8 seconds' + sp.o * interval '1 millisecond',
                   sp.speaker = 'agent' AND (x.instance_id + x.r) %% 14 = 0,
                   CASE WHEN sp.speaker = 'agent' AND (x.instance_id + x.r) %% 14 = 0 THEN 1 END,
                   CASE WHEN sp.speaker = 'agent' AND (x.instance_id + x.r) %% 14 = 0 THEN 'Sure, I' END
                   {settled_value}
              FROM seeded_rounds x CROSS JOIN (VALUES ('user', 1300), ('agent', 2100)) AS sp(speaker, o)
            """.replace("{settled_column}", ", settled" if settled else "").replace(
                "{settled_value}",
                ", sp.speaker = 'user' OR NOT x.live OR x.r < x.last_live" if settled else "",
            ),
            params,
        )
        # What per-round response times are computed from: the user's SPEAK_END, the agent's
        # SPEAKING status and its first LLMResult, 300 ms to 2.3 s apart.
        conn.execute(
            """
            INSERT INTO timeline_events (session_id, instance_id, inbox_id, event, round, sequence, at,
                                         detail)
            SELECT x.session_id, x.instance_id, x.instance_id * 1000 + x.r * 2, 'UserSpeakAction', x.r,
                   x.r * 10, x.t0 + x.r * interval '8 seconds' + interval '1500 milliseconds',
                   '{"Action": "SPEAK_END"}'::jsonb
              FROM seeded_rounds x
            UNION ALL
            SELECT x.session_id, x.instance_id, x.instance_id * 1000 + x.r * 2 + 1, 'AgentInstanceStatus',
                   x.r, x.r * 10 + 5,
                   x.t0 + x.r * interval '8 seconds' + interval '1500 milliseconds'
                        + (300 + (x.instance_id * 31 + x.r * 17) %% 2000) * interval '1 millisecond',
                   '{"Status": "SPEAKING"}'::jsonb
              FROM seeded_rounds x
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO agent_sentences (instance_id, inbox_id, round, sequence, callback_ts, text)
            SELECT x.instance_id, x.instance_id * 1000 + x.r, x.r, x.r * 10 + 3,
                   (extract(epoch FROM x.t0 + x.r * interval '8 seconds' + interval '1500 milliseconds')
                    * 1000)::bigint + 250 + (x.instance_id * 13 + x.r * 7) %% 1800,
                   'sentence'
              FROM seeded_rounds x
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO agent_exceptions (session_id, instance_id, inbox_id, code, family, message, round, at)
            SELECT i.session_id, i.id, i.id, 2201, 'llm', 'LLM request failed', 1, i.created_at
              FROM agent_instances i WHERE i.id %% 20 = 0 AND i.app_id <> 0
            """,
            params,
        )
        derived = _derived_from_turns()
        if derived is not None and common.scalar(conn, "SELECT to_regclass('rounds') IS NOT NULL"):
            # What the drain keeps as it applies callbacks (per-Round marks, each session's turn
            # counts), made from the rows above by migration 0012's own backfill.
            conn.execute(derived.rounds_backfill("postgresql"))
            conn.execute(derived.COUNT_TURNS)
        for definition in search_indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def _derived_from_turns() -> ModuleType | None:
    """Migration 0012, whose backfill derives the per-Round and per-session rows (None before it)."""
    found = sorted((common.ROOT / "migrations" / "versions").glob("*_0012_*.py"))
    if not found:
        return None
    spec = importlib.util.spec_from_file_location("_roomwarden_0012", found[0])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- measuring

Report = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


def _anchor(conn: Any) -> dt.datetime:
    """The database's "now": its newest agent activity (a seeded database does not age)."""
    newest = common.scalar(conn, "SELECT max(last_event_at) FROM agent_instances WHERE state = 'active'")
    return newest or dt.datetime.now(dt.UTC)


def _timed(runs: int, work: Callable[[], int]) -> tuple[list[float], int]:
    seconds, found = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        found = work()
        seconds.append(time.perf_counter() - started)
    return seconds, found


def measure_scans(database_url: str, *, runs: int = 5, report: Report = _quiet) -> list[str]:
    """Each beat scan's domain call, as the beat's tasks make it, over whatever the database holds."""
    import structlog
    from sqlalchemy.orm import Session as DbSession

    from worker.db import make_engine
    from worker.policies import quotas, scans
    from worker.policies.config import PolicyBook

    with common.connect(database_url) as conn:
        now = _anchor(conn)
        live = common.scalar(conn, "SELECT count(*) FROM sessions WHERE state = 'active'")
    # Each decision is logged at info: hundreds of lines per run would be measured too.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    engine = make_engine(database_url)
    book = PolicyBook()
    jobs: dict[str, Callable[[DbSession], int]] = {
        "recycle-idle (scans.recycle_idle)": lambda db: len(scans.recycle_idle(db, book, now)),
        "enforce-max-length (scans.enforce_max_length)": lambda db: len(
            scans.enforce_max_length(db, book, now)
        ),
        "reconcile (scans.suspects)": lambda db: len(scans.suspects(db, book, now, limit=50)),
        "reconcile (scans.coze_overdue)": lambda db: len(scans.coze_overdue(db, book, now)),
        "start-queued (quotas.dequeue)": lambda db: len(quotas.dequeue(db, book, now)),
    }
    lines = []
    try:
        for name, job in jobs.items():

            def once(job: Callable[[DbSession], int] = job) -> int:
                # Rolled back: every run sees the same state, as each beat would before acting.
                with DbSession(engine) as db:
                    try:
                        return job(db)
                    finally:
                        db.rollback()

            once()  # warm-up: imports, the connection, statement caches
            seconds, found = _timed(runs, once)
            lines.append(
                line := (
                    f"beat {name}: median {statistics.median(seconds) * 1000:.0f} ms,"
                    f" max {max(seconds) * 1000:.0f} ms over {runs} runs, {found} found,"
                    f" {live:,} active sessions  (target < {TARGET_SCAN_S:.0f} s)"
                )
            )
            report(line)
    finally:
        engine.dispose()
    return lines


def _api_requests(conn: Any, now: dt.datetime) -> dict[str, list[str]]:
    """Figure name -> request paths (each request of a figure takes the next path, round robin)."""
    rng = random.Random(7)
    ids = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id").fetchall()]
    detail = [f"/v1/sessions/{i}" for i in rng.sample(ids, min(50, len(ids)))]
    instance = common.scalar(conn, "SELECT agent_instance_id FROM agent_instances ORDER BY id DESC LIMIT 1")
    user = common.scalar(conn, "SELECT user_id FROM sessions WHERE user_id IS NOT NULL ORDER BY id LIMIT 1")
    day_ago = (now - dt.timedelta(days=1)).isoformat()
    week_ago = (now - dt.timedelta(days=7)).isoformat()

    def listing(**query: Any) -> list[str]:
        return [f"/v1/sessions?{urlencode(query)}"]

    out: dict[str, list[str]] = {
        "list (newest first)": listing(),
        "list state=active": listing(state="active"),
        "list state=ended end_reason=idle": listing(state="ended", end_reason="idle"),
        "list has_interruptions=true": listing(has_interruptions="true"),
        "list has_interruptions=false": listing(has_interruptions="false"),
        "list has_exceptions=true": listing(has_exceptions="true"),
        "list has_exceptions=false": listing(has_exceptions="false"),
        "list min_turns=40": listing(min_turns=40),
        "list min_turns=1000 (matches none)": listing(min_turns=1000),
        "list agent_instance_id=...": listing(agent_instance_id=instance),
        "list user_id=...": listing(user_id=user),
        f"list app_id={SECOND_APP_ID}": listing(app_id=SECOND_APP_ID),
        "list since=7 days ago": listing(since=week_ago),
        "list sort=duration desc": listing(sort="duration", order="desc"),
        "list sort=duration asc": listing(sort="duration", order="asc"),
        "list sort=duration has_interruptions=true": listing(sort="duration", has_interruptions="true"),
        "detail": detail,
        "search 'refund' (frequent word)": ["/v1/search?q=refund"],
        "search 'dentist prescription'": ["/v1/search?" + urlencode({"q": "dentist prescription"})],
        "search '退款' (Chinese)": ["/v1/search?" + urlencode({"q": "退款"})],
        "stats (all sessions)": ["/v1/stats"],
        "stats since=1 day ago": ["/v1/stats?" + urlencode({"since": day_ago})],
        "stats state=ended since=7 days ago": [
            "/v1/stats?" + urlencode({"state": "ended", "since": week_ago})
        ],
    }
    return out


def measure_api(
    database_url: str, *, redis_url: str, requests: int = 30, report: Report = _quiet
) -> list[str]:
    """p50/p99 of the read API through a real uvicorn process of the app, sequential requests."""
    with common.connect(database_url) as conn:
        now = _anchor(conn)
        figures = _api_requests(conn, now)
        turns = common.scalar(conn, "SELECT count(*) FROM turns")
    token = common.child_env()["ROOMWARDEN_API_TOKEN"]
    lines = []
    with (
        tempfile.TemporaryDirectory(prefix="api-bench-") as scratch,
        common.Processes(Path(scratch)) as procs,
    ):
        port = common.free_port()
        env = common.child_env(
            ROOMWARDEN_DATABASE_URL=database_url,
            ROOMWARDEN_BROKER_URL=redis_url,
            ROOMWARDEN_REDIS_URL=redis_url,
            ROOMWARDEN_LOG_LEVEL="WARNING",
        )
        server = procs.start("web", common.uvicorn_argv("webhooks.app:app", port), env)
        common.wait_for_http(server, port, "/healthz")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60.0) as client:
            # The second page of the default listing: a cursor the first page gave out.
            first = client.get("/v1/sessions?sort=duration&order=desc").json()
            if first.get("next_cursor"):
                figures["list sort=duration desc, page 2"] = [
                    "/v1/sessions?"
                    + urlencode({"sort": "duration", "order": "desc", "cursor": first["next_cursor"]})
                ]
            for name, paths in figures.items():
                if not paths:
                    continue  # an empty database: no session to show
                try:
                    _get(client, paths[0])  # warm-up
                    millis = []
                    for k in range(requests):
                        started = time.perf_counter()
                        _get(client, paths[k % len(paths)])
                        millis.append((time.perf_counter() - started) * 1000)
                except RuntimeError as exc:
                    lines.append(f"api {name}: failed, {exc}  (target p99 < {TARGET_P99_MS:.0f} ms)")
                    report(lines[-1])
                    continue
                p50, p99 = common.percentile(millis, 50), common.percentile(millis, 99)
                lines.append(
                    f"api {name}: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {requests} requests,"
                    f" {turns:,} turns"
                    f"  (target p99 < {TARGET_P99_MS:.0f} ms)"
                )
                report(lines[-1])
    return lines


def _get(client: httpx.Client, path: str) -> None:
    answer = client.get(path)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")


def measure(
    database_url: str,
    *,
    redis_url: str = DEFAULT_REDIS_URL,
    runs: int = 5,
    requests: int = 30,
    scans: bool = True,
    api: bool = True,
    report: Report = _quiet,
) -> list[str]:
    """Every figure as one printable line with its target, over whatever ``database_url`` holds;
    ``report`` is handed each line as soon as it is measured."""
    lines = []
    if scans:
        lines += measure_scans(database_url, runs=runs, report=report)
    if api:
        lines += measure_api(database_url, redis_url=redis_url, requests=requests, report=report)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.header("bench/api: beat scans over active sessions, read API over stored turns")
    if not args.no_seed and not (args.reuse and seeded(args.database_url)):
        common.recreate_database(args.database_url)
        common.alembic_upgrade(args.database_url)
        took = seed(args.database_url, turns=args.turns, active=args.active)
        print(f"   seeded {args.active:,} active sessions and about {args.turns:,} turns in {took:.0f} s")
    with common.connect(args.database_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM sessions WHERE state = 'active'),"
            " (SELECT count(*) FROM turns)"
        ).fetchone()
    print(f"   database: {counts[0]:,} sessions, {counts[1]:,} active, {counts[2]:,} turns")
    measure(
        args.database_url,
        redis_url=args.redis_url,
        runs=args.runs,
        requests=args.requests,
        scans=not args.skip_scans,
        api=not args.skip_api,
        report=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    common.terminate_on_sigterm()
    raise SystemExit(main())
