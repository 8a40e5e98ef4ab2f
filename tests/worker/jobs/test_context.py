"""A worker process builds its job context once; a test or command can run tasks against its own."""

from __future__ import annotations

import os
from pathlib import Path

from worker.jobs import context
from worker.jobs.context import JobContext
from worker.sealing import secret_paths
from worker.settings import Settings


def _settings(tmp_path: Path, **extra: str | None) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'ctx.sqlite3'}", **extra)  # type: ignore[arg-type]


def test_the_context_is_built_once_and_reused_by_every_task(tmp_path: Path) -> None:
    """Two tasks in one process share the vendor clients (their connections and rate limiter)."""
    job = JobContext.from_settings(_settings(tmp_path))
    with context.installed(job):
        assert context.current() is job
        assert context.current().vendors is job.vendors
    job.close()


def test_a_context_installed_for_a_test_is_taken_back_afterwards(tmp_path: Path) -> None:
    outer = JobContext.from_settings(_settings(tmp_path))
    inner = JobContext.from_settings(_settings(tmp_path))
    with context.installed(outer), context.installed(inner):
        assert context.current() is inner
    with context.installed(outer):
        assert context.current() is outer
    outer.close()
    inner.close()


def test_a_forked_process_never_uses_its_parents_context(tmp_path: Path) -> None:
    """A context made before a fork holds the parent's connections: the child builds its own."""
    parent = JobContext.from_settings(_settings(tmp_path))
    with context.installed(parent):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether it got a fresh context
            fresh = context.current() is not parent and context.current().pid == os.getpid()
            os.write(write, b"fresh" if fresh else b"stale")
            os._exit(0)
        os.close(write)
        answer = os.read(read, 16)
        os.waitpid(pid, 0)
    assert answer == b"fresh"
    parent.close()


def test_the_sealer_exists_only_with_a_secret_key(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    assert JobContext.from_settings(_settings(tmp_path, secret_key=None)).sealer is None
    sealed = JobContext.from_settings(_settings(tmp_path, secret_key=Fernet.generate_key().decode()))
    assert sealed.sealer is not None
    body = {"LLM": {"ApiKey": "sk-1"}}
    closed = sealed.sealer.seal(body, secret_paths(body))
    assert closed != body and sealed.sealer.unseal(closed) == body
