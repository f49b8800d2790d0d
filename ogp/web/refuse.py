"""Answer a request from ASGI middleware, before any route or exception handler, in the common error shape."""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Send


async def refuse(
    send: Send, status: int, code: str, message: str, details=None, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete ``{"error": {"code", "message", "details"}}`` response, with ``headers`` besides."""
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
