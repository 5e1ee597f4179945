"""What a new user sees, in Chromium against a real ``trackmesh standalone --dev`` node: the API docs
render with no internet (the network namespace has none, so a rendered Swagger UI proves the assets
are local), and the WHEP sample says whether anyone is publishing.

Run: scripts/in-netns.sh .venv/bin/pytest tests/e2e/test_samples_ux.py -v
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dev_node(netns_guard: None) -> Iterator[TrackmeshNode]:
    node = TrackmeshNode("--dev", "--log-level", os.environ.get("TRACKMESH_E2E_LOG_LEVEL", "info"))
    try:
        yield node
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def _record_requests(page: Any) -> tuple[list[str], dict[str, str]]:
    urls: list[str] = []
    failed: dict[str, str] = {}
    page.on("request", lambda req: urls.append(req.url))
    page.on("requestfailed", lambda req: failed.__setitem__(req.url, str(req.failure)))
    return urls, failed


def test_swagger_ui_and_redoc_render_offline(dev_node: TrackmeshNode, chromium: Any) -> None:
    page = chromium.new_page()
    urls, failed = _record_requests(page)
    page.goto(dev_node.url("/"))  # redirects to /docs
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "trackmesh" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_function("() => document.querySelectorAll('.swagger-ui .opblock').length >= 10", timeout=15_000)
    assert page.locator(".opblock-summary-path", has_text="/token/{kind}").count() >= 1
    page.goto(dev_node.url("/redoc"))
    # Rendered by redoc.standalone.js: the title and the operations as headings of the content pane.
    page.locator("h1", has_text="trackmesh").first.wait_for(timeout=15_000)
    page.locator("h2", has_text="Create a session token (atm0s 0.2 compatible)").first.wait_for(timeout=15_000)
    # Everything came from the node; the one foreign fetch ReDoc attempts (its logo) is blocked by the
    # page's Content-Security-Policy, not merely unreachable here.
    foreign = [u for u in urls if not u.startswith((dev_node.base, "data:", "blob:"))]
    assert all(failed.get(u) == "csp" for u in foreign), (foreign, failed)
    assert len(urls) - len(foreign) >= 6, urls


def _status(page: Any) -> str:
    return str(page.inner_text("#status")).split("\n")[0]


def _wait_status(page: Any, text: str, timeout_s: float) -> None:
    page.wait_for_function(
        "(t) => document.getElementById('status').textContent.split('\\n')[0] === t", arg=text, timeout=timeout_s * 1000
    )


def test_whep_sample_says_waiting_playing_and_publisher_left(dev_node: TrackmeshNode, chromium: Any) -> None:
    room = "ux-states"
    # No secret and no token anywhere: the --dev node hands the pages demo tokens (loopback only).
    viewer = chromium.new_page()
    viewer.goto(dev_node.url(f"/samples/whep.html?room={room}&autostart=1"))
    viewer.wait_for_function("() => window.tm.state === 'connected' || window.tm.state === 'failed'", timeout=20_000)
    assert viewer.evaluate("() => window.tm.state") == "connected", viewer.evaluate("() => window.tm.error")
    viewer.wait_for_timeout(3000)  # an empty room stays "waiting", never "connected" or "playing"
    assert _status(viewer) == "waiting for a publisher"

    publisher = chromium.new_page()
    publisher.goto(dev_node.url(f"/samples/whip.html?room={room}&peer=cam&autostart=1"))
    publisher.wait_for_function("() => window.tm.state === 'connected' || window.tm.state === 'failed'", timeout=20_000)
    assert publisher.evaluate("() => window.tm.state") == "connected", publisher.evaluate("() => window.tm.error")
    _wait_status(viewer, "playing", 20)
    viewer.wait_for_function("() => / [1-9][0-9]* frames decoded/.test(window.tm.stats || '')", timeout=15_000)
    frames = viewer.evaluate("() => window.tm.stats")
    assert _status(viewer) == "playing"

    publisher.click("#stop")  # DELETE on the WHIP session: the viewer's picture freezes
    publisher.wait_for_function("() => window.tm.state === 'stopped'", timeout=10_000)
    _wait_status(viewer, "publisher left", 10)
    assert viewer.evaluate("() => window.tm.state") == "connected"
    print("whep sample states: waiting for a publisher -> playing -> publisher left;", frames)
