"""`python -m ledger_processor`: run one ledger processor until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from ledger_processor.runner import LedgerProcessor
from ogp.logs import configure_logging
from ogp.settings import get_settings


async def main() -> None:
    configure_logging("ledger-processor")
    processor = LedgerProcessor(get_settings())
    await processor.start()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(processor.run())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await processor.stop()


if __name__ == "__main__":
    try:
        import uvloop  # installed with uvicorn[standard]: a faster event loop for the hot path

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
