# syntax=docker/dockerfile:1.7
#
# One image for every One Gate Payment process (infra/kubernetes runs it as `one-gate-payment`):
#
#   docker build -t one-gate-payment:dev .
#   docker run --rm one-gate-payment:dev ogp --help
#   docker run --rm one-gate-payment:dev <service>      # a name from the table in ogp-service below
#
# builder: a virtualenv with the wheel of this repository and its dependencies, pinned by constraints.txt
# (runtime dependencies only: the [test] extra is never installed). runtime: that virtualenv on a clean
# slim base, run as the non-root user 10001 (the manifests require a non-root user and fix no UID,
# so OpenShift may assign its own).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder ----------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# constraints.txt pins what runs; these pin what builds our wheel (the versions of the development .venv).
ARG SETUPTOOLS_VERSION=84.2.1
ARG WHEEL_VERSION=0.48.0

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY . .

RUN python -m pip install "setuptools==${SETUPTOOLS_VERSION}" "wheel==${WHEEL_VERSION}" \
 && python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python -m pip install --constraint constraints.txt /wheels/*.whl \
 && python -m pip uninstall --yes setuptools wheel \
 && python -m pip check

# `-c` only constrains what it names: fail the build if anything installed is missing from constraints.txt
# or differs from its pin, so a new dependency cannot slip in unpinned.
RUN python - <<'EOF'
import re
from importlib.metadata import distributions

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

pins = {}
for line in open("constraints.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        pins[norm(name)] = version.strip()
ours = {"one-gate-payment", "pip"}
bad = [f"{d.metadata['Name']}=={d.version} (pinned: {pins.get(norm(d.metadata['Name']), 'nothing')})"
       for d in distributions()
       if norm(d.metadata["Name"]) not in ours and pins.get(norm(d.metadata["Name"])) != d.version]
if bad:
    raise SystemExit("installed but not pinned by constraints.txt: " + ", ".join(sorted(bad)))
EOF

# The image's entry points, in one place. The Kubernetes manifests pass one of these names as `args`
# (tests/unit/test_dockerfile.py checks that every name resolves to a module or script that exists).
# Anything that is not a name here runs as given: `docker run ... python -c "..."`.
COPY --chmod=755 <<'EOF' /opt/venv/bin/ogp-service
#!/bin/sh
set -eu
[ "$#" -gt 0 ] || set -- ogp --help
service="$1"
shift
case "$service" in
  command-api)           exec uvicorn command_api.app:create_app --factory --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 20 "$@" ;;
  query-api)             exec uvicorn query_api.app:create_app --factory --host 0.0.0.0 --port 8001 --timeout-graceful-shutdown 20 "$@" ;;
  ledger-processor)      exec python -m ledger_processor "$@" ;;
  projector-history)     exec python -m projections.history "$@" ;;
  projector-payments)    exec python -m projections.payments "$@" ;;
  projector-access-logs) exec python -m projections.access_logs "$@" ;;
  velocity-monitor)      exec python -m projections.velocity "$@" ;;
  projector-velocity-alerts) exec python -m projections.velocity.alerts "$@" ;;
  status-sync)           exec python -m command_api.midtrans.status_sync "$@" ;;
  migrate)               exec ogp migrate "$@" ;;
  *)                     exec "$service" "$@" ;;
esac
EOF

# -- runtime ----------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="one-gate-payment" \
      org.opencontainers.image.description="One Gate Payment: APIs, ledger processor, projectors, migrations"

RUN groupadd --system --gid 10001 ogp \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/ogp --create-home --shell /usr/sbin/nologin ogp

COPY --from=builder /opt/venv /opt/venv

# Bytecode was compiled at install time; pods run with a read-only root filesystem (and /tmp as emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /home/ogp
USER 10001:10001

# 8000 command-api, 8001 query-api, 8081 a worker's /health (OGP_HEALTH_PORT in the manifests)
EXPOSE 8000 8001 8081

ENTRYPOINT ["ogp-service"]
CMD ["ogp", "--help"]
