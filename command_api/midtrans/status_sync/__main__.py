"""``python -m command_api.midtrans.status_sync``: run the status sync until SIGTERM or SIGINT (with /health, see
ogp/worker.py)."""

from __future__ import annotations

import sys

from command_api.midtrans.status_sync.worker import StatusSync
from ogp.worker import run_worker


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m command_api.midtrans.status_sync", file=sys.stderr)
        return 2
    run_worker("status-sync", lambda settings, heartbeat: StatusSync(settings, heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
