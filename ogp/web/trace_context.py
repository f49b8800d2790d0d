"""The trace context of each request, without a span, for an API whose spans are exported nowhere.

OpenTelemetry's ASGI middleware makes a server span per request (and one per ASGI message sent or received):
a tenth of the command API's CPU per command, and of the query API's per read, in a py-spy profile. Where no
exporter is configured those spans go nowhere, but the request's trace context still matters: the Kafka
records a request appends carry it (``traceparent``), so a worker that exports can continue the trace, and the
log lines it writes name it. This middleware keeps that much: the caller's trace (from ``traceparent``) or a new
one, sampled as the tracer provider's sampler decides, and a span id of its own for this hop, as the current
span (a non-recording one) while the request runs.
"""

from __future__ import annotations

from typing import cast

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.asgi import asgi_getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from starlette.types import ASGIApp, Receive, Scope, Send


class TraceContext:
    """ASGI middleware: a non-recording current span per HTTP request, continuing the caller's trace if any."""

    def __init__(self, app: ASGIApp, provider: TracerProvider):
        self.app = app
        self.sampler = provider.sampler
        self.ids = provider.id_generator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = propagate.extract(cast(dict, scope), getter=asgi_getter)  # an ASGI scope is a dict
        upstream = trace.get_current_span(parent).get_span_context()
        trace_id = upstream.trace_id if upstream.is_valid else self.ids.generate_trace_id()
        # The decision a server span would have had: the parent's (ParentBased), or the ratio for a new trace.
        sampling = self.sampler.should_sample(parent, trace_id, scope.get("path", ""), SpanKind.SERVER)
        here = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampling.decision.is_sampled() else TraceFlags.DEFAULT),
            trace_state=sampling.trace_state,
        )
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(here), parent))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)
