"""The ``analysis`` section of the policy file: per-app and per-template analysis overrides.

Kept apart from ``worker.postcall.config`` so the policy file (worker/policies/config.py) can
hold it without importing the analysis itself. Every key is optional; unset keys fall back to
the settings (``ROOMWARDEN_ANALYSIS_*``)::

    [defaults.analysis]
    enabled = true
    model = "gpt-4o-mini"
    version = "v2"                # else a hash of the effective configuration
    criteria = "The caller's question was answered and no follow-up is needed."
    data_schema = { type = "object", properties = { city = { type = "string" } } }
    context_tokens = 8000

The API key is never in the policy file: only ``ROOMWARDEN_ANALYSIS_API_KEY`` holds it.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator


class AnalysisSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    url: str | None = None
    model: str | None = None
    version: str | None = Field(None, min_length=1, max_length=64)
    system_prompt: str | None = None
    criteria: str | None = None
    data_schema: dict[str, Any] | None = None
    context_tokens: int | None = Field(None, ge=200)

    @field_validator("data_schema")
    @classmethod
    def _a_valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value


def check_schema(schema: dict[str, Any]) -> None:
    """A schema the model can be held to; raises ValueError naming what is wrong with it."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"data_schema is not a valid JSON Schema: {exc.message}") from None
