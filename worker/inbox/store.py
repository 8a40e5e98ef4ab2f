"""Storing callbacks durably and finding the ones still waiting to be applied.

The receiver stores a whole batch of concurrent requests in one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING``: one commit makes many callbacks durable, and a
duplicate is simply a row that did not come back. Only on that rare path do two more queries
tell a harmless redelivery from a replayed signature carrying another body (refused), and from
a validly signed callback whose dedup key is taken by other content: ZEGO does not sign the
body, so whoever holds a leaked signature and comes first can store a forged one, and the
genuine callback's re-signed retry would look like a duplicate. Such a newcomer is kept too, as
a ``conflict`` row (never applied; ``roomwarden inbox list --state conflict``), and counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from worker.db import insert_ignoring_conflicts
from worker.inbox.callbacks import Callback, content_hash
from worker.models import InboxCallback, InboxState

StreamKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class NewCallback:
    """A verified callback on its way into the inbox."""

    callback: Callback
    payload_text: str
    content_type: str
    body_hash: str

    def row(self, received_at: dt.datetime) -> dict[str, Any]:
        cb = self.callback
        return {
            "app_id": cb.app_id,
            "event": cb.event,
            "agent_instance_id": cb.agent_instance_id,
            "sequence": cb.sequence,
            "dedup_key": cb.dedup_key,
            "signature": cb.signature,
            "body_hash": self.body_hash,
            "payload": self.payload_text,
            "content_type": self.content_type,
            "callback_ts": cb.timestamp_ms,
            "received_at": received_at,
            "state": InboxState.PENDING.value,
            "attempts": 0,
        }


Outcome = Literal["stored", "duplicate", "replay", "conflict"]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch as rows to insert: the first callback of each dedup key, in order."""

    items: Sequence[NewCallback]
    rows: list[dict[str, Any]]
    first_of_key: dict[str, int]

    @classmethod
    def of(cls, items: Sequence[NewCallback], received_at: dt.datetime) -> PreparedBatch:
        first_of_key: dict[str, int] = {}
        rows = []
        for index, item in enumerate(items):
            key = item.callback.dedup_key
            if key not in first_of_key:
                first_of_key[key] = index
                rows.append(item.row(received_at))
        return cls(items, rows, first_of_key)

    def conflicts(self, inserted: set[str]) -> list[NewCallback]:
        return [item for index, item in enumerate(self.items) if not self._stored(index, item, inserted)]

    def outcomes(self, inserted: set[str], stored_body_hashes: dict[str, str]) -> list[Outcome]:
        """Stored, a harmless duplicate, or a replay: a known signature arriving with another body."""
        result: list[Outcome] = []
        for index, item in enumerate(self.items):
            if self._stored(index, item, inserted):
                result.append("stored")
                continue
            stored = stored_body_hashes.get(item.callback.signature)
            result.append("replay" if stored is not None and stored != item.body_hash else "duplicate")
        return result

    def duplicates(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Indexes of the items taken for duplicates: the ones whose content must be compared."""
        return [index for index, outcome in enumerate(outcomes) if outcome == "duplicate"]

    def _stored(self, index: int, item: NewCallback, inserted: set[str]) -> bool:
        key = item.callback.dedup_key
        return key in inserted and self.first_of_key[key] == index


def conflicting(
    items: Sequence[NewCallback], candidates: list[int], stored_payloads: dict[str, str]
) -> list[int]:
    """Of the ``candidates`` (indexes of would-be duplicates), those whose content differs from the
    stored callback of the same dedup key (``stored_payloads``: dedup key -> stored payload text).
    Compared blind to signing (``content_hash``): a re-signed retry is a duplicate, not a conflict.
    A payload emptied by retention compares as nothing: a duplicate."""
    found = []
    for index in candidates:
        callback = items[index].callback
        stored = stored_payloads.get(callback.dedup_key)
        if stored and content_hash(orjson.loads(stored)) != content_hash(callback.payload):
            found.append(index)
    return found


def conflict_row(item: NewCallback, received_at: dt.datetime) -> dict[str, Any]:
    """The row keeping a conflicting callback: its own dedup key (one row per distinct content),
    state ``conflict`` so no drain applies it."""
    row = item.row(received_at)
    row["dedup_key"] = f"{item.callback.dedup_key}:conflict:{content_hash(item.callback.payload)[:16]}"
    row["state"] = InboxState.CONFLICT.value
    return row


def store_batch(
    connection: Connection, batch: Sequence[NewCallback], *, received_at: dt.datetime
) -> list[Outcome]:
    """Insert a batch; one outcome per callback, in order. The caller commits."""
    prepared = PreparedBatch.of(batch, received_at)
    if not prepared.rows:
        inserted: set[str] = set()
    elif connection.dialect.name == "postgresql":
        params = postgres_insert_params(prepared.rows, received_at)
        inserted = {key for (key,) in connection.exec_driver_sql(POSTGRES_INSERT, params)}
    else:
        stmt = insert_ignoring_conflicts(InboxCallback, connection.dialect.name).returning(
            InboxCallback.dedup_key
        )
        inserted = set(connection.execute(stmt, prepared.rows).scalars())
    signatures = [item.callback.signature for item in prepared.conflicts(inserted)]
    hashes: dict[str, str] = {}
    if signatures:
        found = connection.execute(
            select(InboxCallback.signature, InboxCallback.body_hash).where(
                InboxCallback.signature.in_(signatures)
            )
        )
        hashes = {signature: body for signature, body in found}
    outcomes = prepared.outcomes(inserted, hashes)
    candidates = prepared.duplicates(outcomes)
    if candidates:
        keys = list({batch[i].callback.dedup_key for i in candidates})
        stored = dict(
            connection.execute(
                select(InboxCallback.dedup_key, InboxCallback.payload).where(
                    InboxCallback.dedup_key.in_(keys)
                )
            ).all()
        )
        clashes = conflicting(batch, candidates, stored)
        if clashes:
            connection.execute(
                insert_ignoring_conflicts(InboxCallback, connection.dialect.name),
                [conflict_row(batch[i], received_at) for i in clashes],
            )
            for index in clashes:
                outcomes[index] = "conflict"
    return outcomes


_COLUMNS = (
    ("app_id", "bigint"),
    ("event", "text"),
    ("agent_instance_id", "text"),
    ("sequence", "bigint"),
    ("dedup_key", "text"),
    ("signature", "text"),
    ("body_hash", "text"),
    ("payload", "text"),
    ("content_type", "text"),
    ("callback_ts", "bigint"),
)
# One statement text whatever the batch size (Postgres prepares it once per connection), and one
# parameter: the batch as a JSON document that orjson writes in C and Postgres unpacks in C. Array
# parameters cost ~6x more CPU per row, in psycopg's Python array quoting of the JSON payloads.
POSTGRES_INSERT = (  # noqa: S608 - built from the constant column list above
    "INSERT INTO inbox ({columns}, received_at, state, attempts) "
    "SELECT u.*, %(received_at)s, %(state)s, 0 FROM json_to_recordset(%(rows)s::json) AS u({typed}) "
    "ON CONFLICT DO NOTHING RETURNING dedup_key"
).format(
    columns=", ".join(name for name, _ in _COLUMNS),
    typed=", ".join(f"{name} {kind}" for name, kind in _COLUMNS),
)


def postgres_insert_params(
    rows: list[dict[str, Any]], received_at: dt.datetime, state: InboxState = InboxState.PENDING
) -> dict[str, Any]:
    return {"rows": orjson.dumps(rows).decode(), "received_at": received_at, "state": state.value}


POSTGRES_STORED_BODIES = "SELECT signature, body_hash FROM inbox WHERE signature = ANY(%(signatures)s)"
POSTGRES_STORED_PAYLOADS = "SELECT dedup_key, payload FROM inbox WHERE dedup_key = ANY(%(keys)s)"


def pending_streams(
    session: Session, *, received_before: dt.datetime, now: dt.datetime, limit: int = 1000
) -> list[StreamKey]:
    """Streams with callbacks that should have been applied by now: what the sweeper re-enqueues.

    Longest waiting first: the sweeper skips streams whose message is only late, so the ``limit``
    it reads must not be the same thousand late ones every time while a lost one waits behind."""
    rows = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .where(
            InboxCallback.state == InboxState.PENDING,
            InboxCallback.received_at < received_before,
            or_(InboxCallback.next_attempt_at.is_(None), InboxCallback.next_attempt_at <= now),
        )
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .order_by(func.min(InboxCallback.received_at))
        .limit(limit)
    )
    return [(app_id, instance) for app_id, instance in rows]


def due_counts(session: Session, streams: Sequence[StreamKey], *, now: dt.datetime) -> dict[StreamKey, int]:
    """How many callbacks each of these streams has to apply now (streams with none left out)."""
    if not streams:
        return {}
    rows = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id, func.count())
        .where(
            tuple_(InboxCallback.app_id, InboxCallback.agent_instance_id).in_(list(streams)),
            InboxCallback.state == InboxState.PENDING,
            or_(InboxCallback.next_attempt_at.is_(None), InboxCallback.next_attempt_at <= now),
        )
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
    )
    counts = {(app_id, instance): int(n) for app_id, instance, n in rows}
    return {stream: counts[stream] for stream in streams if stream in counts}


def due_streams(session: Session, streams: Sequence[StreamKey], *, now: dt.datetime) -> list[StreamKey]:
    """Which of these streams have callbacks to apply now: one query instead of a drain each."""
    return list(due_counts(session, streams, now=now))


def all_streams(session: Session) -> list[StreamKey]:
    rows = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .order_by(func.min(InboxCallback.id))
    )
    return [(app_id, instance) for app_id, instance in rows]


def list_callbacks(
    session: Session, *, state: InboxState | None = None, limit: int = 50
) -> list[InboxCallback]:
    query = select(InboxCallback).order_by(InboxCallback.id.desc()).limit(limit)
    if state is not None:
        query = query.where(InboxCallback.state == state)
    return list(session.scalars(query))


def replay_failed(session: Session, *, ids: Iterable[int] | None = None) -> list[StreamKey]:
    """Put parked callbacks back in line (all of them, or the given ids); returns their streams."""
    condition = InboxCallback.state == InboxState.FAILED
    if ids is not None:
        condition = and_(condition, InboxCallback.id.in_(list(ids)))
    streams = session.execute(
        select(InboxCallback.app_id, InboxCallback.agent_instance_id)
        .where(condition)
        .group_by(InboxCallback.app_id, InboxCallback.agent_instance_id)
    ).all()
    session.execute(
        update(InboxCallback)
        .where(condition)
        .values(state=InboxState.PENDING, attempts=0, next_attempt_at=None)
    )
    return [(app_id, instance) for app_id, instance in streams]


def reset_all(session: Session, *, unless: ColumnElement[bool] | None = None) -> None:
    """Mark every callback (but those ``unless`` matches) unapplied again: the first step of a rebuild."""
    statement = update(InboxCallback) if unless is None else update(InboxCallback).where(~unless)
    session.execute(
        statement.values(
            state=InboxState.PENDING,
            attempts=0,
            next_attempt_at=None,
            last_error=None,
            processed_at=None,
        )
    )
