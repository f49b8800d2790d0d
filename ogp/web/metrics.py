"""HTTP RED metrics for both APIs: one observation per request by route template, and ``GET /metrics``.

A pure ASGI middleware (no BaseHTTPMiddleware task group on the command API's hot path): it times the request,
reads the status from ``http.response.start`` and the route template Starlette's router left in the scope.
Labels stay bounded whatever a caller sends: the template, never the raw path; unknown methods become ``OTHER``.
"""

from __future__ import annotations

from time import perf_counter

from fastapi import APIRouter, FastAPI, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ogp.metrics import HTTP_REQUEST_DURATION, exposition

UNMATCHED = "unmatched"  # the route label of a request no route matches (404s, probes of random paths)
OTHER_METHOD = "OTHER"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a label: one of the standard methods, or ``OTHER`` (a caller must not mint label values)."""
    return method if method in _METHODS else OTHER_METHOD


def route_label(scope: Scope) -> str:
    """The template of the route that served (or would have served) the request, or ``unmatched``.

    The router records the route it chose in the scope. A request refused before routing (413 by the body
    limit, 400 by the input guard) has none: its route is looked up here, off the common path, among the
    included routers flattened as ``ogp.web.errors`` does for 405s.
    """
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        routes = iter_route_contexts(app.routes) if isinstance(app, FastAPI) else ()
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else UNMATCHED


class RequestMetrics:
    """ASGI middleware: observes ``http_server_request_duration_seconds`` once per HTTP request."""

    def __init__(self, app: ASGIApp, service: str):
        self.app = app
        self.service = service
        # The labelled children, found once: ``labels()`` costs as much as ``observe()`` itself. Bounded as
        # the labels are (methods x route templates x statuses).
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # unless a response starts: an exception that no handler answered

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._series_of(scope, status).observe(perf_counter() - started)

    def _series_of(self, scope: Scope, status: int) -> Histogram:
        key = (method_label(scope["method"]), route_label(scope), status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HTTP_REQUEST_DURATION.labels(self.service, key[0], key[1], str(status))
        return series


def metrics_router() -> APIRouter:
    """``GET /metrics``: Prometheus text format; no auth (like the probes) and never routed by the gateway."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """This process's metrics, for Prometheus to scrape."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    return router
