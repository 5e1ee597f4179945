"""Fixtures for end-to-end tests with real WebRTC clients (Chromium, GStreamer, aiortc).

Every test under tests/e2e runs only inside a private network namespace whose sole interface is
``lo`` (see scripts/in-netns.sh). The autouse ``netns_guard`` skips everything otherwise, so no
browser, libnice or aiortc traffic can ever leave the machine.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_roles import Cluster, running_cluster

CLIENTS_DIR = Path(__file__).parent / "clients"
CHROMIUM = "/usr/bin/chromium"
SYSTEM_PYTHON = "/usr/bin/python3"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",  # lets Chrome gather 127.0.0.1 host candidates
    # A recvonly page (no getUserMedia) would otherwise hide host IPs behind random *.local mDNS names.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


def network_interfaces() -> tuple[list[str], list[str]]:
    """Interfaces as seen by /sys/class/net and by /proc/net/dev (the latter always follows our netns)."""
    try:
        sys_view = sorted(os.listdir("/sys/class/net"))
    except OSError:
        sys_view = []
    proc_view = []
    try:
        with open("/proc/net/dev") as f:
            for line in f.readlines()[2:]:
                proc_view.append(line.split(":", 1)[0].strip())
    except OSError:
        pass
    return sys_view, sorted(proc_view)


def only_loopback() -> tuple[bool, str]:
    sys_view, proc_view = network_interfaces()
    ok = sys_view == ["lo"] and proc_view == ["lo"]
    return ok, f"/sys/class/net={sys_view} /proc/net/dev={proc_view}"


@pytest.fixture(scope="session", autouse=True)
def netns_guard() -> None:
    ok, seen = only_loopback()
    if not ok:
        pytest.skip(
            "e2e tests run only in a private network namespace with nothing but `lo` "
            f"(run them via scripts/in-netns.sh); found {seen}"
        )


# -- static pages on 127.0.0.1 ----------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class StaticServer:
    """Serves files from ``root`` on http://127.0.0.1:<ephemeral port>/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="static-http", daemon=True)
        self._thread.start()

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def add(self, name: str, content: str | bytes) -> str:
        """Write a file under the served root and return its URL."""
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return self.url(name)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "blank.html").write_text("<!doctype html><html><head><meta charset=utf-8></head><body></body></html>")
    srv = StaticServer(root)
    try:
        yield srv
    finally:
        srv.close()


# -- Chromium via Playwright ------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A Playwright (sync API) persistent Chromium context on a fresh temporary profile.

    Uses Debian's /usr/bin/chromium (never `playwright install`). Yields the BrowserContext; use
    ``chromium.pages[0]`` or ``chromium.new_page()``.
    """
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")
    profile = tempfile.mkdtemp(prefix="trackmesh-chromium-")
    pw = sync_api.sync_playwright().start()
    ctx = None
    try:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield ctx
    finally:
        if ctx is not None:
            ctx.close()
        pw.stop()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(chromium: Any, static_server: StaticServer) -> Any:
    """A page already on a blank secure-context URL served from 127.0.0.1."""
    pg = chromium.pages[0] if chromium.pages else chromium.new_page()
    pg.goto(static_server.url("blank.html"))
    return pg


@pytest.fixture
def get_stats() -> Any:
    """``get_stats(page, name)`` -> list of getStats() report dicts of peer connection ``name``."""
    from tests.e2e.clients.browser import read_stats

    return read_stats


# -- external client processes ----------------------------------------------------------------------


def run_client(args: list[str], *, system_python: bool, timeout: float = 60.0) -> tuple[int, dict[str, Any], str]:
    """Run a client script from tests/e2e/clients, return (exit code, parsed JSON summary, stderr).

    ``system_python=True`` runs it with /usr/bin/python3 (needed for gst_webrtc_client.py: python3-gi).
    """
    import json

    python = SYSTEM_PYTHON if system_python else sys.executable
    proc = subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, cwd=str(CLIENTS_DIR))
    summary: dict[str, Any] = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    return proc.returncode, summary, proc.stderr


@pytest.fixture
def gst_client() -> Any:
    """``gst_client("whep", url, "--duration", "3")`` -> (rc, summary, stderr), run with the system python."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is missing")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import GstWebRTC"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip("system python3 lacks python3-gi / gir1.2-gst-plugins-bad-1.0: " + probe.stderr.strip()[-200:])

    def run(*args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any], str]:
        return run_client([str(CLIENTS_DIR / "gst_webrtc_client.py"), *args], system_python=True, timeout=timeout)

    return run


@pytest.fixture
def aiortc_client() -> Any:
    """``aiortc_client("whip", url, "--duration", "3")`` -> (rc, summary, stderr), run with the venv python."""
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")

    def run(*args: str, timeout: float = 60.0) -> tuple[int, dict[str, Any], str]:
        return run_client([str(CLIENTS_DIR / "aiortc_client.py"), *args], system_python=False, timeout=timeout)

    return run


# -- a real trackmesh node --------------------------------------------------------------------------


class TrackmeshNode:
    """A ``trackmesh standalone`` process on a free loopback port (see tests/runtime/node_process.py).

    Its output is drained (by NodeProcess's thread) into ``lines`` (a full pipe would block the node). ``token``
    mints WHIP/WHEP tokens with the app secret; ``url`` builds absolute URLs; ``info`` is
    GET /api/node/info.
    """

    def __init__(self, *args: str, wait: bool = True) -> None:
        """``wait=False``: started, not yet ready (``node.proc.wait_ready()`` when the test wants)."""
        from tests.runtime.node_process import NodeProcess

        self.proc = NodeProcess(*args)
        self.record_dir = Path(args[args.index("--record-dir") + 1]) if "--record-dir" in args else None
        self.base = self.proc.base
        self.secret = self.proc.secret
        self.lines = self.proc.lines  # the node's output, drained as it comes by NodeProcess
        if wait:
            self.proc.wait_ready()

    def url(self, path: str) -> str:
        return self.base + "/" + path.lstrip("/")

    def token(self, kind: str, room: str, peer: str | None = None, ttl: int = 600) -> str:
        body: dict[str, Any] = {"room": room, "ttl": ttl}
        if peer is not None:
            body["peer"] = peer
        status, resp = self.proc.json("POST", f"/token/{kind}", body, token=self.secret)
        assert status == 200 and resp["status"], (status, resp)
        return str(resp["data"]["token"])

    def info(self) -> dict[str, Any]:
        status, resp = self.proc.json("GET", "/api/node/info")
        assert status == 200, (status, resp)
        return dict(resp["data"])

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> int:
        import signal

        rc = self.proc.stop(signal.SIGINT)
        self.proc.join_output()
        return rc


@pytest.fixture(scope="module")
def trackmesh_node(netns_guard: None) -> Iterator[TrackmeshNode]:
    """One trackmesh node per test module (use distinct room names per test).

    Set TRACKMESH_E2E_LOG_LEVEL=debug to get the node's debug log in failure reports.
    """
    # Recordings (an API-started one, test_sdk_rooms) go to a temporary folder, not ./trackmesh-data.
    record_dir = tempfile.mkdtemp(prefix="trackmesh-rec-")
    node = TrackmeshNode("--log-level", os.environ.get("TRACKMESH_E2E_LOG_LEVEL", "info"), "--record-dir", record_dir)
    try:
        yield node
    finally:
        rc = node.stop()
        shutil.rmtree(record_dir, ignore_errors=True)
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


@pytest.fixture
def cluster(netns_guard: None) -> Iterator[Cluster]:
    """A cluster of trackmesh processes (gateways, media nodes, ...) for one test, closed after it.

    The close fails the test on what went wrong inside the processes (tracebacks, non-zero exits).
    Modules whose clients are not aiortc (SIP, GStreamer, MoQ) define their own ``cluster``.
    """
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    with running_cluster() as c:
        yield c
