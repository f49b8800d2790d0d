"""One error shape for every API: ``{"error": {"code", "message", "details"}}``, mapped in one place."""

from __future__ import annotations

import logging

import redis.exceptions
import sqlalchemy.exc
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ogp.clients import KafkaUnavailable
from ogp.errors import ApiError, ServiceUnavailable

log = logging.getLogger(__name__)

# A store that cannot be reached (or dropped the connection, or timed out) is the caller's cue to retry, not a
# bug: 503 with Retry-After, never 500. psycopg's OperationalError also covers a cancelled statement and a
# serialization failure, which a retry resolves as well.
DATABASE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Routes whose retry must reuse an id (wallet commands, Midtrans) catch these themselves; for any other
# route a plain retry is safe.
KAFKA_DOWN = (KafkaUnavailable, KafkaError)


def dependency_error(exc: Exception) -> ServiceUnavailable | None:
    """The 503 for an exception that means PostgreSQL, Redis or Kafka is unreachable; None for any other."""
    if isinstance(exc, DATABASE_DOWN):
        return ServiceUnavailable("the database is unavailable; retry later", code="database_unavailable")
    if isinstance(exc, REDIS_DOWN):
        return ServiceUnavailable("redis is unavailable; retry later", code="redis_unavailable")
    if isinstance(exc, KAFKA_DOWN):
        return ServiceUnavailable("the command log is unavailable; retry later", code="kafka_unavailable")
    return None


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def _validation_details(exc: RequestValidationError) -> list[dict]:
    # Never echo the submitted value back: it may be a password.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return JSONResponse(
            error_body("validation_error", "request validation failed", _validation_details(exc)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers or None)

    async def _dependency_down(_: Request, exc: Exception):
        error = dependency_error(exc)
        assert error is not None, "registered below for the dependency-down exceptions only"
        log.warning("dependency unavailable: %s", exc.__class__.__name__)
        return JSONResponse(error_body(error.code, error.message), status_code=503, headers=error.headers)

    for exc_class in (*DATABASE_DOWN, *REDIS_DOWN, *KAFKA_DOWN):
        app.add_exception_handler(exc_class, _dependency_down)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error: %s", exc.__class__.__name__)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource this path names: Starlette's 405 lists only the first matching route's.

    The resource is the path template of the first route that matches (as routing picks it), so
    ``/payments/webhook`` is the webhook (POST), not ``/payments/{payment_id}`` (GET) read with "webhook".
    """
    # Included routers are nested; FastAPI's OpenAPI generator flattens them the same way.
    routes = [route for route in iter_route_contexts(request.app.routes) if route.methods]
    template = next((route.path_format for route in routes if route.matches(request.scope)[0] is not Match.NONE), None)
    # ``or ()`` only for the type checker: every route kept above has methods.
    return sorted({method for route in routes if route.path_format == template for method in route.methods or ()})
