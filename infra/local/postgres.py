"""A private PostgreSQL server from the Debian binaries: own data dir, port and socket dir."""

from __future__ import annotations

import glob
import os
import pwd
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from infra.local.process import ManagedProcess, StackError, require, wait_until

_SEARCH = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)


def _bin(program: str) -> str:
    return require(program, [Path(p) for p in _SEARCH])


class PostgresServer:
    """Runs ``postgres`` in the foreground under a pid file; as root it drops to the ``postgres`` user."""

    def __init__(self, base_dir: Path, port: int, user: str, password: str, database: str, host: str = "127.0.0.1"):
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "run"
        self.port = port
        self.host = host
        self.user = user
        self.password = password
        self.database = database
        self.process = ManagedProcess("postgres", self.base_dir)

    # -- helpers -----------------------------------------------------------------------------------
    def _as_owner(self) -> list[str]:
        """Prefix that runs a command as the data dir's owner (PostgreSQL refuses to run as root)."""
        if os.geteuid() != 0:
            return []
        require("setpriv")
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def conninfo(self, database: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database or self.database
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster once: superuser ``user`` with ``password``; scram on TCP, trust on the socket."""
        if self.initialised():
            return
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise StackError("user 'postgres' missing: apt-get install -y postgresql") from exc
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.data_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
            os.chmod(d, 0o700 if d == self.data_dir else 0o755)
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.base_dir) as pwfile:
            pwfile.write(self.password)
        self._chown(Path(pwfile.name))
        try:
            result = subprocess.run(
                [
                    *self._as_owner(),
                    _bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    f"--pwfile={pwfile.name}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self, timeout: float = 60) -> None:
        """Idempotent: initialise if needed, start, wait for connections, create the database."""
        if self.healthy():
            return
        self.init()
        self.process.run_dir.mkdir(parents=True, exist_ok=True)
        self.process.start(
            [
                *self._as_owner(),
                _bin("postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "wal_level=replica",
                "-c",
                "log_min_messages=warning",
                # Fewer checkpoints under bursts of ledger batches (durability is unchanged: fsync, sync commit).
                "-c",
                "max_wal_size=4GB",
                "-c",
                "checkpoint_timeout=15min",
            ]
        )
        wait_until(lambda: self._can_connect("postgres"), timeout, "PostgreSQL", log=self.process)
        self.create_database(self.database)

    def _can_connect(self, database: str) -> bool:
        try:
            with psycopg.connect(self.conninfo(database), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self, timeout: float = 60) -> bool:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        return self.process.stop(timeout=timeout, sig=signal.SIGINT)

    def running(self) -> bool:
        return self.process.running()

    def healthy(self) -> bool:
        return self.running() and self._can_connect(self.database)
