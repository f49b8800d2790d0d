"""What both APIs' OpenAPI documents say about errors: one error shape, and every status a route can answer.

Routes document their own refusals with :func:`errors` (``404``: which thing was not found, ``409``, ...).
The statuses that the shared web layer adds to every route (the input guard's 400, the body limit's 413,
validation's 422, an unusable credential's 401, a store that is down's 503) are added here, in one place,
so that no route can forget one; FastAPI's own 422 schema, which is not our shape, is replaced.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from ogp.web.input_guard import MAX_JSON_DEPTH

_REF = "#/components/schemas/ErrorResponse"
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_METHODS = ("get", "put", "post", "delete", "patch")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable and machine-readable, e.g. `validation_error`")
    message: str = Field(description="for people; may change")
    details: Any = Field(default=None, description="code-specific; null when there is nothing to add")


class ErrorResponse(BaseModel):
    """Every error of both APIs."""

    error: ErrorDetail


def errors(descriptions: dict[int, str], *, retry_after: tuple[int, ...] = ()) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for errors in the common shape: ``errors({404: "`payment_not_found`"})``.

    Statuses in ``retry_after`` document the Retry-After header they always carry.
    """
    return {
        status: {
            "model": ErrorResponse,
            "description": text,
            **({"headers": RETRY_AFTER} if status in retry_after else {}),
        }
        for status, text in descriptions.items()
    }


_SHARED = {
    400: f"`invalid_text`: a path segment, query value, header or JSON string holds U+0000 or an unpaired "
    f"surrogate; `body_too_deep`: JSON nested deeper than {MAX_JSON_DEPTH} levels",
    401: "the credentials are missing, malformed, expired or revoked",
    413: "`payload_too_large`: the body exceeds 64 KiB",
    422: "`validation_error`: a parameter or the body does not match this schema (`details` names each field)",
    503: "`database_unavailable`, `redis_unavailable`: a store this route needs is down; `overloaded`: the "
    "process is working on as many requests as it takes at once, and read or recorded nothing of this one; "
    "retry after Retry-After seconds",
}


def _add(responses: dict, status: int, text: str, *, headers: dict | None = None) -> None:
    entry = responses.setdefault(str(status), {"description": ""})
    if headers:
        entry.setdefault("headers", {}).update(headers)
    content = entry.setdefault("content", {}).setdefault("application/json", {})
    schema = content.get("schema") or {}
    if schema and schema.get("$ref") not in (_REF, "#/components/schemas/HTTPValidationError"):
        return  # the route answers this status with a model of its own (/ready's Readiness), not an error
    content["schema"] = {"$ref": _REF}
    entry["description"] = f"{entry['description']}; {text}" if entry["description"] else text


def document_shared_errors(schema: dict) -> dict:
    """Add the shared layer's error statuses to every operation of an OpenAPI document (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    shape = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(shape.pop("$defs"))
    components["ErrorResponse"] = shape
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            _add(responses, 400, _SHARED[400])
            if "422" in responses:  # FastAPI's own validation, or a route's (exact_json_body): our shape
                _add(responses, 422, _SHARED[422])
            if operation.get("requestBody"):
                _add(responses, 413, _SHARED[413])
            if operation.get("security"):
                _add(responses, 401, _SHARED[401])
            if path != "/health":
                _add(responses, 503, _SHARED[503], headers=RETRY_AFTER)
            for status, entry in responses.items():
                # Errors without a model of their own are in the common shape (FastAPI leaves them bare).
                if status[0] in "45" and not entry.get("content"):
                    entry["content"] = {"application/json": {"schema": {"$ref": _REF}}}
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with the shared errors added."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_shared_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the schema builder
