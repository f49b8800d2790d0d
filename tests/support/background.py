"""An asyncio worker (``run`` / ``request_stop`` / ``close``) on its own event loop in a thread, for a ``with``
block: the status sync, the projectors, as ``ogp up`` runs them but inside the test process."""

from __future__ import annotations

import asyncio
import threading


class InBackground:
    """A worker (run / request_stop / close) on its own event loop in a thread, for the ``with`` block."""

    def __init__(self, worker):
        self.worker = worker
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=type(worker).__name__, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            try:
                await self.worker.run()
            finally:
                await self.worker.close(10)

        self._loop.run_until_complete(main())

    def __enter__(self):
        self._thread.start()
        return self.worker

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self.worker.request_stop)
        self._thread.join(30)
        self._loop.close()
