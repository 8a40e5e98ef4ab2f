"""A roomwarden deployment a scenario may break: receiver, worker, beat and outbound worker as real
processes, each in a process group of its own (so ``kill -9`` takes a worker's pool processes
too), the apps' endpoint (a real HTTP server recording what it gets), and the database engine
the comparison reads through. The same class serves the pytest module and ``bench/chaos``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from sqlalchemy import Engine

from tests.chaos.harness import APPS, App
from tests.processes import Process, Stack, stack_env
from tests.sinks import Sink
from worker.db import make_engine

# Deliveries in a hurry: a restarted outbound worker or a refused attempt costs a test seconds.
OUTBOUND_ENV = {
    "ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE": "true",
    "ROOMWARDEN_OUTBOUND_INTERVAL_SECONDS": "0.3",
    "ROOMWARDEN_DELIVERY_RETRY_SCHEDULE": "[0.5, 0.5, 1, 1, 2, 2, 5]",
    "ROOMWARDEN_DELIVERY_TIMEOUT_SECONDS": "2",
    "ROOMWARDEN_DELIVERY_BUDGET_SECONDS": "2",
}


def apps_env(apps: Sequence[App]) -> dict[str, str]:
    """Every app but the first (which ``stack_env`` configures) through ROOMWARDEN_ZEGO_APPS."""
    more = {str(a.app_id): {"callback_secret": a.callback_secret} for a in apps[1:]}
    return {"ROOMWARDEN_ZEGO_APPS": json.dumps(more)} if more else {}


class ChaosDeployment:
    def __init__(
        self,
        directory: Path,
        database_url: str,
        redis_url: str,
        *,
        env: Mapping[str, str] | None = None,
        apps: Sequence[App] = APPS,
        port: int | None = None,
    ) -> None:
        from tests.conftest import API_TOKEN

        directory.mkdir(parents=True, exist_ok=True)
        environment = {**stack_env(database_url, redis_url), **apps_env(apps), **OUTBOUND_ENV, **(env or {})}
        self.stack = Stack(directory, environment, port=port)
        for process in self.processes:
            process.own_group = True
        self.url = self.stack.url
        self.engine: Engine = make_engine(database_url, pool_size=2)
        self.sink = Sink().start()
        self.api = httpx.Client(
            base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    @property
    def processes(self) -> tuple[Process, ...]:
        return (self.stack.receiver, self.stack.worker, self.stack.beat, self.stack.outbound)

    def start(self, *, worker: bool = True, beat: bool = True) -> ChaosDeployment:
        """Everything at once (they boot side by side); the endpoint is registered through the
        receiver's API before a callback is sent."""
        self.stack.outbound.start()
        if worker:
            self.stack.worker.start()
        if beat:
            self.stack.beat.start()
        self.stack.start_receiver()
        made = self.api.post("/v1/endpoints", json={"url": self.sink.url})
        assert made.status_code == 201, made.text
        return self

    def restart_receiver(self) -> None:
        """A new receiver on the same port, as a supervisor would start it."""
        self.stack.start_receiver()

    def alive(self) -> list[str]:
        return [p.name for p in self.processes if p.proc is not None and p.proc.poll() is None]

    def logs(self) -> str:
        return self.stack.logs()

    def stop(self) -> None:
        """kill -9 of everything: nothing is left to finish once the comparison is made."""
        try:
            for process in self.processes:
                process.kill()
        finally:
            self.sink.stop()
            self.api.close()
            self.engine.dispose()
