"""One guard for every request's text and JSON shape, in front of both APIs' routes (400 in the common error shape).

PostgreSQL's text and jsonb cannot hold U+0000, and an unpaired surrogate (``"\\ud800"`` in JSON) has no UTF-8
form for PostgreSQL or Kafka: either one, reaching a query or a message, used to surface as a 500 deep inside
whichever handler met it first. And Python's JSON parser recurses once per nesting level, so 2 KB of brackets
exhausted the stack. No contract of ours needs any of these, so they are refused here, once, for every path
segment, query value, header and JSON body of both apps, before a route, a decoder or a database sees them.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ogp.web.refuse import refuse

MAX_JSON_DEPTH = 32  # our deepest contract (a Midtrans notification's va_numbers) needs 3
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # after json.loads a valid surrogate pair is one character
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes) -> int:
    """How deeply the JSON text nests arrays and objects (brackets inside strings do not count); no recursion."""
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub(b"", body)):
        if bracket.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def has_bad_text(value) -> bool:
    """Whether any string (object keys included) in a decoded JSON value holds U+0000 or a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _BAD_TEXT.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def url_problem(scope: Scope) -> str | None:
    """Where the request line or headers carry a NUL, if they do: "path", "query" or "header"."""
    if "\x00" in scope.get("path", ""):
        return "path"
    if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return "query"
    if any(b"\x00" in value for _, value in scope.get("headers") or ()):
        return "header"
    return None


def _has_body(scope: Scope) -> bool:
    """Whether the request may carry a body: HTTP/1.1 has one only with Content-Length or Transfer-Encoding."""
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope.get("headers") or ())


def body_problem(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str, dict] | None:
    """(code, message, details) for a body to refuse; None lets the route's own decoder judge it."""
    if not body:
        return None
    if json_depth(body) > max_depth:
        return "body_too_deep", f"JSON must not nest deeper than {max_depth} levels", {"max_depth": max_depth}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: each route's decoder answers that in its own words
    if has_bad_text(value):
        return "invalid_text", "text must not contain U+0000 or unpaired surrogates", {"where": "body"}
    return None


class InputGuard:
    """ASGI middleware: 400 ``invalid_text`` / ``body_too_deep``; otherwise the body is replayed to the app."""

    def __init__(self, app: ASGIApp, max_depth: int = MAX_JSON_DEPTH):
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (where := url_problem(scope)) is not None:
            await refuse(send, 400, "invalid_text", "text must not contain U+0000", {"where": where})
            return
        if not _has_body(scope):  # a GET, say: nothing to read, so nothing to replay
            await self.app(scope, receive, send)
            return
        # Bodies are bounded by BodySizeLimit, which runs outside this guard.
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if (problem := body_problem(body, self.max_depth)) is not None:
            await refuse(send, 400, *problem)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
