"""`ogp up` keeps its services alive: a frozen worker shows unhealthy and is restarted, one restarts by name.

Runs the real `ogp` against a private stack on free ports (as tests/e2e/test_cli_stack.py does).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from infra.local.process import pid_alive
from tests.support.processes import ogp_cli_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OGP = [sys.executable, "-m", "ogp.cli"]


@pytest.fixture(scope="module")
def stack():
    """`ogp up` on a state folder and ports of our own; `ogp down` afterwards."""
    state = Path(tempfile.mkdtemp(prefix="ogp-supervise-"))
    os.chmod(state, 0o755)
    env = ogp_cli_env(state, COLUMNS="200")  # status rows on one line each
    up = run(env, "up", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    yield env
    frozen = [pid for pid in pids(state).values() if state_of(pid) == "T"]
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    down = run(env, "down", timeout=300)
    left = [p for p in pids(state).values() if pid_alive(p)]
    shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not left, "ogp down must stop every process it started, the supervisor and restarted services too"


def run(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*OGP, *args], env=env, capture_output=True, text=True, timeout=timeout)


def pids(state: Path) -> dict[str, int]:
    out = {}
    for pid_file in (state / "services").glob("*.pid"):
        try:
            out[pid_file.stem] = int(pid_file.read_text())
        except (OSError, ValueError):
            pass
    return out


def service_pid(env, name: str) -> int | None:
    return pids(Path(env["OGP_STATE_DIR"])).get(name)


def state_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return None


def row_state(status: str, name: str) -> str | None:
    """The state column of ``name``'s row in `ogp status` output."""
    for line in status.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == name:
            return cells[-2]
    return None


def wait_for(predicate, timeout: float, what: str, detail=lambda: "") -> float:
    """wait_until, with a detail (a log tail) in the failure; returns the seconds it took."""
    started = time.monotonic()
    wait_until(predicate, timeout, what=lambda: f"{what}\n{detail()}", interval=0.5)
    return time.monotonic() - started


def log_of(env, name: str) -> str:
    try:
        return (Path(env["OGP_STATE_DIR"]) / "services" / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""


def test_every_service_and_the_supervisor_are_healthy_after_up(stack):
    # The lag figures are gauges each worker refreshes every few seconds (the processor's every sweep interval):
    # right after `up`, one may still show the demo data's last commands. A quiet system comes to show none.
    quiet = re.compile(r"ledger lag \(commands\)\s*│\s*0\s*│[\s\S]*projector-history lag \(events\)\s*│\s*0\s*│")
    seen = {}

    def settled() -> bool:
        seen["status"] = run(stack, "status")
        return seen["status"].returncode == 0 and bool(quiet.search(seen["status"].stdout))

    wait_for(settled, 60, "every lag should come to 0 on a quiet system", lambda: seen["status"].stdout)
    status = seen["status"]
    for name in (
        "command-api",
        "ledger-processor",
        "projector-history",
        "projector-access-logs",
        "projector-payments",
        "supervisor",
    ):
        assert row_state(status.stdout, name) == "healthy", status.stdout
    # The key figures, read from the workers' /metrics: nothing waits on a quiet system.
    assert re.search(r"ledger lag \(commands\)\s*│\s*0\s*│", status.stdout), status.stdout
    for figure in ("applied per second", "outbox backlog", "dead letters", "transfers in flight"):
        assert figure in status.stdout, status.stdout
    assert re.search(r"projector-history lag \(events\)\s*│\s*0\s*│", status.stdout), status.stdout
    # Nothing stalled on the way: a consumer replaced for fetching nothing while behind says so in its log.
    for worker in ("ledger-processor", "projector-history", "projector-payments"):
        assert "ConsumerStalled" not in log_of(stack, worker), log_of(stack, worker)[-3000:]


def test_a_frozen_worker_shows_unhealthy_within_30s_and_the_supervisor_restarts_it(stack):
    supervisor, frozen = service_pid(stack, "supervisor"), service_pid(stack, "ledger-processor")
    assert supervisor and frozen
    # Hold the supervisor for a moment so we can watch the frozen worker before it is replaced.
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(frozen, signal.SIGSTOP)
        took = wait_for(
            lambda: row_state(run(stack, "status").stdout, "ledger-processor") == "unhealthy",
            30,
            "`ogp status` should show the frozen worker as unhealthy within 30 s",
            lambda: run(stack, "status").stdout,
        )
        assert took < 30
        assert run(stack, "status").returncode == 1
    finally:
        os.kill(supervisor, signal.SIGCONT)

    # Released, the supervisor kills the frozen process and starts a fresh one, which becomes healthy.
    wait_for(
        lambda: not pid_alive(frozen),
        60,
        "the supervisor should kill the frozen worker",
        lambda: log_of(stack, "supervisor")[-4000:],
    )
    wait_for(
        lambda: (
            (service_pid(stack, "ledger-processor") or frozen) != frozen
            and row_state(run(stack, "status").stdout, "ledger-processor") == "healthy"
        ),
        90,
        "the supervisor should start a healthy replacement",
        lambda: log_of(stack, "supervisor")[-4000:],
    )
    assert "ledger-processor has not been healthy" in log_of(stack, "supervisor")


def test_a_crashed_worker_is_started_again(stack):
    crashed = service_pid(stack, "projector-payments")
    os.kill(crashed, signal.SIGKILL)
    wait_for(
        lambda: (
            (service_pid(stack, "projector-payments") or crashed) != crashed
            and row_state(run(stack, "status").stdout, "projector-payments") == "healthy"
        ),
        90,
        "the supervisor should start the crashed projector again",
        lambda: log_of(stack, "supervisor")[-4000:],
    )
    assert "projector-payments is not running" in log_of(stack, "supervisor")


def test_ogp_restart_restarts_one_component_only(stack):
    before = pids(Path(stack["OGP_STATE_DIR"]))
    result = run(stack, "restart", "projector-history")
    assert result.returncode == 0, result.stdout + result.stderr
    after = pids(Path(stack["OGP_STATE_DIR"]))
    assert after["projector-history"] != before["projector-history"] and pid_alive(after["projector-history"])
    assert not pid_alive(before["projector-history"])
    assert {k: v for k, v in after.items() if k != "projector-history"} == {
        k: v for k, v in before.items() if k != "projector-history"
    }
    assert row_state(run(stack, "status").stdout, "projector-history") == "healthy"

    unknown = run(stack, "restart", "no-such-thing")
    assert unknown.returncode == 1 and "unknown service" in unknown.stderr and "Traceback" not in unknown.stderr
