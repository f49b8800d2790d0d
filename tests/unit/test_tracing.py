"""Traces: the settings decide whether spans are exported, where to, and how many; Midtrans calls are client spans."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from command_api.midtrans.adapter import MidtransError, MidtransGateway
from infra.local.process import free_port
from ogp.settings import Settings
from ogp.tracing import build_provider, recorded, traces_url


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
