"""Dockerfile and compose.yaml run exactly the Procfile's processes with variables Settings knows.

This machine has no container engine with images, so the files are checked as text and the
image's entrypoint (scripts/run-process) is run here as the image would run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
# Variables the Procfile's own command lines read, and the two the entrypoint reads.
RUNTIME = set(re.findall(r"\$\{(\w+)", "".join(PROCFILE.values()))) | {"PROCESS", "PROMETHEUS_MULTIPROC_DIR"}
ROOMWARDEN = {f"ROOMWARDEN_{name.upper()}" for name in Settings.model_fields}


def known(variable: str) -> bool:
    return variable in ROOMWARDEN or variable in RUNTIME


def test_compose_runs_every_procfile_process_and_nothing_else() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    ours = {name: s for name, s in compose["services"].items() if s.get("image") == "roomwarden:latest"}
    assert sorted(s["environment"]["PROCESS"] for s in ours.values()) == sorted(PROCFILE)
    for name, service in ours.items():
        assert "command" not in service and "entrypoint" not in service, f"{name} must run the Procfile line"
        unknown = [v for v in service["environment"] if not known(v)]
        assert unknown == [], f"{name} sets variables roomwarden does not read: {unknown}"


def test_the_image_enters_through_the_procfile_and_sets_only_known_variables() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/app/scripts/run-process"]' in dockerfile
    env_block = re.search(r"^ENV (.+?)(?=^\S)", dockerfile, re.S | re.M)
    assert env_block is not None
    names = re.findall(r"(\w+)=", env_block.group(1))
    assert names and all(known(n) or n.startswith("PIP_") or n == "PYTHONUNBUFFERED" for n in names), names
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"


def test_the_entrypoint_runs_the_procfile_line_it_is_named(tmp_path: Path) -> None:
    """`release` is `alembic upgrade head`: run through the entrypoint, the database is migrated."""
    database = tmp_path / "release.sqlite3"
    # The image has the project's commands on PATH; here they are beside this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "ROOMWARDEN_DATABASE_URL": f"sqlite:///{database}",
        "PROCESS": "release",
    }
    done = subprocess.run(
        [ROOT / "scripts" / "run-process"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with create_engine(f"sqlite:///{database}").connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_the_entrypoint_refuses_a_process_the_procfile_does_not_name() -> None:
    done = subprocess.run([ROOT / "scripts" / "run-process", "nonesuch"], capture_output=True, text=True)
    assert done.returncode == 64 and "no process 'nonesuch'" in done.stderr
