#!/usr/bin/env bash
# The one command that installs everything the tests need and runs the whole suite:
# system packages (when root), the virtualenv, lint (ruff), types (mypy) and pytest.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# System packages for the real-client tests (browser, GStreamer, netns tools).
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    while read -r pkg; do
        case "$pkg" in ""|\#*) continue ;; esac
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
    done < scripts/system-packages.txt
    if [ -n "$missing" ]; then
        log "installing system packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PY" -m venv .venv
fi
log "installing trackmesh with test extras"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

log "npm fixtures (outside the network namespace: npm ci needs the registry)"
.venv/bin/python -m tests.npm_fixtures

log "MoQ interop client in .venv-moq (Python 3.12; outside the network namespace: pip needs the index)"
.venv/bin/python -m tests.moq_fixtures

log "ruff"
.venv/bin/ruff check src tests bench
log "mypy"
.venv/bin/mypy
log "pytest (inside a private network namespace with only loopback)"
set +e
scripts/in-netns.sh .venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when no test was collected: that is a failure for us, never a pass.
exit $rc
