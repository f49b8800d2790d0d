"""What every HTTP request of both APIs passes before its route, in one ASGI layer.

In the order a request meets them (each one covers those after it):

1. **Metrics** (``ogp.web.metrics``): the request's duration and status, refusals below included; shed requests
   are also counted on their own (``ogp_http_requests_shed_total``).
2. **Load shedding**: with ``max_in_flight`` requests of this process already in hand, another is answered
   at once, 503 ``overloaded`` with Retry-After, instead of queueing behind them (the probes and ``/metrics``
   excepted). A process past its capacity otherwise takes every request and answers all of them late:
   callers time out and retry while it still spends its CPU on the ones they gave up on. A request that from
   some point only waits (a command's ``Prefer: wait``) calls :func:`set_aside` and counts as a waiter instead,
   up to ``max_waiting`` of them.
3. **Trace context** (``ogp.web.trace_context``), where spans are exported nowhere; where they are,
   OpenTelemetry's own middleware makes a server span per request instead, outside this layer.
4. **Correlation id** (``ogp.web.correlation``): in logs and Kafka headers while the request runs, and in the
   ``X-Correlation-Id`` answer, refusals included.
5. **Body size limit**: 413 ``payload_too_large`` for a body over ``max_bytes``, declared or sent.
6. **Input guard** (``ogp.web.input_guard``): 400 ``invalid_text`` / ``body_too_deep``; a body that passes is
   replayed to the app.

These were five middlewares, each its own coroutine per request, three with a wrapper of their own around
every message sent, and each looking through the headers for its own: about a tenth of a balance read's API
samples in a py-spy profile, 4% since (docs/architecture.md, "The edge in one layer"). Here one pass over the
headers serves every check (the trace context still looks for its own, ``TraceContext.enter``) and the answer
goes through one wrapper.
"""

from __future__ import annotations

from time import perf_counter

from opentelemetry.sdk.trace import TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ogp.errors import RETRY_AFTER_SECONDS
from ogp.logs import correlation_id
from ogp.metrics import HTTP_REQUESTS_SHED
from ogp.web.correlation import HEADER as CORRELATION_HEADER
from ogp.web.correlation import correlation_of, with_correlation_id
from ogp.web.input_guard import MAX_JSON_DEPTH, body_problem, url_problem
from ogp.web.metrics import RequestMetrics
from ogp.web.refuse import refuse
from ogp.web.trace_context import TraceContext

MAX_BODY_BYTES = 64 * 1024
RETRY_AFTER = RETRY_AFTER_SECONDS.encode()
OVERLOADED = "this process is working on as many requests as it can: retry after the Retry-After seconds"
# Neither counted nor shed: an orchestrator's probes (a live process under load must not look dead) and the scrape.
NOT_COUNTED = frozenset({"/health", "/ready", "/metrics"})
# Counted, never shed: Midtrans's notifications. Midtrans ignores Retry-After and retries a refused one minutes
# later (docs/architecture.md, Midtrans), so a shed one would hold a top-up back that long; their rate is
# Midtrans's, not whoever overloads the API.
NEVER_SHED = NOT_COUNTED | {"/payments/webhook"}
_SCOPE_KEY = "ogp.place"


class _Place:
    """A request's place in its process: working (counted against ``max_in_flight``) or, set aside, waiting
    (against ``max_waiting``); given back once."""

    __slots__ = ("_edge", "_waiting", "_working")

    def __init__(self, edge: Edge):
        self._edge, self._working, self._waiting = edge, True, False
        edge.in_flight += 1

    def wait(self) -> bool:
        edge = self._edge
        if not self._working:
            return self._waiting
        if edge.max_waiting and edge.waiting >= edge.max_waiting:
            return False
        self._working, self._waiting = False, True
        edge.in_flight -= 1
        edge.waiting += 1
        return True

    def give_back(self) -> None:
        if self._working:
            self._working = False
            self._edge.in_flight -= 1
        if self._waiting:
            self._waiting = False
            self._edge.waiting -= 1


def set_aside(scope: Scope) -> bool:
    """Ask that from now on this request only wait (for a command's outcome, say): it leaves its process's
    requests in hand for its waiters, so that waiters never make the process shed requests that work. False
    when the process already has ``max_waiting`` waiters (each polls: they are not free): the caller should
    answer now instead of waiting. True without a limit (or a test's bare app)."""
    place = scope.get(_SCOPE_KEY)
    return True if place is None else place.wait()


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without the server's root path (uvicorn's ``--root-path`` prefixes it)."""
    path, root = scope["path"], scope.get("root_path")
    return path[len(root) :] if root and path.startswith(root) else path


class Edge:
    """ASGI middleware: metrics, load shedding, trace context, correlation id, body size limit and input guard, in
    that order."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        provider: TracerProvider | None = None,
        max_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
        max_in_flight: int = 0,
        max_waiting: int = 0,
    ):
        """``provider``: the tracer provider whose sampler and ids make each request's trace context; None
        where OpenTelemetry's middleware makes a span per request instead (spans are exported).
        ``max_in_flight``: the requests this process works on at once before it sheds more (0: no limit, and no
        count); ``max_waiting``: the requests set aside to wait at once (0: no limit)."""
        self.app = app
        self.metrics = RequestMetrics(service)
        self.shed_total = HTTP_REQUESTS_SHED.labels(service)
        self.trace = TraceContext(provider) if provider is not None else None
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.in_flight = 0
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # unless a response starts: an exception that no handler answered
        # Each header once, for all that is needed of them.
        given = declared = None
        has_body = header_nul = False
        for name, value in scope.get("headers") or ():
            if name == CORRELATION_HEADER:
                if given is None:  # the first, as Starlette's Headers.get
                    given = value
            elif name == b"content-length":
                declared, has_body = value, True
            elif name == b"transfer-encoding":
                has_body = True  # HTTP/1.1 has a body only with Content-Length or Transfer-Encoding
            if b"\x00" in value:
                header_nul = True
        cid = correlation_of(given)

        async def send_answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                with_correlation_id(message, cid)
            await send(message)

        shed = counted = False
        if self.max_in_flight:
            path = _route_path(scope)
            counted = path not in NOT_COUNTED
            shed = counted and self.in_flight >= self.max_in_flight and path not in NEVER_SHED
        trace_token = self.trace.enter(scope) if self.trace is not None else None
        cid_token = correlation_id.set(cid)
        place = scope[_SCOPE_KEY] = _Place(self) if counted and not shed else None
        try:
            if shed:
                self.shed_total.inc()
                await refuse(send_answer, 503, "overloaded", OVERLOADED, headers=[(b"retry-after", RETRY_AFTER)])
            elif declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                await self._too_large(send_answer)
            elif (where := url_problem(scope, header_nul)) is not None:
                await refuse(send_answer, 400, "invalid_text", "text must not contain U+0000", {"where": where})
            elif not has_body:  # a GET, say: nothing to read, so nothing to check or replay
                await self.app(scope, receive, send_answer)
            else:
                await self._with_body(scope, receive, send_answer)
        finally:
            if place is not None:
                place.give_back()
            correlation_id.reset(cid_token)
            if trace_token is not None:
                TraceContext.leave(trace_token)
            self.metrics.observe(scope, status, perf_counter() - started)

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The body read whole (up to ``max_bytes``) and checked, then replayed to the app."""
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if (problem := body_problem(body, self.max_depth)) is not None:
            await refuse(send, 400, *problem)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await refuse(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
