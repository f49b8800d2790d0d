"""HTTP adapters of the wallet commands: exact JSON bodies, the Idempotency-Key and Prefer headers.

Bodies are read raw and decoded with :func:`~command_api.payments.amounts.loads_exact` instead of by
FastAPI, whose JSON decoding turns ``12345.67`` into a float before any validator sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from command_api.payments import idempotency
from command_api.payments.amounts import InvalidJson, loads_exact
from command_api.payments.requests import StrictRequest
from ogp.clients import KafkaProducerManager
from ogp.errors import ApiError

M = TypeVar("M", bound=BaseModel)
MAX_WAIT_SECONDS = 10
_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d{1,6})\"?\s*$", re.IGNORECASE)
# Visible ASCII, inner spaces allowed (HTTP trims the outer ones anyway): the IETF draft's sf-string.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7E]+(?: +[\x21-\x7E]+)*$"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "unique per intended operation: a retry with the same key and body is answered as the first "
    "request was, and appends nothing",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
        "examples": ["5f0c2a9e-7d1b-4b55-9a57-2f4f1c7f6a10"],
    },
}
# What FastAPI documented for ``Header(alias="Prefer")`` when the wallet commands declared it one.
PREFER_PARAMETER = {
    "in": "header",
    "name": "Prefer",
    "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Prefer"},
}


def exact_json_body(model: type[M]) -> Callable:
    """A dependency validating the raw body as ``model``; 422 (``validation_error``) like FastAPI's own."""

    async def dependency(request: Request) -> M:
        try:
            data = loads_exact(await request.body())
        except InvalidJson as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)}]) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
            ) from None

    return dependency


def openapi_body(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting a body that :func:`exact_json_body` reads (FastAPI cannot see it)."""
    schema = _inline_defs(model.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline_defs(schema: dict) -> dict:
    # pydantic's "#/$defs/..." would point at the root of the OpenAPI document, where nothing is defined.
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        own = {key: inline(value) for key, value in node.items() if key != "$ref"}
        ref = node.get("$ref")
        if ref is None:
            return own
        if ref.startswith("#/$defs/"):
            return {**inline(defs[ref.removeprefix("#/$defs/")]), **own}
        return {**own, "$ref": ref}

    return inline(schema)


def openapi_command(model: type[BaseModel], *, key_required: bool = True, prefer: bool = False) -> dict:
    """``openapi_extra`` of a command route: its exact JSON body and the Idempotency-Key header (and ``Prefer``,
    for a route that reads it with :func:`wallet_command_input`)."""
    key = IDEMPOTENCY_KEY_PARAMETER | {"required": key_required}
    return openapi_body(model) | {"parameters": [PREFER_PARAMETER, key] if prefer else [key]}


async def _idempotency_key(
    # Read here, documented by IDEMPOTENCY_KEY_PARAMETER: required there, but answered with our own 400 codes.
    key: Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)] = None,
) -> str:
    return _required_key(key)


def _required_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise ApiError("the Idempotency-Key header is required for commands", code="idempotency_key_required")
    return _checked_key(key)


async def _optional_idempotency_key(
    # Documented by openapi_command(..., key_required=False).
    key: Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)] = None,
) -> str | None:
    return None if key is None else _checked_key(key)


def _checked_key(key: str) -> str:
    if len(key) > idempotency.MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ApiError(
            f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} visible ASCII characters",
            code="idempotency_key_invalid",
        )
    return key


def parse_wait(prefer: str | None) -> int | None:
    """Seconds asked for by ``Prefer: wait=N`` (RFC 7240), clamped to 10; None if absent or not positive."""
    for preference in (prefer or "").split(","):
        if match := _WAIT.match(preference.split(";")[0]):
            seconds = int(match.group(1))
            return min(seconds, MAX_WAIT_SECONDS) if seconds > 0 else None
    return None


def fingerprint(request: Request, body: StrictRequest) -> str:
    """The request hash an Idempotency-Key is bound to: method, path and the canonical body."""
    return idempotency.request_hash(request.method, request.url.path, body.canonical())


def answer_response(answer: idempotency.Answer, location: str | None = None) -> JSONResponse:
    """An idempotent request's answer, with its Location and, when it is a replay, ``Idempotent-Replayed``."""
    headers = {"Location": location} if location else {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


@dataclass(frozen=True)
class WalletCommandInput:
    """What a wallet command's request carries besides the caller: its key, body and ``Prefer: wait``."""

    key: str
    body: Any  # the route's model
    wait: int | None


def wallet_command_input(model: type[M]) -> Callable:
    """A dependency reading a wallet command's Idempotency-Key, exact JSON body and ``Prefer: wait``, in that order.

    One node where there were three (the key's, the body's and ``Prefer``'s, whose errors came in that order
    too): FastAPI resolves each node of a route's dependency tree, and each header parameter, on every
    request. Document the route with ``openapi_command(model, prefer=True)``.
    """
    read_body = exact_json_body(model)

    async def dependency(request: Request) -> WalletCommandInput:
        headers = request.headers
        key = _required_key(headers.get("idempotency-key"))
        body = await read_body(request)
        return WalletCommandInput(key, body, parse_wait(headers.get("prefer")))

    return dependency


async def _kafka(request: Request) -> KafkaProducerManager:
    return request.app.state.clients.kafka


IdempotencyKey = Annotated[str, Depends(_idempotency_key)]
OptionalIdempotencyKey = Annotated[str | None, Depends(_optional_idempotency_key)]
Kafka = Annotated[KafkaProducerManager, Depends(_kafka)]
