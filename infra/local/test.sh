#!/usr/bin/env bash
# Run the whole test suite on this machine: sets up what is missing, then pytest against real Kafka,
# PostgreSQL and Redis that the suite starts on free ports (and stops afterwards).
# Extra arguments go to pytest, e.g. `bash infra/local/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/local/bootstrap.sh --with-browser
exec .venv/bin/python -m pytest "$@"
