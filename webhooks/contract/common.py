"""Shapes every route shares: errors, times, the bearer token."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Time = dt.datetime  # ISO 8601 with an offset (UTC), as every time in the API is written
Json = dict[str, Any]


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")  # answers may gain fields; clients ignore what they do not know


class FieldError(Model):
    field: str
    message: str


class Error(Model):
    """Every error answer: a stable machine code, a sentence for people, and what it concerns."""

    error: Annotated[str, Field(examples=["not_found", "invalid_query", "idempotency_key_reused"])]
    detail: str
    field: str | None = None
    errors: list[FieldError] | None = None
    session_id: str | None = None


class Ok(Model):
    status: str
