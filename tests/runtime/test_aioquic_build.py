"""Which aioquic the MoQ relay runs, its self-check, and the optional compiled build's script
(scripts/build-fast-aioquic.sh; the build itself takes minutes and runs by hand, docs/moq.md "Speed")."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from trackmesh.runtime.aioquic_build import HOT_MODULES, compiled_modules, describe, self_check

ROOT = Path(__file__).resolve().parents[2]


def test_describe_says_the_version_and_whether_it_is_compiled() -> None:
    text = describe()
    match = re.fullmatch(r"aioquic (\d+\.\d+\.\d+), (compiled|pure Python)", text)
    assert match, text
    assert (match.group(2) == "compiled") == (HOT_MODULES[0] in compiled_modules())


def test_self_check_moves_data_both_ways_through_losses() -> None:
    self_check(payload_size=100_000)


def test_the_build_script_changes_nothing_without_a_compiler() -> None:
    before = describe()
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/build-fast-aioquic.sh"), "--venv", str(Path(sys.executable).parent.parent)],
        env={**os.environ, "CC": "/nonexistent/cc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "builds 1.7.2 only" in out.stderr:  # another aioquic: the script refuses before looking for a compiler
        assert out.returncode == 1, out.stderr
        return
    assert out.returncode == 0, out.stderr
    assert "keeping the pure-Python aioquic" in out.stderr, out.stderr
    assert describe() == before


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fast_aioquic_setup", ROOT / "scripts/fast_aioquic_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pxd_declares_the_attributes_each_plain_class_assigns(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from dataclasses import dataclass\n"
        "class Sender:\n"
        "    limit = 4\n"
        "    def __init__(self):\n"
        "        self._buffer = bytearray()\n"
        "        self.offset, self.limit = 0, 8\n"
        "        self.__private = 1\n"
        "    @property\n"
        "    def size(self):\n"
        "        return len(self._buffer)\n"
        "    def push(self, data):\n"
        "        self._buffer += data\n"
        "        self.offset += len(data)\n"
        "        self.pending: bool = True\n"
        "class Error(Exception):\n"
        "    def __init__(self):\n"
        "        self.code = 1\n"
        "@dataclass\n"
        "class Frame:\n"
        "    data: bytes\n"
        "class Annotated:\n"
        "    _key: bytes\n"
    )
    assert _setup_module().write_pxd(str(source)) == ["Sender"]
    assert (tmp_path / "sample.pxd").read_text().splitlines() == [
        "cdef class Sender:",
        "    cdef dict __dict__",
        "    cdef object __weakref__",
        "    cdef public object _buffer",
        "    cdef public object offset",
        "    cdef public object pending",
    ]
