"""What roomwarden counts for Prometheus, and how ``/metrics`` reads it (docs/operations.md).

Two kinds, because roomwarden runs as many processes on many hosts:

- **Events** (callbacks received, callbacks applied and their lag, vendor requests, policy
  actions, deliveries) are counted where they happen, in whichever receiver or worker process.
  With ``PROMETHEUS_MULTIPROC_DIR`` set (``roomwarden run`` and the Dockerfile set it),
  prometheus_client writes each process's counts to files there and a scrape of any process on
  the host sums them; without it, a scrape sees its own process only.
- **State** (the inbox backlog, sessions by state, agent slots, deliveries pending) is read from
  the database when ``/metrics`` is scraped, so it is the same whichever host answers. Take
  ``max()`` of these across scrape targets, ``sum()`` of the counters.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from worker.db import session_scope, utcnow
from worker.models import (
    COZE_APP_ID,
    AgentInstance,
    Delivery,
    DeliveryState,
    InboxCallback,
    InboxState,
    Provider,
    Session,
    SessionState,
)

if TYPE_CHECKING:
    from worker.policies.config import PolicyBook

CALLBACKS_RECEIVED = Counter(
    "roomwarden_callbacks_received",
    "Callbacks at the receiver by outcome: stored, duplicate, conflict, rejected (4xx), replay "
    "(a reused signature, 401), unavailable (the database could not store it, 503).",
    ["outcome"],
)
APPLY_LAG = Histogram(
    "roomwarden_apply_lag_seconds",
    "From a callback's acknowledgement (stored) to its application to sessions and transcripts.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
VENDOR_REQUESTS = Counter(
    "roomwarden_vendor_requests",
    "Attempts at a vendor API by vendor, action and outcome (ok, or the error class).",
    ["vendor", "action", "outcome"],
)
POLICY_ACTIONS = Counter(
    "roomwarden_policy_actions",
    "Runs of policy actions by action and the state the run left them in.",
    ["action", "state"],
)
OUTBOUND_DELIVERIES = Counter(
    "roomwarden_outbound_deliveries",
    "Attempts to deliver an event to an endpoint by outcome: succeeded, retry, failed.",
    ["outcome"],
)

SLOT_KINDS = {"voice": None, "digital_human": "zego_digital_human"}


@dataclass
class Snapshot:
    """The state gauges, read in one transaction."""

    inbox_pending: int = 0
    inbox_oldest_pending_seconds: float = 0.0
    inbox_failed: int = 0
    sessions: dict[str, int] = field(default_factory=dict)
    slots: list[tuple[int, str, int, int]] = field(default_factory=list)  # app, kind, in use, limit
    outbound_pending: int = 0


def slots_in_use(db: DbSession) -> dict[tuple[int, str], int]:
    """``quotas.in_use`` for every ZEGO app and kind at once (two grouped queries per scrape).

    Asked app by app and kind by kind, each count joined the live instances to the whole
    sessions table (~150 ms each at 1,000,000 sessions). Here the live instances are read from
    ``ix_agent_instances_live`` (migration 0010) and each looks up its session's provider by
    primary key: the cost follows the live instances, not the history.
    """
    provider = select(Session.provider).where(Session.id == AgentInstance.session_id).scalar_subquery()
    live = (
        select(AgentInstance.app_id, provider.label("provider"))
        .where(AgentInstance.state != "deleted", AgentInstance.app_id != COZE_APP_ID)
        .subquery("live")
    )
    starting = (
        select(Session.app_id, Session.provider, func.count())
        .where(
            Session.state == SessionState.STARTING,
            or_(Session.start_claimed_at.is_not(None), Session.queued_at.is_not(None)),
            Session.provisioned_at.is_(None),
            Session.app_id != COZE_APP_ID,
        )
        .group_by(Session.app_id, Session.provider)
    )
    kinds = {provider: kind for kind, provider in SLOT_KINDS.items()} | {
        Provider.ZEGO.value: "voice",
        Provider.ZEGO_LIVE_DIGITAL_HUMAN.value: "digital_human",  # one ZEGO limit for both kinds
    }
    used: dict[tuple[int, str], int] = {}
    for query in (
        select(live.c.app_id, live.c.provider, func.count()).group_by(live.c.app_id, live.c.provider),
        starting,
    ):
        for app_id, made_by, n in db.execute(query):
            kind = kinds.get(made_by)
            if kind is not None:  # quotas.in_use's kinds: callback sessions (no provider) are voice
                used[(int(app_id), kind)] = used.get((int(app_id), kind), 0) + int(n)
    return used


def snapshot(db: DbSession, book: PolicyBook, now: dt.datetime) -> Snapshot:
    from worker.policies import quotas  # the counters above are imported by the vendor layer: no cycle

    found = Snapshot()
    counts = dict(
        db.execute(
            select(InboxCallback.state, func.count())
            .where(InboxCallback.state.in_([InboxState.PENDING, InboxState.FAILED]))
            .group_by(InboxCallback.state)
        ).all()
    )
    found.inbox_pending = int(counts.get(InboxState.PENDING, 0))
    found.inbox_failed = int(counts.get(InboxState.FAILED, 0))
    oldest = db.scalar(
        select(func.min(InboxCallback.received_at)).where(InboxCallback.state == InboxState.PENDING)
    )
    if oldest is not None:
        found.inbox_oldest_pending_seconds = max(0.0, (now - oldest).total_seconds())
    # An index-only scan of ix_sessions_state: ~110 ms at 1,000,000 sessions (2 cores), heap
    # visits only for pages changed since the last vacuum (live sessions').
    found.sessions = {
        str(state): int(n)
        for state, n in db.execute(select(Session.state, func.count()).group_by(Session.state))
    }
    live_apps = set(
        db.scalars(
            select(AgentInstance.app_id)
            .where(AgentInstance.state != "deleted", AgentInstance.app_id != COZE_APP_ID)
            .distinct()
        )
    )
    used = slots_in_use(db)
    for app_id in sorted(live_apps | set(book.app_ids)):
        policy = book.for_session(app_id, None)
        for kind, provider in SLOT_KINDS.items():
            limit = quotas.limit_for(policy, provider)
            found.slots.append((app_id, kind, used.get((app_id, kind), 0), limit))
    found.outbound_pending = int(
        db.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == DeliveryState.PENDING))
        or 0
    )
    return found


class DatabaseGauges(Collector):
    """The state gauges, read from the database at each scrape (within a two-second budget)."""

    def __init__(self, factory: sessionmaker[DbSession], book: PolicyBook) -> None:
        self.factory, self.book = factory, book

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.factory) as db:
            # A deferred BEGIN on SQLite (worker/db.py): a scrape never waits for, or blocks, a writer.
            db.connection(execution_options={"sqlite_read_only": True})
            if db.get_bind().dialect.name == "postgresql":
                db.execute(text("SET LOCAL statement_timeout = 2000"))
            state = snapshot(db, self.book, utcnow())
        yield GaugeMetricFamily(
            "roomwarden_inbox_pending", "Stored callbacks not yet applied.", state.inbox_pending
        )
        yield GaugeMetricFamily(
            "roomwarden_inbox_oldest_pending_seconds",
            "Age of the oldest callback not yet applied (0 when none is pending).",
            state.inbox_oldest_pending_seconds,
        )
        yield GaugeMetricFamily(
            "roomwarden_inbox_failed",
            "Callbacks that failed every apply attempt and wait for a person.",
            state.inbox_failed,
        )
        sessions = GaugeMetricFamily("roomwarden_sessions", "Sessions by state.", labels=["state"])
        for name, count in sorted(state.sessions.items()):
            sessions.add_metric([name], count)
        yield sessions
        in_use = GaugeMetricFamily(
            "roomwarden_agent_slots_in_use",
            "ZEGO agent instances live or being started, by AppId and kind (voice, digital_human).",
            labels=["app_id", "kind"],
        )
        limit = GaugeMetricFamily(
            "roomwarden_agent_slots_limit",
            "The policy's concurrency quota by AppId and kind.",
            labels=["app_id", "kind"],
        )
        for app_id, kind, used, cap in state.slots:
            in_use.add_metric([str(app_id), kind], used)
            limit.add_metric([str(app_id), kind], cap)
        yield in_use
        yield limit
        yield GaugeMetricFamily(
            "roomwarden_outbound_pending",
            "Deliveries to endpoints not yet succeeded or given up.",
            state.outbound_pending,
        )


def events_registry() -> CollectorRegistry:
    """Every process's counts on this host in multiprocess mode, else this process's own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    events = CollectorRegistry()
    MultiProcessCollector(events)  # type: ignore[no-untyped-call]
    return events


def exposition(gauges: DatabaseGauges | None) -> bytes:
    """The text a scrape gets: this host's event counts (all processes, in multiprocess mode) and,
    from the web process, the state read from the database."""
    text_out = generate_latest(events_registry())
    if gauges is not None:
        state = CollectorRegistry(auto_describe=False)
        state.register(gauges)
        text_out += generate_latest(state)
    return text_out
