"""The correlation id of each request: the caller's (or Kong's) when sane, else a new one; in logs, Kafka headers
and the ``X-Correlation-Id`` answer.

A pure ASGI middleware: ``@app.middleware("http")`` (BaseHTTPMiddleware) ran every request in a task group of
its own, a cost the command API's hot path paid twice over for two lines of work.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ogp.logs import correlation_id

_CORRELATION_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class CorrelationId:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-correlation-id", "")
        cid = given if _CORRELATION_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Correlation-Id"] = cid
            await send(message)

        token = correlation_id.set(cid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
