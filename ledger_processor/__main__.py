"""`python -m ledger_processor`: run one ledger processor until SIGTERM/SIGINT (with /health, see ogp/worker.py)."""

from __future__ import annotations

from ledger_processor.runner import LedgerProcessor
from ogp.worker import run_worker

if __name__ == "__main__":
    run_worker("ledger-processor", lambda settings, heartbeat: LedgerProcessor(settings, heartbeat=heartbeat))
