"""An ASGI app that answers with the peer address its server handed it: what a server under test made of the
connection, X-Forwarded-For or not. Built by a factory, as the APIs are (``--factory``)."""

from __future__ import annotations

import json
from typing import Any


def create_app() -> Any:
    """The app: ``{"client": host}`` for every request; a lifespan that completes, as the APIs' does."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        client = scope.get("client")
        body = json.dumps({"client": client[0] if client else None}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app
