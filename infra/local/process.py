"""Start, track and stop background processes by pid file: never by a broad name."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ogp.errors import OperatorError


class PrerequisiteMissing(OperatorError):
    """A program the stack needs is not installed; the message says how to install it."""


class StackError(OperatorError):
    """A stack component failed to start or stop; the message says which and where its log is."""


INSTALL_HINTS = {
    "java": "apt-get install -y openjdk-17-jre-headless",
    "mvn": "apt-get install -y maven",
    "redis-server": "apt-get install -y redis-server",
    "initdb": "apt-get install -y postgresql",
    "pg_ctl": "apt-get install -y postgresql",
    "postgres": "apt-get install -y postgresql",
    "setpriv": "apt-get install -y util-linux",
    "prometheus": "apt-get install -y prometheus",
}


def require(program: str, search_path: Sequence[Path] = ()) -> str:
    """Path of ``program`` or a one-line PrerequisiteMissing saying how to install it."""
    for folder in search_path:
        candidate = Path(folder) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(program)
    if found:
        return found
    hint = INSTALL_HINTS.get(program, f"install {program}")
    raise PrerequisiteMissing(f"{program} not found: {hint} (or run ./scripts/setup.sh as root)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """A background process known by its pid file and log file under the stack's state dir."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached (own session), output to the log file; returns the pid."""
        existing = self.pid()
        if existing:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
        """Signal the process group we started, wait, then SIGKILL. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _reap(pid) and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _reap(pid) and pid_alive(pid):
                time.sleep(0.05)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # we started it with start_new_session, so pid == pgid
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> bool:
    """Collect ``pid`` if it is our exited child, so it does not linger as a zombie; always True."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2, log: ManagedProcess | None = None) -> None:
    """Poll ``predicate`` until true or raise StackError naming ``what`` (with the log's tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if log is not None and log.pid() is None:
            raise StackError(f"{what}: process exited; log {log.log_file}:\n{log.tail()}")
        time.sleep(interval)
    tail = f"; log {log.log_file}:\n{log.tail()}" if log is not None else ""
    raise StackError(f"{what}: not ready after {timeout:.0f}s{tail}")
