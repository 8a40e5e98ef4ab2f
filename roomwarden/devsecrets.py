"""Credentials for the embedded default, so that ``roomwarden run`` works with nothing configured.

They are random, made once per checkout under ``var/``, and used only for what the environment
leaves unset, and only with the embedded SQLite database. A Postgres database means production,
maybe several hosts: secrets made up on one host could not unseal what another sealed, so there
``roomwarden run`` refuses to start without its own (``worker.settings.require_production``).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet

from worker.settings import VAR_DIR

DEV_FILE = VAR_DIR / "dev-credentials.json"
DEMO_APP_ID = 1000000001
DEMO_COZE_BOT = "7348293334459310001"


def _fresh() -> dict[str, str]:
    return {
        "ROOMWARDEN_ZEGO_APP_ID": str(DEMO_APP_ID),
        "ROOMWARDEN_ZEGO_CALLBACK_SECRET": secrets.token_hex(16),
        "ROOMWARDEN_ZEGO_SERVER_SECRET": secrets.token_hex(16),
        "ROOMWARDEN_API_TOKEN": secrets.token_urlsafe(24),
        "ROOMWARDEN_READ_TOKEN": secrets.token_urlsafe(24),
        "ROOMWARDEN_SECRET_KEY": Fernet.generate_key().decode(),
        "ROOMWARDEN_COZE_TOKEN": f"pat_{secrets.token_urlsafe(24)}",
    }


def load_or_create(path: Path = DEV_FILE) -> dict[str, str]:
    """The checkout's dev credentials; a file from an older version gains the keys it lacks."""
    values = dict(json.loads(path.read_text())) if path.exists() else {}
    missing = {k: v for k, v in _fresh().items() if k not in values}
    if missing:
        values.update(missing)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        # Private from the first byte: written to a 0600 file of its own, then moved into place.
        fresh = path.with_name(f".{path.name}.{os.getpid()}")
        fresh.unlink(missing_ok=True)  # left by a crash, maybe with other permissions
        descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(json.dumps(values, indent=2))
        os.replace(fresh, path)
    return values


def apply_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Fill in the dev credentials the environment does not set; returns the resulting environment."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("ROOMWARDEN_DATABASE_URL", "sqlite").startswith("sqlite"):
        return env  # production: nothing invented (see the module's docstring)
    if "ROOMWARDEN_ZEGO_APPS" in env or "ROOMWARDEN_ZEGO_CALLBACK_SECRET" in env:
        keep = ("ROOMWARDEN_API_TOKEN", "ROOMWARDEN_READ_TOKEN", "ROOMWARDEN_SECRET_KEY")
        dev = {k: v for k, v in load_or_create().items() if k in keep}
    else:
        dev = load_or_create()
    for key, value in dev.items():
        env.setdefault(key, value)
    return env
