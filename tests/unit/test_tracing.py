"""Traces: the settings decide whether spans are exported, where to, and how many; Midtrans calls are client spans."""

from __future__ import annotations

import asyncio
import re
from unittest.mock import patch

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from pydantic import ValidationError

from command_api.midtrans.adapter import MidtransError, MidtransGateway
from infra.local.process import free_port
from ogp.settings import Settings
from ogp.tracing import build_provider, recorded, traces_url
from ogp.web.app import build_app
from ogp.web.edge import Edge


def test_without_an_endpoint_nothing_is_exported():
    provider, exporting = build_provider(Settings(), "ledger-processor")
    assert not exporting
    assert provider.resource.attributes["service.name"] == "ledger-processor"


def test_with_an_endpoint_spans_go_to_its_otlp_http_traces_path_sampled_as_configured():
    settings = Settings(
        otel_exporter_otlp_endpoint="http://otel-collector.monitoring.svc:4318",
        otel_traces_sampler_ratio=0.25,
        otel_service_name="ledger-processor-canary",
    )
    provider, exporting = build_provider(settings, "ledger-processor")
    assert exporting
    assert provider.resource.attributes["service.name"] == "ledger-processor-canary"
    # A new trace is kept at the ratio; a continued one as its parent decided.
    assert isinstance(provider.sampler, ParentBased)
    assert "0.25" in provider.sampler.get_description()
    provider.shutdown()


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_the_traces_url_is_the_collectors_base_url_with_the_signal_path(endpoint, url):
    assert traces_url(endpoint) == url


@pytest.mark.parametrize(
    "wrong",
    [{"otel_traces_sampler_ratio": 1.5}, {"otel_traces_sampler_ratio": -0.1}, {"otel_exporter_otlp_protocol": "grpc"}],
)
def test_settings_refuse_a_ratio_outside_0_to_1_and_an_exporter_not_installed(wrong):
    with pytest.raises(ValidationError):
        Settings(**wrong)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, True),  # a trace starts here: the sampler decides
        ({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}, True),
        ({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-03"}, True),  # sampled, with a random trace id
        ({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}, False),  # dropped upstream: every later hop too
        ({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-02"}, False),
    ],
)
def test_a_span_is_recorded_unless_the_trace_was_dropped_upstream(headers, expected):
    assert recorded(headers) is expected


def test_a_midtrans_call_is_a_client_span_with_its_outcome():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Nobody listens on the port: the call fails at once.
    settings = Settings(environment="test", midtrans_core_base_url=f"http://127.0.0.1:{free_port()}")
    gateway = MidtransGateway(settings, tracer=provider.get_tracer("test"))

    with pytest.raises(MidtransError):
        asyncio.run(gateway.cancel("order-1"))

    (span,) = exporter.get_finished_spans()
    assert span.name == "midtrans cancel" and span.kind == SpanKind.CLIENT
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes == {"ogp.midtrans.operation": "cancel", "ogp.midtrans.outcome": "error"}


def _seen_in_a_request(headers: list[tuple[bytes, bytes]], ratio: float = 1.0) -> dict[str, str]:
    """The context an app behind the edge sees: its current span's ids and the traceparent it would append."""
    seen: dict[str, str] = {}

    async def app(scope, receive, send):
        span = trace.get_current_span().get_span_context()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        seen.update(trace_id=format_trace_id(span.trace_id), span_id=format_span_id(span.span_id), **carrier)

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    scope = {"type": "http", "method": "POST", "path": "/api/payment/pay", "headers": headers}
    asyncio.run(Edge(app, service="unit-test", provider=provider)(scope, None, None))
    assert not trace.get_current_span().get_span_context().is_valid, "the request's context is left behind it"
    return seen


@pytest.mark.parametrize(("flags", "ratio"), [("01", 0.0), ("00", 1.0)])
def test_without_an_exporter_a_request_continues_the_callers_trace_as_the_caller_sampled_it(flags, ratio):
    caller = f"00-{'ab' * 16}-{'cd' * 8}-{flags}"
    seen = _seen_in_a_request([(b"traceparent", caller.encode())], ratio)
    # The same trace, a hop of its own, and the caller's decision (ParentBased), whatever the ratio says.
    assert seen["trace_id"] == "ab" * 16 and seen["span_id"] != "cd" * 8
    assert seen["traceparent"] == f"00-{'ab' * 16}-{seen['span_id']}-{flags}"


@pytest.mark.parametrize(("ratio", "flags"), [(1.0, "01"), (0.0, "00")])
def test_without_an_exporter_a_request_without_a_trace_starts_one_sampled_at_the_ratio(ratio, flags):
    seen = _seen_in_a_request([], ratio)
    assert re.fullmatch(r"[0-9a-f]{32}", seen["trace_id"]) and seen["trace_id"] != "0" * 32
    assert seen["traceparent"] == f"00-{seen['trace_id']}-{seen['span_id']}-{flags}"


def test_without_an_exporter_an_api_makes_no_server_span_but_with_one_it_does():
    with patch("ogp.tracing._exporting", False):
        quiet = build_app("command-api", "quiet", routers=[], settings=Settings(environment="test"))
    with patch("ogp.tracing._exporting", True):
        exported = build_app("command-api", "exported", routers=[], settings=Settings(environment="test"))
    [quiet_edge] = [m for m in quiet.user_middleware if m.cls is Edge]
    assert quiet_edge.kwargs["provider"] is not None  # the edge makes the request's trace context
    assert not getattr(quiet, "_is_instrumented_by_opentelemetry", False)
    assert getattr(exported, "_is_instrumented_by_opentelemetry", False)
    [exported_edge] = [m for m in exported.user_middleware if m.cls is Edge]
    assert exported_edge.kwargs["provider"] is None  # OpenTelemetry's middleware does


def test_without_an_exporter_a_request_runs_in_its_trace_context_with_no_span_recorded():
    router = APIRouter()

    @router.get("/probe")
    async def probe() -> dict:
        span = trace.get_current_span()
        return {"recording": span.is_recording(), "traced": span.get_span_context().is_valid}

    with patch("ogp.tracing._exporting", False):
        app = build_app("query-api", "quiet", routers=[router], settings=Settings(environment="test"))

    async def get() -> dict:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
            return (await client.get("/probe")).json()

    # Neither OpenTelemetry's middleware nor FastAPI's own telemetry makes a span that would go nowhere.
    with patch.object(SdkTracer, "start_span", autospec=True, side_effect=SdkTracer.start_span) as started:
        assert asyncio.run(get()) == {"recording": False, "traced": True}
    assert started.call_count == 0
