#!/usr/bin/env bash
# Run the whole test suite on this machine: sets up what is missing, then pytest against real Kafka,
# PostgreSQL and Redis that the suite starts on free ports (and stops afterwards).
# Extra arguments go to pytest, e.g. `bash infra/local/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/local/bootstrap.sh --with-browser
# The static checks first (seconds, and a failure here needs no infrastructure to explain it).
printf '\033[1m==>\033[0m %s\n' "static checks: ruff, ruff format, mypy, import contracts"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache | tail -n 1
exec .venv/bin/python -m pytest "$@"
