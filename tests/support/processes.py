"""Run the project's workers as real OS processes in tests (so they can be killed, stopped, resumed)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from infra.local.process import ManagedProcess, free_port, pid_alive
from ogp.settings import Settings
from tests.support.waiting import wait_until


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        "OGP_ENVIRONMENT": settings.environment,
        "OGP_DATABASE_URL": settings.sqlalchemy_url,
        "OGP_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
        "OGP_REDIS_URL": settings.redis_dsn,
    }
    env.update(extra)
    return env


class Worker:
    """``python -m <module>`` under a pid file and a log in ``run_dir``."""

    def __init__(self, module: str, name: str, run_dir: Path, settings: Settings, **env: str):
        self.module = module
        self.process = ManagedProcess(name, run_dir)
        self.env = worker_env(settings, **env)

    def start(self) -> int:
        return self.process.start([sys.executable, "-m", self.module], env=self.env)

    def kill9(self) -> None:
        pid = self.process.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: not _reaped_alive(pid), 30, f"{self.process.name} (pid {pid}) died of SIGKILL", interval=0.02
            )

    def stop(self) -> None:
        self.process.stop(timeout=20)

    def state(self) -> str | None:
        """The kernel's state letter (R, S, T for stopped, Z) or None when gone."""
        pid = self.process.pid()
        if pid is None:
            return None
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return None

    def log(self) -> str:
        try:
            return self.process.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _reaped_alive(pid: int) -> bool:
    """Whether ``pid`` still runs, collecting its exit status first if it is our child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return pid_alive(pid)


class Workers:
    """The workers one test starts, all stopped at its end (a SIGSTOPped one is continued first, so it can)."""

    def __init__(self, run_dir: Path, settings: Settings):
        self.run_dir, self.settings = run_dir, settings
        self.started: list[Worker] = []

    def __call__(self, module: str, name: str, **env: str) -> Worker:
        """A new worker (not started yet) that will be stopped with the others."""
        worker = Worker(module, name, self.run_dir, self.settings, **env)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            pid = worker.process.pid()
            if pid and worker.state() == "T":
                os.kill(pid, signal.SIGCONT)
            worker.stop()


def ogp_cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for running ``ogp`` on a state folder and free ports of its own (its stack, its services)."""
    return {
        **os.environ,
        "OGP_STATE_DIR": str(state_dir),
        "OGP_ENVIRONMENT": "development",
        **{
            f"OGP_{name}_PORT": str(free_port())
            for name in ("KAFKA", "KAFKA_CONTROLLER", "POSTGRES", "REDIS", "COMMAND_API", "QUERY_API")
            + ("MIDTRANS_SIM", "PROMETHEUS")
        },
        **extra,
    }
