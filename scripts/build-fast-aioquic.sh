#!/usr/bin/env bash
# Optional: compiles aioquic's per-packet modules with Cython and installs that build of aioquic
# into trackmesh's virtualenv. The MoQ relay then spends less CPU per delivered object (figures in
# docs/benchmarks.md, "aioquic compiled with Cython"); everything behaves the same. Without it,
# trackmesh runs aioquic as pip installs it, in pure Python.
#
#   scripts/build-fast-aioquic.sh                 # into .venv (a minute or two on 2 cores)
#   scripts/build-fast-aioquic.sh --venv DIR      # into another virtualenv
#   scripts/build-fast-aioquic.sh --undo          # back to aioquic's own wheel from PyPI
#
# What it does, reproducibly:
# - builds from aioquic's sdist of the version pinned below (the one trackmesh is tested with),
#   checked against its SHA-256, with Cython and setuptools pinned by version and SHA-256, in a
#   throw-away virtualenv (pip --require-hashes); scripts/fast_aioquic_setup.py runs aioquic's own
#   setup.py with the compiled modules added;
# - installs the wheel over the venv's aioquic (same version: nothing that depends on it changes),
#   then runs `python -m trackmesh.runtime.aioquic_build --check`; if that fails, puts aioquic's
#   own wheel back.
# Without a C compiler or Python's headers it changes nothing and says so (exit 0).
# The node says which aioquic it runs: its banner's "MoQ relay" line and its start log.
set -euo pipefail

AIOQUIC_VERSION=1.7.2
AIOQUIC_SDIST_SHA256=4def7cb0a692dc12c995cc397a93f41b78cc30b7bf078769c3a3bb1ba9dcf362
BUILD_REQUIREMENTS="
cython==3.3.1 \
    --hash=sha256:26a28e0ca5dffe9c7d69d1e3a0f78cb74f41b2b6b40771f620262a5d04862a00 \
    --hash=sha256:61abc7feedd20dac6c4ff7ab3a30e17136a067b242ab9253e2b4a6d9a72c2b61
setuptools==84.2.1 \
    --hash=sha256:ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2
"

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
undo=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --venv) venv=$2; shift 2 ;;
        --undo) undo=1; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-fast-aioquic: unknown argument $1 (--venv DIR, --undo)" >&2; exit 2 ;;
    esac
done
venv=$(cd "$venv" 2>/dev/null && pwd) || { echo "build-fast-aioquic: no directory $venv" >&2; exit 1; }

log() { printf '[build-fast-aioquic] %s\n' "$*" >&2; }
py="$venv/bin/python"
[ -x "$py" ] || { log "no virtualenv at $venv (make it first: python3 -m venv $venv && $venv/bin/pip install .)"; exit 1; }
pip_quiet=(-q --disable-pip-version-check)

installed=$("$py" -c 'import importlib.metadata as m; print(m.version("aioquic"))' 2>/dev/null) || {
    log "aioquic is not installed in $venv (pip install . installs it)"; exit 1; }

pure_aioquic() {
    "$py" -m pip install "${pip_quiet[@]}" --no-deps --force-reinstall --only-binary aioquic "aioquic==$installed"
}

if [ "$undo" = 1 ]; then
    log "reinstalling aioquic $installed from its own wheel (pure Python)"
    pure_aioquic
    "$py" -m trackmesh.runtime.aioquic_build
    exit 0
fi
if [ "$installed" != "$AIOQUIC_VERSION" ]; then
    log "$venv has aioquic $installed; this script builds $AIOQUIC_VERSION only (its SHA-256 is pinned here)."
    log "Install that version first (pip install aioquic==$AIOQUIC_VERSION), or keep the pure-Python aioquic."
    exit 1
fi

# A C compiler that can build against this Python's headers; else nothing changes.
cc=${CC:-cc}
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v "$cc" >/dev/null 2>&1 || [ ! -f "$include/Python.h" ]; then
    log "no C compiler ($cc) or no Python headers ($include/Python.h): keeping the pure-Python aioquic"
    log "(same behaviour, more CPU per QUIC packet; on Debian/Ubuntu: apt-get install gcc python3-dev)"
    exit 0
fi

work=$(mktemp -d -t trackmesh-fast-aioquic.XXXXXX)
trap 'rm -rf "$work"' EXIT
log "build tools (Cython, setuptools; pinned by hash) in a throw-away virtualenv"
"$py" -m venv "$work/build"
printf '%s\n' "$BUILD_REQUIREMENTS" >"$work/build-requirements.txt"
"$work/build/bin/pip" install "${pip_quiet[@]}" --require-hashes --no-deps -r "$work/build-requirements.txt"

log "aioquic $AIOQUIC_VERSION's sdist (SHA-256 checked)"
printf 'aioquic==%s --hash=sha256:%s\n' "$AIOQUIC_VERSION" "$AIOQUIC_SDIST_SHA256" >"$work/aioquic-requirements.txt"
"$work/build/bin/pip" download "${pip_quiet[@]}" --no-deps --no-binary :all: --no-build-isolation \
    --require-hashes -r "$work/aioquic-requirements.txt" -d "$work/sdist"
tar -xzf "$work/sdist/aioquic-$AIOQUIC_VERSION.tar.gz" -C "$work"

log "compiling (Cython, then $cc)"
jobs=$(nproc 2>/dev/null || echo 1)
if ! (cd "$work/aioquic-$AIOQUIC_VERSION" && "$work/build/bin/python" "$root/scripts/fast_aioquic_setup.py" \
        -q build_ext -j "$jobs" bdist_wheel -d "$work/dist" >"$work/build.log" 2>&1); then
    tail -n 30 "$work/build.log" >&2
    log "compiling failed (above): the venv's aioquic is unchanged (pure Python)"
    exit 1
fi
wheel=$(ls "$work/dist"/aioquic-"$AIOQUIC_VERSION"-*.whl)

log "installing $(basename "$wheel") into $venv"
"$py" -m pip install "${pip_quiet[@]}" --no-deps --force-reinstall "$wheel"
if ! "$py" -m trackmesh.runtime.aioquic_build --check --expect-compiled; then
    log "the compiled aioquic failed its self-check: putting aioquic's own wheel back"
    pure_aioquic
    exit 1
fi
log "done; undo with: scripts/build-fast-aioquic.sh --undo"
