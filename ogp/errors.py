"""The errors of One Gate Payment: the API errors (an HTTP status and a stable code each), and the operator's
failures that the CLI reports as one line. Mapping them to responses is ``ogp.web.errors``'s job."""

from __future__ import annotations

RETRY_AFTER_SECONDS = "1"


class OperatorError(RuntimeError):
    """An expected operational failure (a program missing, a server that would not start, a topic of the wrong
    shape): the CLI prints its message, which says what to do, as one line and exits 1, never a traceback."""


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details=None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details
        self.headers = headers
        if status_code is not None:
            self.status_code = status_code


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "authentication required", **kw):
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unprocessable(ApiError):
    status_code = 422
    code = "unprocessable"


class TooManyRequests(ApiError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, **kw):
        kw["headers"] = {"Retry-After": RETRY_AFTER_SECONDS, **(kw.get("headers") or {})}
        super().__init__(message, **kw)
