"""A private Redis server from the Debian package: own port and working dir, no persistence."""

from __future__ import annotations

from pathlib import Path

import redis

from infra.local.process import ManagedProcess, require, wait_until


class RedisServer:
    def __init__(self, base_dir: Path, port: int, host: str = "127.0.0.1"):
        self.base_dir = Path(base_dir)
        self.port = port
        self.host = host
        self.process = ManagedProcess("redis", self.base_dir)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        if self.healthy():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.process.start(
            [
                require("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base_dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ]
        )
        wait_until(self.healthy, timeout, "Redis", log=self.process)

    def stop(self, timeout: float = 30) -> bool:
        return self.process.stop(timeout=timeout)

    def running(self) -> bool:
        return self.process.running()

    def healthy(self) -> bool:
        if not self.running():
            return False
        try:
            return bool(redis.Redis(host=self.host, port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False
