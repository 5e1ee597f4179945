"""The sans-IO rule, enforced: core modules import no clock, socket or event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import trackmesh

FORBIDDEN = {"asyncio", "socket", "time", "threading", "selectors", "uvloop", "select", "multiprocessing"}
ROOT = Path(trackmesh.__file__).parent
SANS_IO_PACKAGES = [
    "core",
    "cluster/local.py",
    "errors.py",
    "net.py",
    "rtp",
    "codecs",
    "sdp",
    "transports/webrtc",
    "transports/whip_whep",
    "transports/sdk",
    "transports/sip",
    "transports/rtmp",
]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sans_io_files() -> list[Path]:
    files: list[Path] = []
    for entry in SANS_IO_PACKAGES:
        p = ROOT / entry
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def test_sans_io_modules_import_no_io() -> None:
    files = sans_io_files()
    assert len(files) >= 10
    offenders = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom asyncio import sleep\n")
    assert imported_modules(bad) & FORBIDDEN == {"time", "asyncio"}
