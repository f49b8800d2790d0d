"""The one edge layer of both APIs: each refusal in its order, with the correlation id and metrics every answer has;
the request's trace context however the caller's trace is carried; the hot routes' folded dependencies."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator, default_getter, default_setter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, format_trace_id
from prometheus_client import REGISTRY
from pydantic import BaseModel

from command_api.payments.web import WalletCommandInput, openapi_command, wallet_command_input
from ogp.security.current_user import CurrentUser
from ogp.settings import Settings
from ogp.web.app import build_app
from ogp.web.edge import Edge, set_aside
from ogp.web.errors import install_error_handlers

SERVICE = "edge-unit-test"


class _Answered:
    """What an app behind the edge was given and what the client got."""

    def __init__(self) -> None:
        self.app_ran = False
        self.app_body = b""
        self.messages: list[dict] = []

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def error(self) -> dict:
        return json.loads(self.messages[1]["body"])["error"]


def _through_edge(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes] = (), query: bytes = b"", max_bytes: int = 10
) -> _Answered:
    answered = _Answered()
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]

    async def app(scope, receive, send):
        answered.app_ran = True
        while (message := await receive())["type"] == "http.request":
            answered.app_body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        answered.messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/p", "query_string": query, "headers": headers}
    asyncio.run(Edge(app, service=SERVICE, max_bytes=max_bytes)(scope, receive, send))
    return answered


def _observed(status: int) -> float:
    labels = {"service": SERVICE, "method": "POST", "route": "unmatched", "status": str(status)}
    return REGISTRY.get_sample_value("http_server_request_duration_seconds_count", labels) or 0.0


def test_a_body_sent_past_the_limit_without_a_length_is_refused_413_before_the_app_runs():
    before = _observed(413)
    answered = _through_edge([(b"transfer-encoding", b"chunked")], [b"123456", b"789012"])
    assert answered.status == 413 and answered.error["code"] == "payload_too_large"
    assert not answered.app_ran
    # Refusals are answers like any other: their correlation id, their observation.
    assert len(answered.headers[b"x-correlation-id"]) == 32
    assert _observed(413) == before + 1


def test_the_declared_size_is_judged_before_the_text_so_an_oversized_body_is_413_whatever_it_holds():
    answered = _through_edge([(b"content-length", b"11"), (b"x-note", b"a\x00b")], [b"x" * 11])
    assert answered.status == 413 and not answered.app_ran


@pytest.mark.parametrize(
    ("headers", "query", "where"),
    [([(b"x-note", b"a\x00b")], b"", "header"), ([], b"q=a%00b", "query")],
)
def test_a_nul_in_a_header_or_the_query_is_refused_400_saying_where(headers, query, where):
    answered = _through_edge(headers, query=query)
    assert answered.status == 400 and answered.error == {
        "code": "invalid_text",
        "message": "text must not contain U+0000",
        "details": {"where": where},
    }


def test_a_body_within_the_limit_is_checked_then_given_to_the_app_whole():
    answered = _through_edge([(b"content-length", b"10")], [b'{"a":', b' "b"}'])
    assert answered.status == 200 and answered.app_body == b'{"a": "b"}'
    refused = _through_edge([(b"content-length", b"10")], [b'["\\u0000"]'], max_bytes=64)
    assert refused.status == 400 and refused.error["details"] == {"where": "body"} and not refused.app_ran


def test_the_callers_first_sane_correlation_id_is_kept_and_an_insane_one_replaced():
    kept = _through_edge([(b"x-correlation-id", b"abc-12345"), (b"x-correlation-id", b"other-123")])
    assert kept.headers[b"x-correlation-id"] == b"abc-12345"
    replaced = _through_edge([(b"x-correlation-id", b"no spaces allowed")])
    assert replaced.headers[b"x-correlation-id"] != b"no spaces allowed"


class _HeaderTrace(TextMapPropagator):
    """A propagator reading a header its ``fields`` do not name (as B3's extract reads ``b3``)."""

    def extract(self, carrier, context=None, getter=default_getter):
        [value] = getter.get(carrier, "x-my-trace") or [None]
        if value is None:
            return context if context is not None else otel_context.get_current()
        parent = SpanContext(int(value, 16), 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return trace.set_span_in_context(NonRecordingSpan(parent), context)

    def inject(self, carrier, context=None, setter=default_setter):
        pass

    @property
    def fields(self):
        return {"x-other"}


def _trace_id_seen(headers: list[tuple[bytes, bytes]]) -> str:
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(format_trace_id(trace.get_current_span().get_span_context().trace_id))

    scope = {"type": "http", "method": "GET", "path": "/p", "headers": headers}
    asyncio.run(Edge(app, service=SERVICE, provider=TracerProvider())(scope, None, None))
    return seen[0]


def test_a_propagator_that_reads_other_headers_than_its_fields_is_still_asked_for_the_callers_trace():
    default = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([_HeaderTrace()]))
    try:
        assert _trace_id_seen([(b"x-my-trace", b"ab" * 16)]) == "ab" * 16
    finally:
        propagate.set_global_textmap(default)
    # The default propagators again: a request without their headers starts a trace of its own.
    assert _trace_id_seen([(b"x-my-trace", b"ab" * 16)]) != "ab" * 16
    traceparent = f"00-{'cd' * 16}-{'ef' * 8}-01".encode()
    assert _trace_id_seen([(b"traceparent", traceparent)]) == "cd" * 16


# -- the hot routes' folded dependencies ---------------------------------------------------------------------


class _Thing(BaseModel):
    amount: str


def _command_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/thing", openapi_extra=openapi_command(_Thing, prefer=True))
    async def thing(given: Annotated[WalletCommandInput, Depends(wallet_command_input(_Thing))]) -> dict[str, Any]:
        return {"key": given.key, "amount": given.body.amount, "wait": given.wait}

    return app


def _post(app: FastAPI, path: str, headers: dict[str, str], content: bytes = b'{"amount": "1.00"}') -> httpx.Response:
    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(post())


def test_a_wallet_commands_key_body_and_prefer_are_read_and_refused_in_that_order():
    app = _command_app()
    answer = _post(app, "/thing", {"Idempotency-Key": "k-1", "Prefer": "wait=30"})
    assert answer.json() == {"key": "k-1", "amount": "1.00", "wait": 10}
    assert _post(app, "/thing", {}, b"not json").json()["error"]["code"] == "idempotency_key_required"
    assert _post(app, "/thing", {"Idempotency-Key": "bad\tkey"}).json()["error"]["code"] == "idempotency_key_invalid"
    assert _post(app, "/thing", {"Idempotency-Key": "k-1"}, b"not json").status_code == 422
    assert _post(app, "/thing", {"Idempotency-Key": "k-1"}).json()["wait"] is None


def test_the_bearer_user_is_documented_as_the_http_bearer_scheme_and_refuses_other_schemes():
    router = APIRouter()

    @router.get("/me")
    async def me(user: CurrentUser) -> dict:
        return {"user": user.user_id}

    app = build_app("query-api", "t", routers=[router], settings=Settings(environment="test"))
    document = app.openapi()
    assert document["components"]["securitySchemes"] == {"HTTPBearer": {"type": "http", "scheme": "bearer"}}
    assert document["paths"]["/me"]["get"]["security"] == [{"HTTPBearer": []}]

    async def get(headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
            return await client.get("/me", headers=headers)

    for headers in ({}, {"Authorization": "Basic dTpw"}, {"Authorization": "Bearer"}):
        answer = asyncio.run(get(headers))
        assert answer.status_code == 401 and answer.json()["error"]["message"] == "a bearer access token is required"


async def _get(edge: Edge, path: str, root_path: str = "") -> _Answered:
    """``GET path`` through ``edge``, whatever the app behind it answers."""
    answered = _Answered()

    async def send(message):
        answered.messages.append(message)

    async def receive():
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path, "query_string": b"", "headers": []}
    await edge(scope, receive, send)
    return answered


async def _ok(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_past_its_requests_in_hand_a_process_sheds_at_once_with_503_and_retry_after_but_never_its_probes():
    """``max_in_flight`` requests inside the app: the next is refused before the app runs; the probes and the
    metrics still pass; one more comes in as soon as one is done, even one that failed."""

    async def scenario() -> None:
        release, both_in = asyncio.Event(), asyncio.Event()
        entered: list[str] = []

        async def app(scope, receive, send):
            entered.append(scope["path"])
            if scope["path"] == "/fails":
                raise RuntimeError("a bug")
            if scope["path"].startswith("/slow"):
                if len(entered) == 2:
                    both_in.set()
                await release.wait()
            await _ok(send)

        edge = Edge(app, service=SERVICE, max_in_flight=2)
        held = [asyncio.create_task(_get(edge, f"/slow{i}")) for i in range(2)]
        async with asyncio.timeout(10):
            await both_in.wait()
        before = REGISTRY.get_sample_value(
            "http_server_request_duration_seconds_count",
            {"service": SERVICE, "method": "GET", "route": "unmatched", "status": "503"},
        )

        shed_before = REGISTRY.get_sample_value("ogp_http_requests_shed_total", {"service": SERVICE}) or 0
        shed = await _get(edge, "/p")
        assert shed.status == 503 and shed.error["code"] == "overloaded"
        assert REGISTRY.get_sample_value("ogp_http_requests_shed_total", {"service": SERVICE}) == shed_before + 1
        assert shed.headers[b"retry-after"] == b"1" and len(shed.headers[b"x-correlation-id"]) == 32
        assert entered == ["/slow0", "/slow1"]  # the app never saw it
        after = REGISTRY.get_sample_value(
            "http_server_request_duration_seconds_count",
            {"service": SERVICE, "method": "GET", "route": "unmatched", "status": "503"},
        )
        assert (after or 0) == (before or 0) + 1
        for probe in ("/health", "/ready", "/metrics", "/payments/webhook"):  # Midtrans's notifications neither
            assert (await _get(edge, probe)).status == 200
        assert entered[-4:] == ["/health", "/ready", "/metrics", "/payments/webhook"] and edge.in_flight == 2

        release.set()
        assert [t.status for t in await asyncio.gather(*held)] == [200, 200]
        with pytest.raises(RuntimeError):
            await _get(edge, "/fails")
        assert edge.in_flight == 0
        assert (await _get(edge, "/p")).status == 200

    asyncio.run(scenario())


def test_no_limit_unless_one_is_set_and_the_apis_take_theirs_from_the_settings():
    assert Edge(lambda *a: None, service=SERVICE).max_in_flight == 0
    app = build_app(SERVICE, "t", [], settings=Settings(environment="test", api_max_in_flight=7))
    edge = next(m for m in app.user_middleware if m.cls is Edge)
    assert edge.kwargs["max_in_flight"] == 7


def test_a_request_set_aside_to_wait_stops_counting_once_and_for_all():
    async def scenario() -> None:
        waiting = asyncio.Event()
        release = asyncio.Event()

        async def app(scope, receive, send):
            if scope["path"] == "/waits":
                assert set_aside(scope)
                assert set_aside(scope)  # a second call gives back nothing more
                waiting.set()
                await release.wait()
            await _ok(send)

        edge = Edge(app, service=SERVICE, max_in_flight=1)
        waiter = asyncio.create_task(_get(edge, "/waits"))
        async with asyncio.timeout(10):
            await waiting.wait()
        works = await _get(edge, "/works")  # the full process has room: the waiter no longer counts
        release.set()
        assert [works.status, (await waiter).status] == [200, 200] and edge.in_flight == edge.waiting == 0
        assert set_aside({"type": "http"})  # without the edge (a bare app in a test): nothing to give back

    asyncio.run(scenario())


def test_past_its_waiters_a_process_keeps_a_request_working_and_says_so():
    async def scenario() -> None:
        release, asked = asyncio.Event(), asyncio.Event()
        allowed: list[bool] = []

        async def app(scope, receive, send):
            allowed.append(set_aside(scope))
            asked.set()
            if allowed[-1]:
                await release.wait()
            await _ok(send)

        edge = Edge(app, service=SERVICE, max_in_flight=5, max_waiting=1)
        waiter = asyncio.create_task(_get(edge, "/p"))
        async with asyncio.timeout(10):
            await asked.wait()
        assert (edge.in_flight, edge.waiting) == (0, 1)
        await _get(edge, "/p")  # no room to wait: answered at once, counted as working until then
        assert allowed == [True, False] and (edge.in_flight, edge.waiting) == (0, 1)
        release.set()
        await waiter
        assert (edge.in_flight, edge.waiting) == (0, 0)

    asyncio.run(scenario())


def test_the_probes_are_known_under_the_servers_root_path():
    async def scenario() -> list[int]:
        async def app(scope, receive, send):
            await _ok(send)

        edge = Edge(app, service=SERVICE, max_in_flight=1)
        edge.in_flight = 1  # full
        return [(await _get(edge, path, root_path="/api")).status for path in ("/api/health", "/api/p")]

    assert asyncio.run(scenario()) == [200, 503]
