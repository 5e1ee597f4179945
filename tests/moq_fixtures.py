"""The MoQ test clients (aiomoqt's ``moq-interop-client``, moq-rs) in their own Python 3.12 virtualenv.

aiomoqt 0.13.3 needs Python >= 3.12 (on 3.11 pip silently picks 0.5.3, draft-14 only), and the
suite runs on 3.11, so the client lives in ``.venv-moq`` next to ``.venv``, made from the first
Python 3.12 found: ``$TRACKMESH_PYTHON312``, ``python3.12`` on PATH, or pyenv's 3.12.x.
``pip`` needs the package index, which the private network namespace of the test run cannot
reach, so ``scripts/test.sh`` primes it first (``python -m tests.moq_fixtures``); inside, the
tests find it installed, or fail with the reason it is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
VENV = Path(os.environ.get("TRACKMESH_MOQ_VENV", ROOT / ".venv-moq"))
AIOMOQT = "aiomoqt==0.13.3"
# moq-rs: the Rust moq-dev stack (moq-ffi) as a second, independent client.
MOQ_RS = "moq-rs==0.5.1"
CLIENT = VENV / "bin" / "moq-interop-client"
PYTHON = VENV / "bin" / "python"
MARKER = VENV / f".installed-{AIOMOQT}-{MOQ_RS}"


class MoqFixtureError(RuntimeError):
    pass


def _runs(python: str) -> bool:
    # A pyenv shim is on PATH even when 3.12 is not the selected version, and then exits 127:
    # only an interpreter that actually starts counts.
    try:
        return subprocess.run([python, "-c", "import venv"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_python312() -> str | None:
    explicit = os.environ.get("TRACKMESH_PYTHON312")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidates: list[str] = []
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv", "/opt/pyenv"]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.12*", "bin", "python3.12")), reverse=True)
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if _runs(candidate):
            return candidate
    return None


def interop_client() -> Path:
    """The installed client, or MoqFixtureError saying what is missing and how to get it."""
    if MARKER.exists() and CLIENT.exists():
        return CLIENT
    if find_python312() is None:
        raise MoqFixtureError(
            "the MoQ interop tests need Python 3.12 for aiomoqt 0.13.3 (moq-interop-client) and none was found: "
            "install one (e.g. `pyenv install 3.12`) or set TRACKMESH_PYTHON312=/path/to/python3.12, "
            "then run `python -m tests.moq_fixtures` (scripts/test.sh does it)"
        )
    raise MoqFixtureError(
        f"{CLIENT} is not installed: run `python -m tests.moq_fixtures` outside the network namespace "
        "(scripts/test.sh does it before pytest)"
    )


def install() -> Path:
    if MARKER.exists() and CLIENT.exists():
        return CLIENT
    python = find_python312()
    if python is None:
        raise MoqFixtureError(interop_client.__doc__ or "no Python 3.12")
    if not (VENV / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", AIOMOQT, MOQ_RS],
        check=True,
    )
    MARKER.touch()
    return CLIENT


if __name__ == "__main__":
    try:
        print(f"moq-interop-client: {install()}")
    except (MoqFixtureError, subprocess.CalledProcessError) as exc:
        # Not fatal here: the MoQ interop tests fail with this reason; everything else still runs.
        print(f"moq-interop-client unavailable: {exc}", file=sys.stderr)
