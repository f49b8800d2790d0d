"""OpenTelemetry: one tracer provider per process, built from the settings; W3C trace context in Kafka headers.

Spans leave the process over OTLP/HTTP when ``OGP_OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the collector in
``infra/monitoring``, port 4318). Without it the APIs make no server span, only a request's trace context (the
caller's or a new one, ``ogp.web.trace_context``), so that it still reaches the Kafka records the request
appends (and the log lines it writes); the workers make no span at all: their per-command spans would cost the
hot path and go nowhere (:func:`worker_tracer` is None).

New traces are kept at ``OGP_OTEL_TRACES_SAMPLER_RATIO``; every later hop follows the decision in the
``traceparent`` it receives (ParentBased), so a trace is kept or dropped whole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer

from ogp.settings import Settings

log = logging.getLogger(__name__)

# An export that hangs on an unreachable collector must not hold a worker's bounded shutdown for long.
_EXPORT_TIMEOUT_SECONDS = 5.0

_provider: TracerProvider | None = None
_exporting = False


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector's base URL (``http://collector:4318`` → ``.../v1/traces``)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def build_provider(settings: Settings, service: str) -> tuple[TracerProvider, bool]:
    """A tracer provider for ``service`` as the settings say, and whether it exports (an endpoint is set)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name or service}),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_traces_sampler_ratio)),
    )
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return provider, False
    # Imported here, not at the top: a worker that exports nothing never loads the exporter (nor its HTTP client).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=_EXPORT_TIMEOUT_SECONDS)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, True


def configure(settings: Settings, service: str) -> TracerProvider:
    """Install the process's tracer provider (once: the first caller's settings and service name win)."""
    global _provider, _exporting
    if _provider is None:
        _provider, _exporting = build_provider(settings, service)
        trace.set_tracer_provider(_provider)
        if _exporting:
            log.info("traces: exported over OTLP/HTTP to %s", traces_url(settings.otel_exporter_otlp_endpoint))
    return _provider


def exporting() -> bool:
    """Whether this process's spans leave it (an OTLP endpoint is configured)."""
    return _exporting


def worker_tracer(name: str) -> Tracer | None:
    """A tracer for a worker's hot path, or None when nothing is exported: the worker then makes no span."""
    return trace.get_tracer(name) if _exporting else None


def recorded(headers: Mapping[str, str]) -> bool:
    """Whether a span continuing the trace in these (Kafka record) headers would be recorded.

    Not when the ``traceparent`` says the trace was dropped upstream (flags 00, or 02: random but not sampled):
    the sampler follows a parent's decision (ParentBased), so that span would go nowhere, and making it costs a
    worker's hot path about as much as applying a payment does. Without a ``traceparent`` the span starts a
    trace, and the sampler decides."""
    parent = headers.get("traceparent")
    return parent is None or not parent.endswith(("-00", "-02"))


def shutdown() -> None:
    """Export what is still queued and stop (a worker's last step; the SDK also does it at exit)."""
    if _provider is not None:
        _provider.shutdown()


def instrument(app, provider: TracerProvider) -> None:
    """A server span per request (named after the route template), from the caller's trace context if any.

    For an API whose spans are exported; one whose spans would go nowhere takes the request's trace context
    alone (``ogp.web.trace_context``), which is all that leaves the process then (Kafka headers, log lines)."""
    # Imported here, not at the top: it loads FastAPI, which the workers (the ledger processor) never use.
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # No span per ASGI message sent or received (two or three a request): they cost more than the request's
    # own span and say nothing its duration does not.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="health,ready,metrics", tracer_provider=provider, exclude_spans=["receive", "send"]
    )
