"""npm packages the tests use (the atm0s SDK and its test page), installed once per lock file.

``npm ci`` needs the npm registry, which the private network namespace of the test run cannot
reach, so ``scripts/test.sh`` primes every fixture first (``python -m tests.npm_fixtures``)
outside the namespace; inside, the tests find them installed. The cache directory is
``$TRACKMESH_NPM_FIXTURES`` or ``~/.cache/trackmesh/npm-fixtures``, one folder per lock file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent
FIXTURES = {
    "sdk_package": ROOT / "transports" / "sdk" / "sdk_package",
    "sdk_page": ROOT / "e2e" / "sdk_page",
    "webhook_js_verifier": ROOT / "connector" / "js_verifier",
}


class NpmFixtureError(RuntimeError):
    pass


def cache_dir(name: str) -> Path:
    lock = (FIXTURES[name] / "package-lock.json").read_bytes()
    base = Path(os.environ.get("TRACKMESH_NPM_FIXTURES", Path.home() / ".cache" / "trackmesh" / "npm-fixtures"))
    return base / f"{name}-{hashlib.sha256(lock).hexdigest()[:16]}"


def install(name: str) -> Path:
    """The folder where fixture ``name`` is installed (``npm ci`` on first use)."""
    target = cache_dir(name)
    done = target / ".installed"
    if done.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise NpmFixtureError("npm is not installed")
    target.mkdir(parents=True, exist_ok=True)
    for file in ("package.json", "package-lock.json"):
        shutil.copyfile(FIXTURES[name] / file, target / file)
    proc = subprocess.run(
        [npm, "ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=target,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise NpmFixtureError(f"npm ci failed in {target}:\n{proc.stdout[-1000:]}\n{proc.stderr[-2000:]}")
    done.write_text("ok\n")
    return target


def main() -> int:
    if shutil.which("node") is None:
        print("npm fixtures: node is not installed; the tests that need it will skip", file=sys.stderr)
        return 0
    for name in FIXTURES:
        print(f"npm fixtures: {name} -> {install(name)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
