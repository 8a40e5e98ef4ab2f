"""After words are removed from the tables, what the database files may still hold of them.

SQLite (``PRAGMA secure_delete`` is on for every connection, worker/db.py, so freed and
overwritten cells are zeroed where they are written):

- the FTS5 index of ``turns`` records a removal as a tombstone in a new segment; the old
  segment with the removed trigrams stays until segments merge. ``optimize`` merges them all
  into one now, so the removed tokens leave the file;
- in WAL mode the changed pages go to the ``-wal`` file first, and the older frames in it may
  still hold the old text. ``wal_checkpoint(TRUNCATE)`` copies the new pages into the database
  file and truncates the WAL to nothing. It cannot finish while another connection (the
  receiver, a worker) reads an older snapshot, so it is retried for a few seconds, and
  :func:`scrub` says whether it got there.

Postgres keeps an updated row's old version as a dead tuple until VACUUM (or autovacuum)
reclaims it, and the index entries pointing to it likewise; :func:`scrub` runs a plain
``VACUUM`` on the touched tables when asked. What VACUUM does not reach (free space it leaves
in the files, the WAL, base backups, replicas' own dead tuples until they replay, logical
dumps already taken) is in docs/erasure.md.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

TOUCHED = ("turns", "agent_sentences", "inbox", "outbox_events", "user_audio", "deliveries")
CHECKPOINT_TRIES = 50
CHECKPOINT_PAUSE = 0.1


def scrub(engine: Engine, *, vacuum: bool = False) -> bool:
    """Clean the files after a removal; True when done (SQLite: merged and truncated; Postgres:
    vacuumed, which happens only when ``vacuum`` is asked)."""
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
        return truncate_wal(engine)
    if not vacuum:
        return False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM {', '.join(TOUCHED)}")
    return True


def truncate_wal(engine: Engine) -> bool:
    """Checkpoint the whole WAL into the database file and truncate it; False if readers kept it."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        for _ in range(CHECKPOINT_TRIES):
            busy, _log, _done = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return True
            time.sleep(CHECKPOINT_PAUSE)
        return False
    finally:
        raw.close()
