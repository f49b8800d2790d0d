"""A small OTLP/HTTP trace receiver for tests: what the services' exporters send, kept as plain spans.

It answers ``POST /v1/traces`` (protobuf, as ``opentelemetry-exporter-otlp-proto-http`` sends it) on a free
port of 127.0.0.1, in a thread of its own; point ``OGP_OTEL_EXPORTER_OTLP_ENDPOINT`` at :attr:`OtlpReceiver.url`.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received: ids in hex, the service that sent it, its attributes as plain values."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 server, 3 client, 4 producer, 5 consumer
    attributes: dict[str, object] = field(default_factory=dict)
    links: tuple[str, ...] = ()  # span ids of the linked spans


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """Keeps every span POSTed to ``/v1/traces``; :meth:`spans` and :meth:`traces` read them."""

    def __init__(self, host: str = "127.0.0.1"):
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._keep(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args) -> None:
                pass  # each export would print a line into the test's output

        self._server = ThreadingHTTPServer((host, 0), Handler)  # port 0: the kernel picks a free one
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"otlp-{self.port}", daemon=True)
        self.url = f"http://{host}:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(link.span_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self._spans.extend(received)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received so far, by trace id."""
        by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in self.spans():
            by_trace[span.trace_id].append(span)
        return dict(by_trace)
