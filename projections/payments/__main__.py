"""``python -m projections.payments``: run the payments projector until SIGTERM or SIGINT (with /health, see
ogp/worker.py)."""

from __future__ import annotations

import sys

from ogp.worker import run_worker
from projections.payments.projector import PaymentsProjector


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m projections.payments", file=sys.stderr)
        return 2
    run_worker("projector-payments", lambda settings, heartbeat: PaymentsProjector(settings, heartbeat=heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
