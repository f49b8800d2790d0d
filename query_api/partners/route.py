"""An APIRoute that records every partner request made with a known key, whatever its answer."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ogp.errors import ApiError
from ogp.metrics import PARTNER_REQUESTS
from ogp.web.client_ip import client_ip
from ogp.web.errors import dependency_error
from query_api.partners.access_log import AccessLogPublisher, access_event


def _publisher(request: Request) -> AccessLogPublisher:
    return request.app.state.access_logs  # made and closed by the app's lifespan (query_api.app)


class PartnerRoute(APIRoute):
    """Wraps the handler (dependencies included) to see the status, add RateLimit-* and log the access."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def logged(request: Request) -> Response:
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                response.headers.update(getattr(request.state, "rate_limit_headers", None) or {})
                return response
            except ApiError as exc:
                status = exc.status_code
                if headers := getattr(request.state, "rate_limit_headers", None):
                    exc.headers = {**headers, **(exc.headers or {})}
                raise
            except RequestValidationError:
                status = 422
                raise
            except HTTPException as exc:
                status = exc.status_code
                raise
            except Exception as exc:
                # The status the error handlers will answer with: 503 for a store that is down.
                status = 503 if dependency_error(exc) is not None else 500
                raise
            finally:
                _record(request, status)

        return logged


UNKNOWN_KEY = "unknown"  # the key_id label of a request with no usable key (missing, malformed or unknown)


def _record(request: Request, status: int) -> None:
    key = getattr(request.state, "partner_key", None)
    # A presented secret never becomes a label: only the id of a key we know (bounded by the keys issued).
    PARTNER_REQUESTS.labels(UNKNOWN_KEY if key is None else key.id, str(status)).inc()
    if key is None or not request.app.state.settings.access_logs_enabled:
        return
    event = access_event(
        key.id,
        key.external_service_id,
        request.url.path,
        request.method,
        client_ip(request),
        request.headers.get("user-agent"),
        status,
    )
    if event is not None:
        _publisher(request).publish(event)
