"""A user's erasure: the record ``DELETE /v1/users/{user_id}`` answers with."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from webhooks.contract.common import Model, Time


class ErasureCounts(Model):
    """Rows whose words were removed, per kind (an erasure that found nothing left: all 0)."""

    turns: int = 0
    agent_sentences: int = 0
    payloads: Annotated[int, Field(description="Stored callbacks emptied")] = 0
    user_audio: int = 0
    analyses: Annotated[int, Field(description="Post-call analyses whose summary and data were removed")] = 0
    deliveries_cancelled: Annotated[int, Field(description="Deliveries of worded events not yet made")] = 0
    events: Annotated[int, Field(description="Outbound events whose words were emptied")] = 0


class Erasure(Model):
    id: int
    user_id: str
    user_hash: Annotated[str, Field(description="SHA-256 of the user id: what the erasures log keeps")]
    requested_by: Annotated[str, Field(examples=["api:admin", "cli:alice"])]
    requested_at: Time
    finished_at: Time | None = None
    sessions: Annotated[int, Field(description="The user's sessions")]
    counts: ErasureCounts
    files_scrubbed: Annotated[
        bool,
        Field(
            description="SQLite: FTS segments merged and WAL truncated; Postgres: VACUUM run (vacuum=true)"
        ),
    ]
    erased_anything: Annotated[bool, Field(description="False when an earlier erasure left nothing")]
