"""The benches' servers (bench/_stack.py ``server_argv``): uvicorn as `ogp up` runs it, or Granian to compare.
Each serves a factory app with its lifespan, and neither takes the client's address from X-Forwarded-For: only
our OGP_TRUSTED_PROXIES decides whom that header is believed from (ogp/web/client_ip.py)."""

from __future__ import annotations

import importlib.util
import subprocess

import httpx
import pytest

from bench._stack import SERVERS, server_argv
from infra.local.process import free_port
from tests.support.waiting import wait_until

# Granian was measured, not adopted (docs/architecture.md): not a project dependency, so it may be missing.
GRANIAN_MISSING = importlib.util.find_spec("granian") is None


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(s, marks=pytest.mark.skipif(s == "granian" and GRANIAN_MISSING, reason="granian not installed"))
        for s in SERVERS
    ],
)
def test_server_hands_the_app_the_peer_address_whatever_x_forwarded_for_says(server):
    port = free_port()
    argv = server_argv(server, "tests.support.peer_echo:create_app", port, workers=1)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(
            lambda: httpx.get(url, timeout=1).status_code == 200, 60, f"{server} answers", ignoring=(httpx.HTTPError,)
        )
        answer = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
        assert answer.json() == {"client": "127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_unknown_server_is_refused():
    with pytest.raises(ValueError, match="known: uvicorn, granian"):
        server_argv("hypercorn", "tests.support.peer_echo:create_app", 8000, workers=1)
