"""Builds aioquic's wheel from its sdist with its per-packet modules compiled by Cython.

scripts/build-fast-aioquic.sh runs this in the unpacked sdist, with Cython and setuptools in a
throw-away virtualenv::

    python fast_aioquic_setup.py -q build_ext -j 2 bdist_wheel -d DIST

It runs aioquic's own setup.py with the modules below added to its extensions, so the wheel holds
everything aioquic's own build puts in it (``aioquic._buffer``, the package, its metadata and
version) plus one compiled module next to each of those ``.py`` files, which Python imports first.
aioquic's source is compiled as it is; the only thing added is a ``.pxd`` declaration file per
module of :data:`EXTENSION_TYPES` (see :func:`write_pxd`).
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path
from typing import Any

import setuptools

#: aioquic's modules that every QUIC packet goes through (docs/benchmarks.md, "Where the relay's
#: CPU goes"): packet building and parsing, streams, loss recovery and congestion control, AEAD and
#: header protection, and the asyncio protocol and server that read and send each datagram.
COMPILED = [
    "src/aioquic/quic/connection.py",
    "src/aioquic/quic/packet_builder.py",
    "src/aioquic/quic/packet.py",
    "src/aioquic/quic/stream.py",
    "src/aioquic/quic/recovery.py",
    "src/aioquic/quic/rangeset.py",
    "src/aioquic/quic/crypto.py",
    "src/aioquic/_crypto.py",
    "src/aioquic/quic/congestion/base.py",
    "src/aioquic/quic/congestion/cubic.py",
    "src/aioquic/quic/congestion/reno.py",
    "src/aioquic/asyncio/protocol.py",
    "src/aioquic/asyncio/server.py",
    "src/aioquic/buffer.py",
]

#: The modules whose plain classes (the connection, packet builder, recovery, streams, crypto
#: contexts) become extension types: their instance attributes are C slots, so ``self._x`` is a
#: pointer read instead of a dictionary lookup (a third of the compiled build's time without it).
EXTENSION_TYPES = [
    "src/aioquic/quic/connection.py",
    "src/aioquic/quic/packet_builder.py",
    "src/aioquic/quic/recovery.py",
    "src/aioquic/quic/stream.py",
    "src/aioquic/quic/crypto.py",
    "src/aioquic/quic/congestion/base.py",
]

#: Annotations are not types here: aioquic is type-checked with strict_optional = false (a
#: ``-> float`` may return None), so typing by annotation would turn such a None into a TypeError
#: at run time. Every value stays a Python object, with the same semantics as interpreted.
DIRECTIVES = {"language_level": 3, "annotation_typing": False}


def module_name(path: str) -> str:
    return path.removeprefix("src/").removesuffix(".py").replace("/", ".")


def instance_attributes(cls: ast.ClassDef) -> list[str]:
    """Every ``self.NAME`` a method of ``cls`` assigns, less the names its class body defines
    (methods, properties, class attributes) and private ``__names`` (mangled)."""
    in_body = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            in_body.add(item.name)
        elif isinstance(item, ast.Assign):
            in_body.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            in_body.add(item.target.id)
    names: list[str] = []
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if not (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"):
                    continue
                if not t.attr.startswith("__") and t.attr not in in_body and t.attr not in names:
                    names.append(t.attr)
    return names


def write_pxd(path: str) -> list[str]:
    """Declares each plain class of the module at ``path`` (no base, no decorator, no class-level
    annotations) an extension type in a ``.pxd`` beside it (Cython's "augmenting .pxd"): each
    attribute its methods assign is a ``public object`` slot, readable and writable from Python.

    What stays as interpreted: any attribute may still be set on an instance (``__dict__``), weak
    references work, Python classes may subclass it and override its methods. What differs: the
    class's own attributes cannot be reassigned at run time (no monkeypatching of its methods), and
    a slot never assigned reads None instead of raising AttributeError."""
    tree = ast.parse(Path(path).read_text())
    lines, classes = [], []
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef) or cls.decorator_list or cls.bases or cls.keywords:
            continue
        if any(isinstance(item, ast.AnnAssign) for item in cls.body):
            continue
        classes.append(cls.name)
        lines += [f"cdef class {cls.name}:", "    cdef dict __dict__", "    cdef object __weakref__"]
        lines += [f"    cdef public object {name}" for name in instance_attributes(cls)]
        lines.append("")
    if lines:
        Path(path.removesuffix(".py") + ".pxd").write_text("\n".join(lines))
    return classes


def main() -> None:
    from Cython.Build import cythonize

    missing = [path for path in COMPILED if not Path(path).is_file()]
    if missing or not Path("setup.py").is_file():
        sys.exit(f"fast_aioquic_setup.py: run it in aioquic's unpacked sdist (missing: {missing or 'setup.py'})")
    for path in EXTENSION_TYPES:
        print(f"{module_name(path)}: extension types {', '.join(write_pxd(path))}", file=sys.stderr)
    aioquic_setup = setuptools.setup

    def setup_with_compiled_modules(**kwargs: Any) -> None:
        extensions = [setuptools.Extension(module_name(path), [path]) for path in COMPILED]
        kwargs["ext_modules"] = [*kwargs.get("ext_modules", []), *cythonize(extensions, compiler_directives=DIRECTIVES)]
        # aioquic's own wheel is tagged abi3 (its one extension uses only the limited API); the
        # Cython modules are built for this Python version only, and the wheel's tag must say so.
        kwargs.pop("options", None)
        aioquic_setup(**kwargs)

    setuptools.setup = setup_with_compiled_modules
    runpy.run_path("setup.py", run_name="__main__")


if __name__ == "__main__":
    main()
