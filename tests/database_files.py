"""The bytes of a SQLite database's files, read without breaking the connections that use them.

SQLite locks with POSIX advisory locks, and closing *any* descriptor of a file drops every lock
the process holds on it, its open connections' included (sqlite.org/howtocorrupt.html, 2.2).
A ``Path.read_bytes()`` in the test process therefore left the session's pooled connections
unlocked: another process closing its last connection took the exclusive lock, checkpointed and
deleted the WAL under them, and later tests read stale rows, got "disk I/O error", then
"database disk image is malformed". Another process reads the files instead: its descriptors
and their locks are its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def sqlite_file_bytes(database: str | Path) -> bytes:
    """The main file and its write-ahead log, concatenated: whatever is committed is in one of them."""
    paths = [str(p) for p in (Path(database), Path(f"{database}-wal")) if p.exists()]
    return subprocess.run(["cat", *paths], check=True, capture_output=True).stdout
