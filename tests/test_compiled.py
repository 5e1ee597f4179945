"""The mypyc-compiled hot modules (setup.py) behave as the pure-Python ones.

The suite itself runs on the editable, pure-Python install. This test builds the modules a wheel
compiles (``setup.py``'s HOT_MODULES and its C send helper, with the same setup.py) from a copy of
the source, checks they load as native code, and runs the tests of the packet path against them:
mypyc enforces annotations at run time and refuses some dynamic tricks, so a module that only works
interpreted fails here, not in a user's ``pip install .``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The tests of everything the compiled modules touch.
PACKET_PATH_TESTS = [
    "tests/rtp",
    "tests/codecs",
    "tests/core",
    "tests/transports/webrtc",
    "tests/transports/sdk",
    "tests/transports/whip_whep",
    # The native send helper (setup.py's SENDMMSG) and the worker's send path through it.
    "tests/runtime/test_udp_send.py",
    "tests/runtime/test_worker_runtime.py",
]
#: The plain C extensions setup.py builds beside the mypyc modules (Linux).
NATIVE_MODULES = ["trackmesh.runtime._sendmmsg"]


def hot_modules() -> list[str]:
    """setup.py's HOT_MODULES (read, not imported: importing setup.py would run setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "HOT_MODULES" for t in targets):
                value = ast.literal_eval(node.value) if node.value is not None else []
                return [str(v) for v in value]
    raise AssertionError("setup.py has no HOT_MODULES")


@pytest.fixture(scope="module")
def compiled_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.fail("no C compiler (cc/gcc): the compiled modules cannot be built or tested here")
    build = tmp_path_factory.mktemp("compiled")
    shutil.copytree(ROOT / "src", build / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "setup.py", build)
    shutil.copy(ROOT / "pyproject.toml", build)
    env = {k: v for k, v in os.environ.items() if k != "TRACKMESH_PURE_PYTHON"}
    out = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=build,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pure-Python" not in out.stderr, out.stderr[-3000:]
    return build / "src"


def test_the_hot_modules_load_as_native_code(compiled_src: Path) -> None:
    names = [path[len("src/") : -len(".py")].replace("/", ".") for path in hot_modules()]
    assert len(names) >= 10
    names += NATIVE_MODULES
    probe = "import importlib, sys\nfor n in sys.argv[1:]:\n    print(n, importlib.import_module(n).__file__)\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, *names],
        env={**os.environ, "PYTHONPATH": str(compiled_src)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    files = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert set(files) == set(names)
    interpreted = [n for n, f in files.items() if not f.endswith(".so")]
    assert interpreted == [], f"loaded as Python, not compiled: {interpreted}"


def test_the_packet_path_tests_pass_on_the_compiled_modules(compiled_src: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *PACKET_PATH_TESTS],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{compiled_src}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
