"""/samples/moq.html in Chromium: a GStreamer WHIP publisher in a room, watched over WebTransport
(draft-16, the node's certificate pinned by serverCertificateHashes) and decoded with WebCodecs.

Chromium runs without --disable-quic here (WebTransport is HTTP/3), inside the loopback netns like
every browser test."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, TrackmeshNode
from tests.e2e.test_moq_interop import free_udp_port, moq_metrics
from tests.e2e.test_moq_rooms import moq_token
from tests.e2e.test_whip_whep import Background

pytestmark = pytest.mark.e2e


@pytest.fixture
def node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    port = free_udp_port()
    node = TrackmeshNode("--moq-port", str(port))
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


@pytest.fixture
def quic_chromium() -> Iterator[Any]:
    """Chromium as the ``chromium`` fixture starts it, but with QUIC allowed (WebTransport needs it)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")
    profile = tempfile.mkdtemp(prefix="trackmesh-chromium-")
    pw = sync_api.sync_playwright().start()
    ctx = None
    try:
        args = [a for a in CHROMIUM_ARGS if a != "--disable-quic"]
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=args)
        yield ctx
    finally:
        if ctx is not None:
            ctx.close()
        pw.stop()
        shutil.rmtree(profile, ignore_errors=True)


def test_chromium_watches_a_room_over_webtransport(
    node: tuple[TrackmeshNode, int], quic_chromium: Any, gst_client: Any
) -> None:
    trackmesh, port = node
    room = "moqbrowser"
    publisher = Background(
        gst_client,
        "whip",
        trackmesh.url("/whip/endpoint"),
        "--token",
        trackmesh.token("whip", room, "pub"),
        "--codec",
        "vp8",
        "--duration",
        "6",
    )
    try:
        query = urllib.parse.urlencode(
            {"room": room, "port": port, "token": moq_token(trackmesh, room, "browser"), "autostart": 1}
        )
        page = quic_chromium.pages[0] if quic_chromium.pages else quic_chromium.new_page()
        page.goto(trackmesh.url(f"/samples/moq.html?{query}"))
        try:
            page.wait_for_function("window.moq.frames >= 30", timeout=15_000)
        finally:
            state = page.evaluate("({...window.moq, catalog: null})")
            print("moq.html:", state)
        status = page.evaluate("document.getElementById('status').textContent")
    finally:
        rc, summary, err = publisher.join()
    assert rc == 0, (summary, err[-1500:])
    assert state["track"] == "pub/video_main" and state["codec"] == "vp8", state
    assert state["frames"] >= 30 and (state["width"], state["height"]) == (640, 480), state
    assert state["decodeMs"] is not None and state["lagMs"] is not None, state
    assert state["error"] is None, state
    assert "640x480" in status, status  # what a person sees: frames, size and latency
    metrics = moq_metrics(trackmesh)
    assert metrics["webtransport_sessions_total"] >= 1, metrics
