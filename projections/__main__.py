"""``python -m projections``: run the history projector until SIGTERM or SIGINT.

``python -m projections rebuild`` instead empties the projection and replays the ledger events once.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from ogp.logs import configure_logging
from ogp.settings import get_settings
from projections.runner import HistoryProjector, rebuild


async def run() -> None:
    """Project ledger events into historical_transactions; a signal finishes the batch in hand and stops."""
    projector = HistoryProjector(get_settings())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, projector.stop)
    await projector.run()


def main(argv: list[str]) -> int:
    configure_logging("projector")
    if argv == ["rebuild"]:
        asyncio.run(rebuild(get_settings()))
    elif not argv:
        asyncio.run(run())
    else:
        print("usage: python -m projections [rebuild]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
