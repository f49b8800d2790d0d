"""HTTP RED metrics for both APIs: one observation per request by route template, and ``GET /metrics``.

``ogp.web.edge`` times each request, reads the status from ``http.response.start`` and hands both to
:class:`RequestMetrics` with the scope, where Starlette's router left the route template. Labels stay bounded
whatever a caller sends: the template, never the raw path; unknown methods become ``OTHER``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import Histogram
from starlette.routing import Match
from starlette.types import Scope

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
    """Observes ``http_server_request_duration_seconds`` of one service's HTTP requests."""

    def __init__(self, service: str):
        self.service = service
        # The labelled children, found once: ``labels()`` costs as much as ``observe()`` itself. Bounded as
        # the labels are (methods x route templates x statuses).
        self._series: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """One request answered ``status`` (500: no response started) after ``seconds``."""
        key = (method_label(scope["method"]), route_label(scope), status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HTTP_REQUEST_DURATION.labels(self.service, key[0], key[1], str(status))
        series.observe(seconds)


def metrics_router() -> APIRouter:
    """``GET /metrics``: Prometheus text format; no auth (like the probes) and never routed by the gateway."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """This process's metrics, for Prometheus to scrape."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    return router
