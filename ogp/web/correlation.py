"""The correlation id of each request: the caller's (or Kong's) when sane, else a new one; in logs, Kafka headers
and the ``X-Correlation-Id`` answer. ``ogp.web.edge`` sets it for every HTTP request.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import Message

HEADER = b"x-correlation-id"
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def correlation_of(given: bytes | None) -> str:
    """The caller's ``X-Correlation-Id`` if it is a sane id, else a new one."""
    if given is not None:
        text = given.decode("latin-1")  # as Starlette's Headers decode
        if _CORRELATION_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


def with_correlation_id(message: Message, cid: str) -> None:
    """Set ``X-Correlation-Id`` on an ``http.response.start`` message (replacing any the app set)."""
    value = cid.encode("latin-1")
    headers = [(name, v) for name, v in message.get("headers", ()) if name.lower() != HEADER]
    headers.append((HEADER, value))
    message["headers"] = headers
