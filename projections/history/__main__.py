"""``python -m projections.history``: run the history projector until SIGTERM or SIGINT (with /health, see
ogp/worker.py). ``python -m projections.history rebuild`` instead empties the projection and replays the
ledger events once.
"""

from __future__ import annotations

import asyncio
import sys

from ogp.logs import configure_logging
from ogp.settings import get_settings
from ogp.worker import run_worker
from projections.history.projector import HistoryProjector, rebuild


def main(argv: list[str]) -> int:
    if argv == ["rebuild"]:
        configure_logging("projector-history")
        asyncio.run(rebuild(get_settings()))
    elif not argv:
        run_worker("projector-history", lambda settings, heartbeat: HistoryProjector(settings, heartbeat=heartbeat))
    else:
        print("usage: python -m projections.history [rebuild]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
