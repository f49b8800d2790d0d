"""``python -m projections.access_logs``: run the access-log projector until SIGTERM or SIGINT (with /health,
see ogp/worker.py)."""

from __future__ import annotations

import sys

from ogp.worker import run_worker
from projections.access_logs.projector import AccessLogProjector


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m projections.access_logs", file=sys.stderr)
        return 2
    run_worker("projector-access-logs", lambda settings, heartbeat: AccessLogProjector(settings, heartbeat=heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
