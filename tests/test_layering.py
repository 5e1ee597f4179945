"""The layering of src/trackmesh, enforced on its import graph (issue 18 item 7, docs/architecture.md).

- The protocol-neutral layers import nothing above them: ``core/`` only ``errors``/``net``;
  the shared media layers ``rtp/``, ``codecs/``, ``sdp/`` only each other, ``core``,
  ``errors`` and ``net``; never a transport, the runtime, HTTP, the gateway, the CLI or the
  load tester.
- Transports import no driver (runtime, HTTP, gateway, CLI, load tester), and no transport
  imports another, except that the transports which signal over a WebRTC connection (the SDK
  and WHIP/WHEP) drive ``transports/webrtc``.
- The connector imports only ``core``, ``errors`` and ``security``; only its drivers (runtime,
  HTTP) and tools import it.
- No import cycles. Every import counts, also those under ``TYPE_CHECKING`` and inside
  functions: both are design dependencies (a reader needs the other module to follow this one).

Cycles that are still being opened are listed in :data:`KNOWN_CYCLES`. The list may only
shrink: a new cycle fails, and so does an entry that no longer matches a cycle exactly (opened
or changed), so the list cannot go stale.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import trackmesh

ROOT = Path(trackmesh.__file__).parent

#: Import cycles (strongly connected components of the module graph) not yet opened, each with
#: the change of issue 18 that opens it. Remove an entry when its cycle is gone; never add one.
KNOWN_CYCLES: list[frozenset[str]] = []

#: What each lower layer may import from trackmesh besides itself (top-level packages/modules).
LOWER_LAYERS: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "net": frozenset(),
    # security/ (keys derived from the app secret, tokens, throttling) imports nothing of ours.
    "security": frozenset(),
    "core": frozenset({"errors", "net", "security"}),
    "rtp": frozenset({"codecs", "sdp", "core", "errors", "net"}),
    "codecs": frozenset({"rtp", "sdp", "core", "errors", "net"}),
    "sdp": frozenset({"rtp", "codecs", "core", "errors", "net"}),
    # The connector (event log, webhooks, apps): sans-IO cores (events, outbox, rooms, signing, source)
    # and its service modules (storage, ingest, service); the media core's ids and track kinds, the
    # shared key derivation. Its drivers live above it: runtime/connector.py, http/connector_http.py.
    "connector": frozenset({"core", "errors", "security"}),
    # Recording (docs/recording.md): sans-IO track recorders on the codecs' depacketizers, and its own
    # drivers (the writer thread, PyAV muxers); the runtime and HTTP drive it, never the reverse.
    "recording": frozenset({"codecs", "core", "errors", "rtp", "sdp", "net"}),
}
#: Who may import the connector: its drivers (the node's runtime, HTTP routes), the flag parser
#: (config.py checks --hook-secret with connector/signing.py) and tools; never a transport or a media
#: layer (they report through core/audit.py's EndpointAudit).
CONNECTOR_USERS = frozenset({"connector", "runtime", "http", "config", "cli", "bench"})
#: Drivers and tools: no transport imports them.
DRIVERS = frozenset({"runtime", "http", "gateway", "router", "cli", "bench", "loadtest"})
#: Transports that signal over a WebRTC connection drive transports/webrtc; no other transport pair is allowed.
TRANSPORT_BASES: dict[str, frozenset[str]] = {
    "sdk": frozenset({"webrtc"}),
    "whip_whep": frozenset({"webrtc"}),
}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its own name, not ``__init__``)."""
    mods: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        mods[".".join(parts).removesuffix(".__init__")] = path
    return mods


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports anywhere in its source.

    ``from a.b import c`` points at ``a.b.c`` when that is a module, else at ``a.b``; relative
    imports are resolved; imports under ``if TYPE_CHECKING:`` and inside functions count."""
    mods = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[list[str]] = []
            if isinstance(node, ast.Import):
                targets = [[alias.name] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [[f"{base}.{alias.name}", base] for alias in node.names]
            for candidates in targets:
                for name in candidates:
                    while name and name not in mods:
                        name = name.rpartition(".")[0]  # `import a.b.c` depends on the module a.b.c names
                    if name:
                        if name != mod:
                            graph[mod].add(name)
                        break
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _layer(module: str) -> str:
    """``trackmesh.rtp.srtp`` -> ``rtp``; ``trackmesh.errors`` -> ``errors``; ``trackmesh`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _transport(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "transports" else None


GRAPH = import_graph(ROOT, "trackmesh")


def _show(pairs: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"  {a} imports {b}" for a, b in sorted(pairs))


def test_the_graph_covers_the_tree() -> None:
    assert len(GRAPH) > 100
    assert "trackmesh.transports.webrtc.dtls.keying" in GRAPH["trackmesh.transports.webrtc.peer"]
    assert "trackmesh.rtp.srtp" in GRAPH["trackmesh.transports.webrtc.dtls.keying"]


def test_lower_layers_import_nothing_above_them() -> None:
    bad = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        if _layer(mod) in LOWER_LAYERS
        for dep in deps
        if _layer(dep) != _layer(mod) and _layer(dep) not in LOWER_LAYERS[_layer(mod)]
    ]
    assert not bad, "a lower layer imports a higher one:\n" + _show(bad)


def test_transports_import_no_driver_and_no_other_transport() -> None:
    bad = []
    for mod, deps in GRAPH.items():
        own = _transport(mod)
        if own is None:
            continue
        for dep in deps:
            other = _transport(dep)
            if _layer(dep) in DRIVERS or (
                other is not None and other != own and other not in TRANSPORT_BASES.get(own, frozenset())
            ):
                bad.append((mod, dep))
    assert not bad, "a transport imports a driver or another transport:\n" + _show(bad)


def test_only_drivers_import_the_connector() -> None:
    bad = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        for dep in deps
        if _layer(dep) == "connector" and _layer(mod) not in CONNECTOR_USERS
    ]
    assert not bad, "the connector is imported by a layer that must report through core/audit.py:\n" + _show(bad)


def test_http_and_the_gateway_app_never_import_what_composes_them() -> None:
    """The routers see the node through http/api.py NodeApi and the gateway app through gateway/api.py
    GatewayApi; the node (runtime/, gateway/node.py) composes them, never the other way round."""
    bad = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        for dep in deps
        if (_layer(mod) == "http" and _layer(dep) == "runtime")
        or (mod.startswith("trackmesh.gateway.") and dep == "trackmesh.gateway.node")
    ]
    assert not bad, "a composed part imports its composition root:\n" + _show(bad)


def test_no_import_cycles_beyond_the_known_ones() -> None:
    found = set(cycles(GRAPH))
    new = [sorted(c) for c in found - set(KNOWN_CYCLES)]
    assert not new, f"import cycles (open them; KNOWN_CYCLES only shrinks): {new}"


def test_every_known_cycle_still_exists() -> None:
    found = set(cycles(GRAPH))
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, (
        f"KNOWN_CYCLES lists cycles that no longer exist exactly as listed: {gone}; "
        f"remove them (or shrink them to what is left: {sorted(sorted(c) for c in found)})"
    )


def test_the_checks_see_type_checking_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.b import B\n")
    (pkg / "sub" / "b.py").write_text("def f() -> None:\n    from ..c import C\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom pkg import sub\n")
    (pkg / "d.py").write_text("from .a import x\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub.b"},
        "pkg.c": {"pkg.a", "pkg.sub"},
        "pkg.d": {"pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c"},
    }
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.sub.b", "pkg.c"})]
    assert cycles({"x": {"y"}, "y": set()}) == []
