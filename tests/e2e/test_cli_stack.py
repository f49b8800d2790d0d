"""The `ogp` CLI as an operator uses it: stack up twice, up, status, down, nothing left running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from infra.local.process import pid_alive
from tests.support.processes import ogp_cli_env

pytestmark = pytest.mark.e2e

OGP = [sys.executable, "-m", "ogp.cli"]


@pytest.fixture(scope="module")
def env():
    state = Path(tempfile.mkdtemp(prefix="ogp-cli-"))
    os.chmod(state, 0o755)
    env = ogp_cli_env(state)
    yield env
    subprocess.run([*OGP, "down"], env=env, capture_output=True, timeout=180)
    shutil.rmtree(state, ignore_errors=True)


def run(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*OGP, *args], env=env, capture_output=True, text=True, timeout=timeout)


def our_pids(state: Path) -> list[int]:
    pids = []
    for pid_file in state.rglob("*.pid"):
        try:
            pids.append(int(pid_file.read_text()))
        except ValueError:
            pass
    return pids


def test_stack_up_twice_then_up_status_down_leaves_nothing_running(env):
    state = Path(env["OGP_STATE_DIR"])
    first = run(env, "stack", "up")
    assert first.returncode == 0, first.stderr
    pids = our_pids(state)
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)

    second = run(env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert sorted(our_pids(state)) == sorted(pids), "a second `stack up` must reuse the running servers"

    assert run(env, "stack", "status").returncode == 0

    up = run(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    for needle in ("command-api", "query-api", "alice", "Bank Indonesia", "OJK", "/docs"):
        assert needle in up.stdout, needle
    status = run(env, "status")
    assert status.returncode == 0, status.stdout
    assert "unhealthy" not in status.stdout and "stopped" not in status.stdout

    again = run(env, "up")
    assert again.returncode == 0, again.stdout + again.stderr

    all_pids = our_pids(state)
    assert len(all_pids) >= 5
    down = run(env, "down")
    assert down.returncode == 0, down.stderr
    assert not [p for p in all_pids if pid_alive(p)], "ogp down must stop every process it started"
    assert run(env, "status").returncode == 1


def test_missing_prerequisite_is_one_line_not_a_traceback(env):
    bare = {**env, "PATH": "/nonexistent"}
    result = subprocess.run([*OGP, "stack", "up"], env=bare, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines and "not found" in " ".join(lines) and "apt-get install" in " ".join(lines)
