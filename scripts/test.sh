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
set +e
if [ "$#" -gt 0 ]; then
    log "pytest (inside a private network namespace with only loopback)"
    scripts/in-netns.sh .venv/bin/python -m pytest "$@"
    rc=$?
else
    # The whole suite. A few long tests that are independent of the rest and mostly wait (a hook
    # receiver down for 2 minutes, GStreamer sessions outliving ICE consent) or compile (mypyc) run
    # in a second pytest beside the main one, in their own namespace: about 6 minutes less on 2 cores.
    side=(
        "tests/e2e/test_connector.py::test_a_receiver_down_for_2_minutes_gets_everything_in_order_per_room"
        "tests/e2e/test_gst_long_sessions.py"
        "tests/test_compiled.py"
    )
    deselect=()
    for t in "${side[@]}"; do deselect+=(--deselect "$t"); done
    side_log=$(mktemp -t trackmesh-side-tests.XXXXXX)
    log "pytest, long independent tests beside the rest (private network namespaces, loopback only; log: $side_log)"
    scripts/in-netns.sh .venv/bin/python -m pytest -p no:cacheprovider -ra "${side[@]}" >"$side_log" 2>&1 &
    side_pid=$!
    scripts/in-netns.sh .venv/bin/python -m pytest "${deselect[@]}"
    rc=$?
    wait "$side_pid"
    side_rc=$?
    log "the long independent tests (exit $side_rc):"
    cat "$side_log"
    rm -f "$side_log"
    [ "$rc" -ne 0 ] || rc=$side_rc
fi
set -e
# pytest exits 5 when no test was collected: that is a failure for us, never a pass.
exit $rc
