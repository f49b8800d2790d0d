"""One guard for every request's text and JSON shape, in front of both APIs' routes (400 in the common error shape).

PostgreSQL's text and jsonb cannot hold U+0000, and an unpaired surrogate (``"\\ud800"`` in JSON) has no UTF-8
form for PostgreSQL or Kafka: either one, reaching a query or a message, used to surface as a 500 deep inside
whichever handler met it first. And Python's JSON parser recurses once per nesting level, so 2 KB of brackets
exhausted the stack. No contract of ours needs any of these, so they are refused once, for every path
segment, query value, header and JSON body of both apps, before a route, a decoder or a database sees them:
``ogp.web.edge`` applies these checks to every HTTP request.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.types import Scope

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


def url_problem(scope: Scope, header_nul: bool) -> str | None:
    """Where the request line or headers carry a NUL, if they do: "path", "query" or "header".

    ``header_nul``: whether a header value holds one (the edge looks at each header once, for all it needs).
    """
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"")
    if query and b"\x00" in unquote_to_bytes(query):
        return "query"
    return "header" if header_nul else None


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
