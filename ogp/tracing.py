"""OpenTelemetry: a tracer provider per process, FastAPI instrumentation, W3C context in Kafka headers.

Spans are exported over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the collector in
``infra/monitoring``); without it, trace context is still created and propagated.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_configured = False


def configure(service: str) -> None:
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):  # read by the exporter itself; presence only here
        try:  # optional: the exporter is not a dependency yet
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except ImportError:  # exporter package not installed: propagate context only
            pass
    trace.set_tracer_provider(provider)
    _configured = True


def instrument(app, service: str) -> None:
    configure(service)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="health,ready")
