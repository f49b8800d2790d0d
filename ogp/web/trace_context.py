"""The trace context of each request, without a span, for an API whose spans are exported nowhere.

OpenTelemetry's ASGI middleware makes a server span per request (and one per ASGI message sent or received):
a tenth of the command API's CPU per command, and of the query API's per read, in a py-spy profile. Where no
exporter is configured those spans go nowhere, but the request's trace context still matters: the Kafka
records a request appends carry it (``traceparent``), so a worker that exports can continue the trace, and the
log lines it writes name it. This keeps that much: the caller's trace (from ``traceparent``) or a new one,
sampled as the tracer provider's sampler decides, and a span id of its own for this hop, as the current span
(a non-recording one) while the request runs. ``ogp.web.edge`` enters it for every HTTP request.
"""

from __future__ import annotations

from contextvars import Token
from typing import cast

from opentelemetry import context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.asgi import asgi_getter
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

# Propagators that read no header but the ones their ``fields`` name (OpenTelemetry's defaults, W3C's two).
_READ_ONLY_THEIR_FIELDS = (TraceContextTextMapPropagator, W3CBaggagePropagator)


def _fields_read(textmap: TextMapPropagator) -> frozenset[bytes] | None:
    """The (ASGI, lower-case) header names ``textmap.extract`` reads, if known; None: any header may matter."""
    # A CompositePropagator's members (it names no public accessor; without one, every request is extracted).
    members = getattr(textmap, "_propagators", None)
    if not isinstance(members, list | tuple) or not all(type(m) in _READ_ONLY_THEIR_FIELDS for m in members):
        return None  # B3's extract, for one, reads more headers than its fields
    return frozenset(field.lower().encode("latin-1") for field in textmap.fields)


class TraceContext:
    """A non-recording current span per HTTP request, continuing the caller's trace if any."""

    def __init__(self, provider: TracerProvider):
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self._textmap: TextMapPropagator | None = None
        self._fields: frozenset[bytes] | None = None

    def enter(self, scope: Scope) -> Token[context.Context]:
        """Make the request's context current; the token to hand to :meth:`leave` when the request is done."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:  # found once per propagator installed, not per request
            self._textmap, self._fields = textmap, _fields_read(textmap)
        fields = self._fields
        if fields is not None and not any(name in fields for name, _ in scope.get("headers") or ()):
            parent = context.get_current()  # what extract returns when none of its headers is there
        else:
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
        return context.attach(trace.set_span_in_context(NonRecordingSpan(here), parent))

    @staticmethod
    def leave(token: Token[context.Context]) -> None:
        context.detach(token)
