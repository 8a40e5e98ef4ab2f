"""The OpenAPI 3.1 document: every ``/v1`` operation, its parameters, body and answers.

Built once from the contract's models (pydantic writes their JSON Schema, which OpenAPI 3.1
takes as it is) and the table of operations (``operations.py``); ``/openapi.json`` serves it and
``/docs`` renders it. The callback route is in it too, as ZEGO calls it, but stays a raw
Starlette route (no model on its hot path).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from webhooks.contract.common import Error, Ok
from webhooks.contract.operations import ALWAYS, BODY_ERRORS, OPERATIONS, Body, Operation


def _responses(op: Operation, ref: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, answer in op.responses.items():
        if answer is None:
            out[str(status)] = {"description": "No content"}
        elif isinstance(answer, Body):
            content = {
                media: {"schema": ref[schema] if isinstance(schema, type) else schema}
                for media, schema in answer.media.items()
            }
            out[str(status)] = {"description": answer.description, "content": content}
        else:
            out[str(status)] = {
                "description": answer.__doc__ or answer.__name__,
                "content": {"application/json": {"schema": ref[answer]}},
            }
    errors = {**ALWAYS[op.scope], **op.extra_errors}
    if op.params:
        errors.setdefault(400, "A query parameter is invalid (``field`` names it)")
    if op.body is not None:
        errors.update({k: v for k, v in BODY_ERRORS.items() if k not in op.extra_errors})
    if op.idempotency_key:
        errors.setdefault(400, "A query parameter, the body or the Idempotency-Key is invalid")
        errors.setdefault(422, "This Idempotency-Key was used with another body in the last 24 hours")
    for status, description in sorted(errors.items()):
        out.setdefault(
            str(status), {"description": description, "content": {"application/json": {"schema": ref[Error]}}}
        )
    return out


def _operation(op: Operation, ref: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    parameters = [p.as_openapi() for p in op.params]
    if op.idempotency_key:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Retry safely: the same key and body within 24 h get the first answer "
                "again (Idempotent-Replayed: true) and do nothing twice",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
            }
        )
    out: dict[str, Any] = {
        "operationId": op.method + "_" + re.sub(r"[^a-z0-9]+", "_", op.path.lower()).strip("_"),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": _responses(op, ref),
        "security": [{"bearer": []}] if op.scope != "none" else [],
    }
    if op.description:
        out["description"] = op.description
    if op.scope != "none":
        out["x-roomwarden-scope"] = op.scope
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[op.body]}}}
    return out


def _models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {Error.__name__: Error, Ok.__name__: Ok}
    for op in OPERATIONS:
        answers: list[Any] = [*op.responses.values(), op.body]
        answers += [m for a in op.responses.values() if isinstance(a, Body) for m in a.media.values()]
        for answer in answers:
            if isinstance(answer, type) and issubclass(answer, BaseModel):
                found[answer.__name__] = answer
    return list(found.values())


@cache
def document() -> dict[str, Any]:
    models = _models()
    keyed, definitions = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    ref: dict[Any, dict[str, Any]] = {model: schema for (model, _mode), schema in keyed.items()}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, ref)
    for path, operation_id, summary in (
        (
            "/callbacks/zego",
            "post_callbacks_zego",
            "ZEGO's callbacks (signed by ZEGO; not for clients)",
        ),
        (
            "/callbacks/zego-rtc",
            "post_callbacks_zego_rtc",
            "ZEGO's RTC room callbacks: room_login, room_logout, stream_create, stream_close "
            "(signed by ZEGO; not for clients)",
        ),
    ):
        paths[path] = _callback_operation(operation_id, summary, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "roomwarden",
            "version": _version(),
            "description": "The back end beside hosted voice and digital-human AI agents. Bearer tokens: "
            "ROOMWARDEN_API_TOKEN (admin) and ROOMWARDEN_READ_TOKEN (read). Errors are "
            "`{error, detail, field?}`.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": t}
            for t in (
                "sessions",
                "control",
                "policies",
                "analysis",
                "events",
                "endpoints",
                "privacy",
                "ingest",
            )
        ],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _callback_operation(operation_id: str, summary: str, ref: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["ingest"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "Stored (or already stored)",
                    "content": {"application/json": {"schema": ref[Ok]}},
                },
                **{
                    str(s): {"description": d, "content": {"application/json": {"schema": ref[Error]}}}
                    for s, d in {
                        400: "Malformed",
                        401: "Bad, stale or replayed signature",
                        408: "Body too slow",
                        413: "Body too large",
                        503: "The database cannot store it now; ZEGO retries",
                    }.items()
                },
            },
            "security": [],
        }
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("roomwarden")
    except PackageNotFoundError:
        return "0.0.0"
