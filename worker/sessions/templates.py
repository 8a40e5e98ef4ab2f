"""Named agent templates: what an app back end would otherwise repeat in every POST /v1/sessions.

A TOML file (``ROOMWARDEN_TEMPLATES_FILE``) with one table per template::

    [templates.concierge]
    provider = "zego"                  # zego | zego_digital_human | zego_live_digital_human | coze
    app_id = 1234567                   # ZEGO only; optional when one app is configured
    [templates.concierge.agent]        # optional: RegisterAgent body, registered if missing
    AgentId = "concierge"
    Name = "Concierge"
    [templates.concierge.params]       # the vendor request body; the request's params override
    AgentId = "concierge"
    LLM = { Url = "https://...", ApiKey = "...", Model = "..." }

The file is read once, at start-up, and a mistake in it is a start-up error naming the template.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROVIDERS = ("zego", "zego_digital_human", "zego_live_digital_human", "coze")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    provider: str
    app_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] | None = None


def load(path: Path | None) -> dict[str, Template]:
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"cannot read templates file {path}: {exc}") from exc
    tables = raw.get("templates", {})
    if not isinstance(tables, dict):
        raise TemplateError(f"{path}: [templates] must be a table of templates")
    return {name: _template(name, table) for name, table in tables.items()}


def _template(name: str, table: Any) -> Template:
    if not isinstance(table, dict):
        raise TemplateError(f"template {name!r} must be a table")
    unknown = set(table) - {"provider", "app_id", "params", "agent"}
    if unknown:
        raise TemplateError(f"template {name!r}: unknown keys {sorted(unknown)}")
    provider = table.get("provider")
    if provider not in PROVIDERS:
        raise TemplateError(f"template {name!r}: provider must be one of {', '.join(PROVIDERS)}")
    app_id = table.get("app_id")
    if app_id is not None and not isinstance(app_id, int):
        raise TemplateError(f"template {name!r}: app_id must be an integer")
    params = table.get("params", {})
    agent = table.get("agent")
    if not isinstance(params, dict) or (agent is not None and not isinstance(agent, dict)):
        raise TemplateError(f"template {name!r}: params and agent must be tables")
    return Template(name=name, provider=provider, app_id=app_id, params=params, agent=agent)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base`` key by key, nested objects merged, lists replaced."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
