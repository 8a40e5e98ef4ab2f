"""What one session's analysis is configured with: settings, then the policy file's overrides.

``ROOMWARDEN_ANALYSIS_URL`` switches analysis on; ``[defaults.analysis]``, ``[apps.N.analysis]``
and ``[templates.T.analysis]`` (worker/postcall/section.py) override it per app and template
(template over app over defaults), as every other policy section does.

The configuration version names the results: an explicit ``version`` key, else a stable hash of
everything that shapes the answer (model, prompts, criteria, schema, context). A prompt change
thus gets a new version, and ``roomwarden analyze`` stores its results beside the old ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from worker.policies.config import PolicyBook
from worker.postcall.section import check_schema
from worker.settings import Settings

DEFAULT_SYSTEM_PROMPT = (
    "You analyse the transcript of a call between a user and a voice agent. "
    "Answer with one JSON object and nothing else."
)


@dataclass(frozen=True)
class AnalysisConfig:
    url: str
    model: str
    system_prompt: str
    criteria: str
    data_schema: dict[str, Any]
    context_tokens: int
    version: str

    def shape(self) -> dict[str, Any]:
        """What the version hashes: everything the answer depends on, the URL and key excepted."""
        return {
            "model": self.model,
            "system_prompt": self.system_prompt,
            "criteria": self.criteria,
            "data_schema": self.data_schema,
            "context_tokens": self.context_tokens,
        }


def version_of(shape: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"h-{digest[:12]}"


def for_session(
    settings: Settings, book: PolicyBook, app_id: int | None, template: str | None
) -> AnalysisConfig | None:
    """The session's analysis configuration, or None when analysis is off for it."""
    section = book.for_session(app_id, template).analysis
    url = section.url or settings.analysis_url
    if not url or not section.enabled:
        return None
    schema = section.data_schema if section.data_schema is not None else settings.analysis_data_schema
    if section.data_schema is None and schema:
        check_schema(schema)
    draft = AnalysisConfig(
        url=url,
        model=section.model or settings.analysis_model,
        system_prompt=section.system_prompt or DEFAULT_SYSTEM_PROMPT,
        criteria=section.criteria if section.criteria is not None else settings.analysis_criteria,
        data_schema=schema or {"type": "object"},
        context_tokens=section.context_tokens or settings.analysis_context_tokens,
        version="",
    )
    version = section.version or version_of(draft.shape())
    return AnalysisConfig(**{**draft.__dict__, "version": version})
