"""The embedded default's credentials file: private from the first byte, kept across runs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from roomwarden.devsecrets import load_or_create


def test_dev_credentials_are_written_private_and_reused(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = tmp_path / "var" / "dev-credentials.json"
        first = load_or_create(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
        assert load_or_create(path) == first == json.loads(path.read_text())
    finally:
        os.umask(previous)
