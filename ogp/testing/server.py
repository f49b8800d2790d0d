"""Run an ASGI app under a real uvicorn server in a background thread, for tests over real HTTP."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from ogp.stack.process import free_port


@contextlib.contextmanager
def serve(app, host: str = "127.0.0.1", port: int | None = None, timeout: float = 30):
    """Yields the base URL while ``app`` is served (its lifespan runs as in production)."""
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
