"""The APIs' metric labels stay bounded and truthful: route templates, known methods, statuses, webhook outcomes."""

from __future__ import annotations

import asyncio
import re

import pytest
import sqlalchemy.exc
import yaml
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY

from command_api.midtrans.service import InvalidNotification, refusal_outcome
from ogp.errors import NotFound, ServiceUnavailable, Unauthorized
from ogp.settings import REPO_ROOT
from ogp.web.edge import Edge
from ogp.web.metrics import UNMATCHED, method_label, route_label

RED = "http_server_request_duration_seconds"


def _app() -> FastAPI:
    router = APIRouter(prefix="/api/payment")

    @router.get("/transactions/{transaction_id}")
    async def one(transaction_id: str) -> dict:
        return {}

    app = FastAPI()
    app.include_router(router)
    return app


def _scope(path: str, method: str = "GET", **extra) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], **extra}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def test_standard_methods_are_their_own_label(method):
    assert method_label(method) == method


@pytest.mark.parametrize("method", ["FOO", "get", "PROPFIND", "X" * 200])
def test_any_other_method_is_one_label(method):
    assert method_label(method) == "OTHER"


def test_the_route_the_router_chose_gives_its_template():
    class Chosen:
        path_format = "/api/payment/transactions/{transaction_id}"

    assert route_label(_scope("/api/payment/transactions/abc", route=Chosen())) == Chosen.path_format


def test_a_request_refused_before_routing_is_labelled_with_the_route_it_was_for():
    scope = _scope("/api/payment/transactions/abc", app=_app())
    assert route_label(scope) == "/api/payment/transactions/{transaction_id}"
    # A wrong method still names the route (its 405 is that route's).
    assert route_label({**scope, "method": "POST"}) == "/api/payment/transactions/{transaction_id}"


def test_a_path_no_route_serves_is_unmatched_never_the_raw_path():
    assert route_label(_scope("/api/payment/transactions/abc/extra", app=_app())) == UNMATCHED
    assert route_label(_scope("/anything")) == UNMATCHED


def _served(app, scope) -> None:
    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(_: dict) -> None:
        return None

    asyncio.run(Edge(app, service="unit-test")(scope, receive, send))


def _count(route: str, status: str, method: str = "GET") -> float:
    labels = {"service": "unit-test", "method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value(f"{RED}_count", labels) or 0.0


def test_each_request_is_observed_once_with_the_status_it_was_answered():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    before = _count("unmatched", "202", "POST")
    _served(app, _scope("/api/payment/pay", "POST"))
    assert _count("unmatched", "202", "POST") == before + 1


def test_an_exception_no_handler_answered_is_a_500_and_still_raised():
    async def app(scope, receive, send):
        raise RuntimeError("a bug")

    before = _count("unmatched", "500")
    with pytest.raises(RuntimeError):
        _served(app, _scope("/boom"))
    assert _count("unmatched", "500") == before + 1


def test_lifespan_and_other_scopes_are_not_observed():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    _served(app, {"type": "lifespan"})
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    "exc,outcome",
    [
        (InvalidNotification("not JSON"), "invalid"),
        (Unauthorized("invalid signature_key", code="invalid_signature"), "forged"),
        (ServiceUnavailable("retry", code="kafka_unavailable"), "unavailable"),
        (sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("down")), "unavailable"),
        (NotFound("no"), None),
        (RuntimeError("a bug"), None),
    ],
)
def test_each_refused_notification_has_its_outcome(exc, outcome):
    assert refusal_outcome(exc) == outcome


def test_kong_never_routes_metrics_publicly():
    config = yaml.safe_load((REPO_ROOT / "infra" / "kong" / "kong.yml").read_text())
    paths = [path for service in config["services"] for route in service["routes"] for path in route["paths"]]
    assert paths and not [path for path in paths if re.match(path[1:], "/metrics")]
