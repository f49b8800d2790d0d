"""What every projector's long-running loop shares: stopping, its heartbeat, its database engine, and a retry
that never lets a failure end it. ``ogp.worker.run_worker`` runs it (health port, signals, bounded close)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from ogp.clients import async_engine
from ogp.settings import Settings
from ogp.worker import Backoff, Heartbeat, describe

log = logging.getLogger(__name__)


class ProjectorLoop:
    """``run()`` gives consumers one after another to ``_consume()`` until ``stop()``: a failure that escapes
    one (the broker gone, a consumer in a bad state) is logged and backed off, and the next one resumes from
    the projection's stored position. Subclasses name themselves and implement ``_consume()``."""

    name = "projector"
    retry_cap_seconds = 10.0

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None, heartbeat: Heartbeat | None = None):
        self.settings = settings
        self.heartbeat = heartbeat or Heartbeat(settings.health_stale_seconds)
        self._engine = engine
        self._owns_engine = engine is None
        self._stopping = asyncio.Event()
        self._closed_cleanly = True

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand and return."""
        self._stopping.set()

    def request_stop(self) -> None:
        """The worker protocol's name for ``stop()`` (ogp/worker.py)."""
        self.stop()

    async def close(self, timeout: float) -> bool:
        """Nothing stays open once ``run()`` has returned; False if closing a consumer was abandoned."""
        return self._closed_cleanly

    async def run(self) -> None:
        """Consume and project until stopped (or cancelled: an open transaction then rolls back)."""
        if self._engine is None:
            self._engine = async_engine(self.settings.sqlalchemy_url, pool_size=2, max_overflow=2)
        backoff = Backoff(cap=self.retry_cap_seconds)
        try:
            while not self._stopping.is_set():
                try:
                    await self._consume()
                except Exception as exc:
                    delay = backoff.next()
                    self.heartbeat.failed(exc)
                    log.warning("%s projector: %s; retrying in %.1fs with a new consumer", self.name, describe(exc),
                                delay, exc_info=exc)
                    await self._sleep(delay)
        finally:
            if self._owns_engine:
                await self._engine.dispose()
            log.info("%s projector stopped: %s", self.name, self.stats)

    async def _consume(self) -> None:
        """One consumer's life: start it, project until stopped, close it (bounded) on the way out."""
        raise NotImplementedError

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if asked to stop meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
