"""``python -m projections.velocity.alerts``: run the velocity alerts projector until SIGTERM or SIGINT (with
/health, see ogp/worker.py)."""

from __future__ import annotations

import sys

from ogp.worker import run_worker
from projections.velocity.alerts.projector import VelocityAlertProjector


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m projections.velocity.alerts", file=sys.stderr)
        return 2
    run_worker(
        "projector-velocity-alerts", lambda settings, heartbeat: VelocityAlertProjector(settings, heartbeat=heartbeat)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
