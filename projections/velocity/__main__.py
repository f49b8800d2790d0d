"""``python -m projections.velocity``: run the velocity monitor (a faust app) until SIGTERM or SIGINT, with /health
and /metrics on the health port like every worker (see ogp/worker.py)."""

from __future__ import annotations

import sys

from ogp.worker import run_worker
from projections.velocity.monitor import VelocityMonitor


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m projections.velocity", file=sys.stderr)
        return 2
    run_worker("velocity-monitor", lambda settings, heartbeat: VelocityMonitor(settings, heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
