"""Run an ASGI app under a real uvicorn server in a background thread, for tests over real HTTP."""

from __future__ import annotations

import contextlib
import threading

import httpx
import uvicorn

from infra.local.process import free_port
from tests.support.waiting import DEFAULT_TIMEOUT, wait_until


@contextlib.contextmanager
def serve(app, host: str = "127.0.0.1", port: int | None = None, timeout: float = DEFAULT_TIMEOUT):
    """Yields the base URL while ``app`` is served (its lifespan runs as in production)."""
    port = port or free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    # A server thread that died (its lifespan failed) will never start: stop waiting at once.
    wait_until(
        lambda: server.started or not thread.is_alive(), timeout, f"the test server on {port} started", interval=0.02
    )
    if not server.started:
        raise RuntimeError("test server did not start (its lifespan failed: see the log above)")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@contextlib.contextmanager
def serve_client(app, timeout: float = 30, **kwargs):
    """An HTTP client on ``app`` served for real (see :func:`serve`)."""
    with serve(app, **kwargs) as url, httpx.Client(base_url=url, timeout=timeout) as client:
        yield client
