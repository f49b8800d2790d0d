#!/usr/bin/env bash
# Set up everything One Gate Payment needs on a fresh Debian machine: system packages (as root),
# the Python virtualenv with pinned dependencies, and the Kafka jars from Maven Central.
# Idempotent: a second run only checks. Usage: bash infra/local/bootstrap.sh [--with-browser]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WITH_BROWSER=0
[[ "${1:-}" == "--with-browser" ]] && WITH_BROWSER=1

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# --- system packages -------------------------------------------------------------------------------
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v setpriv >/dev/null || missing+=(util-linux)
# promtool tests the alert rules; the package also brings the Prometheus server for local monitoring.
command -v promtool >/dev/null || missing+=(prometheus)
# wrk drives the HTTP load benchmark (bench/http_load.py).
command -v wrk >/dev/null || missing+=(wrk)
if [[ $WITH_BROWSER == 1 ]]; then
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
fi
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The Debian package starts a system-wide server on the default ports; ours run privately.
    for svc in postgresql redis-server prometheus; do
      if command -v service >/dev/null; then service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  else
    die "missing system packages: ${missing[*]}. Install them: sudo apt-get install -y ${missing[*]}"
  fi
fi

# --- Python ----------------------------------------------------------------------------------------
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "Python 3.11 is required (found $("$PY" --version 2>&1))"
if [[ ! -x .venv/bin/python ]]; then
  say "creating virtualenv .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.ogp-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "installing Python dependencies (pinned by constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  echo "$want" > "$stamp"
fi

# --- Kubernetes manifest checks ---------------------------------------------------------------------
# tests/unit/test_deploy_manifests.py renders infra/kubernetes offline and validates it: kubernetes-validate
# (schemas) and checkov (policies) in a virtualenv of their own (their pins conflict with constraints.txt),
# and kustomize from the Go module proxy when neither kubectl nor kustomize is on the PATH.
tools=.venv/k8s-tools
tools_stamp=$tools/.ogp-installed
tools_want=$(sha256sum infra/kubernetes/validation-requirements.txt | cut -d' ' -f1)
if [[ ! -x $tools/bin/checkov || ! -x $tools/bin/kubernetes-validate || ! -f $tools_stamp \
      || $(cat "$tools_stamp") != "$tools_want" ]]; then
  say "installing the manifest checks (kubernetes-validate, checkov) into $tools"
  [[ -x $tools/bin/python ]] || "$PY" -m venv "$tools"
  "$tools/bin/python" -m pip install -q -r infra/kubernetes/validation-requirements.txt
  echo "$tools_want" > "$tools_stamp"
fi
if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null && [[ ! -x $tools/bin/kustomize ]]; then
  command -v go >/dev/null || die "rendering the manifests needs kubectl, kustomize or Go (to install kustomize)"
  say "installing kustomize into $tools/bin (Go module proxy)"
  GOBIN="$ROOT/$tools/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
fi

# --- Kafka jars ------------------------------------------------------------------------------------
say "checking the Kafka jars (Maven Central, cached in ~/.cache/ogp/kafka)"
.venv/bin/ogp stack fetch

say "ready: .venv/bin/ogp is installed"
