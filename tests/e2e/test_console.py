"""The console (/console, docs/console.md) with Chromium against a real ``trackmesh standalone``:
log in, see a WHIP publisher's room, peer and track appear, open its timeline, kick it (its
connection ends), and the refusals: wrong secret, no cookie, cross-site requests, HTML in names.

Screenshots go to ``test-artifacts/console/`` (or ``$TRACKMESH_ARTIFACTS/console/``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import StaticServer, TrackmeshNode
from tests.promtool import PROMTOOL, PrometheusServer, promtool_problems, sample
from tests.runtime.node_process import http

pytestmark = pytest.mark.e2e

XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = Path(os.environ.get("TRACKMESH_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


_T0 = [0.0]


def phase(name: str) -> None:
    now = time.monotonic()
    print(f"console: +{now - _T0[0]:.1f} s {name}")
    _T0[0] = now


def shot(page: Any, name: str) -> None:
    out = ARTIFACTS / "console"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def login(page: Any, node: TrackmeshNode, secret: str) -> None:
    page.goto(node.url("/console"))
    page.fill("#secret", secret)
    page.press("#secret", "Enter")  # a form: Enter submits
    page.wait_for_load_state()


def publish(chromium: Any, node: TrackmeshNode, room: str, peer: str) -> Any:
    """A WHIP publisher (the sample page, Chromium's fake camera) connected to ``room`` as ``peer``."""
    pub = chromium.new_page()
    query = urllib.parse.urlencode({"room": room, "peer": peer, "token": node.token("whip", room, peer)})
    pub.goto(node.url(f"/samples/whip.html?{query}&autostart=1"))
    pub.wait_for_function("() => window.tm && (window.tm.state === 'connected' || window.tm.state === 'failed')",
                          timeout=20_000)  # fmt: skip
    assert pub.evaluate("() => window.tm.state") == "connected", node.log_tail()
    return pub


def login_cookie(node: TrackmeshNode, secret: str, origin: str) -> tuple[int, str]:
    """POST the login form without following its redirect: (status, the Set-Cookie header)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(node.base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("POST", "/console/login", urllib.parse.urlencode({"secret": secret}),
                     {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin})  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("set-cookie") or ""
    finally:
        conn.close()


class Console:
    """The node's console API, logged in with the node's secret (docs/console.md)."""

    def __init__(self, node: TrackmeshNode) -> None:
        self.node = node
        status, set_cookie = login_cookie(node, node.secret, node.base)
        assert status == 303, status
        self.cookie = set_cookie.split(";")[0]
        self.csrf = self.get("/api/console/session")["csrf"]

    def get(self, path: str) -> Any:
        status, _, body = http("GET", self.node.url(path), None, {"Cookie": self.cookie})
        assert status == 200, (path, status, body)
        return json.loads(body)["data"]

    def post(self, path: str) -> tuple[int, Any]:
        headers = {"Cookie": self.cookie, "Origin": self.node.base, "X-CSRF-Token": self.csrf}
        status, _, body = http("POST", self.node.url(path), b"", headers)
        return status, json.loads(body)

    def peers(self, room: str) -> list[dict[str, Any]]:
        return [p for r in self.get("/api/console/rooms")["rooms"] if r["room"] == room for p in r["peers"]]


def check_media_metrics(node: TrackmeshNode) -> None:
    """With a publisher and a viewer: packets counted by transport, the join in the histogram, the viewer's
    RTT observed; promtool accepts the text."""
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        text = http("GET", node.url("/metrics"))[2].decode()
        if sample(text, "trackmesh_viewer_rtt_seconds_count") > 0 and sample(
                text, "trackmesh_forwarded_packets_total", transport="whep") > 0 and sample(
                text, "trackmesh_first_media_seconds_count", transport="whep") > 0:
            break
        time.sleep(0.5)
    print("console: metrics", {n: sample(text, n, **lb) for n, lb in (
        ("trackmesh_packets_received_total", {"transport": "whip"}),
        ("trackmesh_rtp_packets_received_total", {"transport": "whip"}),
        ("trackmesh_forwarded_packets_total", {"transport": "whep"}),
        ("trackmesh_forwarded_bytes_total", {"transport": "whep"}),
        ("trackmesh_join_duration_seconds_count", {"transport": "whip"}),
        ("trackmesh_first_media_seconds_sum", {"transport": "whep"}),
        ("trackmesh_viewer_rtt_seconds_count", {}),
        ("trackmesh_sessions", {"transport": "whep"}))})
    assert sample(text, "trackmesh_packets_received_total", transport="whip") > 0, text
    assert sample(text, "trackmesh_bytes_received_total", transport="whip") > 0, text
    assert sample(text, "trackmesh_rtp_packets_received_total", transport="whip") > 0, text
    assert sample(text, "trackmesh_forwarded_packets_total", transport="whep") > 0, text
    assert sample(text, "trackmesh_join_connected_total", transport="whip") >= 1, text
    assert sample(text, "trackmesh_join_duration_seconds_count", transport="whip") >= 1, text
    # The first media packet: received from the publisher, forwarded to the viewer.
    for kind in ("whip", "whep"):
        assert sample(text, "trackmesh_first_media_seconds_count", transport=kind) >= 1, (kind, text)
        assert sample(text, "trackmesh_first_media_seconds_sum", transport=kind) > 0, (kind, text)
    assert sample(text, "trackmesh_sessions", transport="whep") == 1, text
    assert sample(text, "trackmesh_viewer_rtt_seconds_count") > 0, text
    if PROMTOOL is not None:
        assert promtool_problems(text) == "", promtool_problems(text)


@pytest.fixture(scope="module")
def record_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-recordings")


@pytest.fixture(scope="module")
def trackmesh_node(netns_guard: None, record_root: Path) -> Iterator[TrackmeshNode]:
    """The module's node (as tests/e2e/conftest.py's) recording into a temporary ``--record-dir``."""
    level = os.environ.get("TRACKMESH_E2E_LOG_LEVEL", "info")
    node = TrackmeshNode("--record-dir", str(record_root), "--log-level", level)
    try:
        yield node
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def api_status(node: TrackmeshNode, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    return http(method, node.url(path), b"" if method == "POST" else None, headers or {})[0]


def test_console_login_live_room_timeline_kick_and_refusals(
    trackmesh_node: TrackmeshNode, chromium: Any, static_server: StaticServer, record_root: Path,
    request: pytest.FixtureRequest,
) -> None:
    node = trackmesh_node
    alerts: list[str] = []
    page = chromium.new_page()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone

    def on_dialog(d: Any) -> None:
        alerts.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)

    _T0[0] = time.monotonic()
    phase("start")
    # A real Prometheus scrapes the node every second (started first: it starts while we log in).
    prometheus = PrometheusServer([node.base.removeprefix("http://")]) if PROMTOOL is not None else None
    request.addfinalizer(lambda: prometheus.close() if prometheus is not None else None)
    # Wrong secret: the login form again, no cookie, nothing of the cluster.
    login(page, node, "not-the-secret-at-all")
    assert page.locator("p.error").inner_text() == "Wrong secret."
    assert page.locator("#view").count() == 0
    assert not [c for c in chromium.cookies() if c["name"] == "trackmesh_console"]
    shot(page, "1-wrong-secret")

    phase('The right ')
    # The right secret: an HttpOnly, SameSite=Strict, expiring cookie, and the live rooms view.
    login(page, node, node.secret)
    page.wait_for_selector("#no-rooms, section.room")
    cookie = next(c for c in chromium.cookies() if c["name"] == "trackmesh_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > time.time(), cookie

    if prometheus is not None:
        idle_series = prometheus.wait("scrape_samples_scraped", lambda v: v > 0)

    phase('A WHIP pub')
    # A WHIP publisher whose peer id is HTML: its room, peer and track appear (pushed) within 5 s, as text.
    room = "console-room <b>bold</b>"
    pub = publish(chromium, node, room, XSS)
    appeared = time.monotonic()
    row = page.locator(f'tr[data-peer="{XSS}"]')
    row.locator("li[data-track]").first.wait_for(timeout=5_000)
    waited = time.monotonic() - appeared
    print(f"console: the publisher's row and track appeared {waited:.2f} s after it connected")
    assert waited <= 5.0
    assert row.locator("a.peer").inner_text() == XSS
    assert page.locator("section.room h3").first.inner_text() == room
    assert "publishes · video" in row.locator("ul.tracks").inner_text()
    assert page.locator("img").count() == 0 and page.locator("b").count() == 0 and not alerts

    phase('A WHEP vie')
    # A WHEP viewer: the console shows what it receives; /metrics counts the forwarding and its reports.
    viewer = chromium.new_page()
    query = urllib.parse.urlencode({"room": room, "token": node.token("whep", room)})
    viewer.goto(node.url(f"/samples/whep.html?{query}&autostart=1"))
    page.locator("li[data-track]", has_text="receives · video").first.wait_for(timeout=10_000)
    # Each track's codec, bitrate, layer and subscribers (a bitrate once two listings are a second apart).
    published = row.locator("li[data-track]", has_text="publishes · video").filter(has_text="kbps")
    published.filter(has_text="1 subscriber").first.wait_for(timeout=10_000)
    received = page.locator("li[data-track]", has_text="receives · video").filter(has_text="kbps").first
    received.wait_for(timeout=10_000)
    codec = re.search(r" · (VP8|VP9|H264|AV1) · ", published.first.inner_text())
    assert codec is not None, published.first.inner_text()
    assert f" · {codec[1]} · " in received.inner_text() and " · layer S0 T" in received.inner_text()
    print("console: tracks:", published.first.inner_text(), "|", received.inner_text())
    check_media_metrics(node)
    if prometheus is not None:
        # PromQL over what Prometheus scraped: the forwarded-packets rate, the join histogram, the series count.
        rate = prometheus.wait('sum(rate(trackmesh_forwarded_packets_total{transport="whep"}[5s]))', lambda v: v > 0)
        p95 = prometheus.wait('histogram_quantile(0.95, sum by (le) (trackmesh_join_duration_seconds_bucket))',
                              lambda v: v > 0)  # fmt: skip
        series = prometheus.wait("scrape_samples_scraped", lambda v: v > 0)
        print(f"console: prometheus: forwarded {rate:.0f} packets/s, join p95 {p95:.3f} s, "
              f"{series:.0f} series with 2 peers ({idle_series:.0f} with none)")
        assert series < 2000 and series <= idle_series + 10, (series, idle_series)
    page.bring_to_front()  # a background tab runs few animation frames: clicks wait long to see a stable button
    shot(page, "2-live-room")
    page.set_viewport_size({"width": 1100, "height": 700})
    shot(page, "2-live-room-desktop")
    page.set_viewport_size({"width": 390, "height": 844})

    phase("Mute")
    # Mute the publisher's video (two clicks): the viewer stops receiving it; unmute: it flows again.
    def viewer_packets() -> int:
        rooms = page.request.get(node.url("/api/console/rooms")).json()["data"]["rooms"]
        return sum(t["packets"] for r in rooms for p in r["peers"] for t in p["tracks"]
                   if t["direction"] == "subscribe" and t["kind"] == "video")  # fmt: skip

    video = row.locator("li[data-track]", has_text="publishes · video")
    for action, said in (("mute", "Muted video_main"), ("unmute", "Unmuted video_main")):
        button = video.locator(f"button[data-action='{action}']")
        button.click()
        button.click()
        page.wait_for_selector(f"#status:has-text('{said}')")
        if action == "mute":
            video.filter(has_text="MUTED by the operator").wait_for(timeout=5_000)
            before = viewer_packets()
            time.sleep(1.5)
            assert viewer_packets() == before, "a muted track still reaches its viewer"
            shot(page, "2a-muted")
    resumed = time.monotonic() + 5
    while viewer_packets() <= before + 10 and time.monotonic() < resumed:
        time.sleep(0.3)
    assert viewer_packets() > before + 10, "the unmuted track does not reach its viewer again"
    video.locator("button[data-action='mute']").wait_for(timeout=5_000)  # shown unmuted again
    viewer.close()

    phase("Record")
    # Record the room (its button), stop, then Recordings lists the file with a download link.
    page.locator("section.room button[data-action='record-start']").first.click()
    page.wait_for_selector("#status:has-text('Recording the room')")
    time.sleep(2.0)  # media flows into the file
    page.locator("section.room button[data-action='record-stop']").first.click()
    page.wait_for_selector("#status:has-text('Recording stopped')")
    page.goto(node.url("/console#/recordings"))
    link = page.locator("tr[data-recording] a.download").first
    link.wait_for(timeout=10_000)
    recorded = page.locator("tr[data-recording]").first.get_attribute("data-recording")
    assert recorded and link.get_attribute("href") == "/api/console/recordings/file?" + urllib.parse.urlencode(
        {"path": recorded}), link.get_attribute("href")  # fmt: skip
    download = page.request.get(node.url(str(link.get_attribute("href"))))
    on_disk = record_root / recorded
    assert download.status == 200 and download.body() == on_disk.read_bytes() and len(download.body()) > 1000
    assert "attachment" in download.headers["content-disposition"]
    shot(page, "2b-recordings")
    page.goto(node.url("/console#/rooms"))
    row.locator("li[data-track]").first.wait_for(timeout=5_000)

    phase("The peer's")
    # The peer's timeline: one click on the peer.
    session = row.get_attribute("data-session")
    assert session
    row.locator("a.peer").click()
    page.wait_for_selector("#timeline li[data-event='Connected']", timeout=10_000)
    assert page.locator("#live-state").inner_text().startswith("Live: peer")
    # The operator's mute and unmute are in it (the connector's RemoteTrackMuted).
    muted = page.locator("#timeline li[data-event='RemoteTrackMuted']")
    muted.nth(1).wait_for(timeout=5_000)
    assert "muted: true" in muted.nth(0).inner_text() and "muted: false" in muted.nth(1).inner_text()
    shot(page, "3-timeline")

    phase('Kick it')
    # Kick it (two-step button): the publisher's connection ends, the timeline says why.
    kick = page.locator(f"#live-state button[data-action='kick'][data-session='{session}']")
    kick.click()
    kick.click()
    page.wait_for_selector("#status:has-text('Kicked session')")
    pub.wait_for_function("() => window.tm.state !== 'connected'", timeout=10_000)
    print("console: publisher state after the kick:", pub.evaluate("() => window.tm.state"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the connector stores the event a moment later
        page.reload()
        page.wait_for_selector("#timeline li, #timeline p")
        if page.locator("#end-reason").count():
            break
        time.sleep(0.3)
    assert page.locator("#end-reason").count(), page.locator("#view").inner_text()
    assert "kicked by an operator" in page.locator("#end-reason").inner_text()
    metrics = http("GET", node.url("/metrics"))[2].decode()
    assert sample(metrics, "trackmesh_sessions_closed_total", transport="whip", reason="kicked") >= 1, metrics
    shot(page, "4-kicked")
    phase('The live v')
    # The live view dropped it, and the peer list (event log) still has it: 3 clicks from the landing page.
    page.goto(node.url("/console#/rooms"))
    page.wait_for_selector("section.room, #no-rooms")
    assert page.locator(f'tr[data-peer="{XSS}"]').count() == 0
    page.click("#nav-peers")
    page.locator(f"tr[data-peer='{XSS}'] a.session").first.click()
    page.wait_for_selector("#end-reason")
    assert page.locator("img").count() == 0 and not alerts
    phase('The event ')
    # The event log, filtered.
    page.goto(node.url(f"/console#/events?event=Disconnected&session={session}"))
    page.wait_for_selector("tr[data-event='Disconnected']")
    assert page.locator("tbody tr").count() == 1
    shot(page, "5-events")
    page.click("#nav-node")
    page.wait_for_selector("#node-health:has-text('Ready')")
    assert page.locator("tr[data-worker='0']").count() == 1
    pub.close()

    phase('Cross-site')
    # Cross-site POSTs are refused, with the cookie in the browser. Same site, other origin
    # (127.0.0.1:<other port>): the cookie goes along, the Origin check refuses (403).
    pub2 = publish(chromium, node, "console-xsite", "victim")
    page.goto(node.url("/console"))
    page.locator("tr[data-peer='victim']").wait_for(timeout=5_000)
    target = node.url("/api/console/rooms/console-xsite/end")
    form = f'<form method="post" action="{target}"></form><script>document.forms[0].submit()</script>'
    attacker = chromium.new_page()
    attacker.goto(static_server.add("attack.html", form))
    attacker.wait_for_url(target)
    assert json.loads(attacker.inner_text("body"))["error"].startswith("cross-site request refused")
    # Another site (localhost is not 127.0.0.1): SameSite=Strict keeps the cookie home (401).
    attacker.goto(static_server.url("attack.html").replace("127.0.0.1", "localhost"))
    attacker.wait_for_url(target)
    assert "log in at /console first" in attacker.inner_text("body")
    # fetch() from the other origin cannot read or act either (no credentials across origins).
    attacker.goto(static_server.url("blank.html"))
    result = attacker.evaluate("""async (url) => {
        try { const r = await fetch(url, {method: "POST", credentials: "include",
                                          headers: {"X-CSRF-Token": "guess"}}); return r.status; }
        catch (e) { return "blocked"; } }""", target)
    assert result in ("blocked", 401, 403), result
    attacker.close()
    page.reload()
    page.locator("tr[data-peer='victim']").wait_for(timeout=2_000)
    assert pub2.evaluate("() => window.tm.state") == "connected"

    phase('End the ro')
    # End the room from the console: the publisher goes.
    end = page.locator("section.room[data-room='console-xsite'] button[data-action='end-room']")
    end.click()
    end.click()
    page.wait_for_selector("#status:has-text('1 peer(s) kicked')")
    pub2.wait_for_function("() => window.tm.state !== 'connected'", timeout=10_000)
    pub2.close()

    phase('Logout:')
    # Logout: the cookie stops working at once (even replayed).
    cookie = next(c for c in chromium.cookies() if c["name"] == "trackmesh_console")
    page.click("#logout")
    page.wait_for_selector("#secret")
    assert api_status(node, "GET", "/api/console/rooms", {"Cookie": f"trackmesh_console={cookie['value']}"}) == 401
    page.close()


def test_console_apis_need_the_cookie_and_refuse_forgeries(trackmesh_node: TrackmeshNode) -> None:
    node = trackmesh_node
    gets = ["/api/console/session", "/api/console/rooms", "/api/console/stream", "/api/console/events",
            "/api/console/peers", "/api/console/node", "/api/console/cluster", "/api/console/recordings",
            "/api/console/recordings/file"]  # fmt: skip
    posts = ["/api/console/sessions/1/kick", "/api/console/rooms/r/end", "/console/logout",
             "/api/console/rooms/r/record/start", "/api/console/sessions/1/tracks/t/start"]
    # The OpenAPI document lists every console API; each one answers 401 without a valid cookie.
    paths = json.loads(http("GET", node.url("/openapi.json"))[2])["paths"]
    listed = sorted(p for p in paths if p.startswith(("/api/console", "/console")))
    names = {"{session_id}": "1", "{room}": "r", "{track}": "t", "{action}": "start"}
    assert sorted(functools.reduce(lambda p, kv: p.replace(*kv), names.items(), p) for p in listed) == sorted(
        gets + posts)  # fmt: skip
    forged = {"Cookie": "trackmesh_console=eyJhIjoiIiwiZSI6OTk5OTk5OTk5OSwibiI6IngifQ.AAAA"}
    for path in gets:
        assert api_status(node, "GET", path) == 401, path
        assert api_status(node, "GET", path, forged) == 401, path
    for path in posts:
        assert api_status(node, "POST", path) == 401, path
        assert api_status(node, "POST", path, forged) == 401, path
    # A valid cookie without our Origin or the CSRF token cannot act.
    status, set_cookie = login_cookie(node, node.secret, node.base)
    assert status == 303 and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie, (status, set_cookie)
    cookie = {"Cookie": set_cookie.split(";")[0]}
    assert api_status(node, "GET", "/api/console/rooms", cookie) == 200
    assert api_status(node, "POST", "/api/console/rooms/r/end", cookie) == 403  # no Origin, no Referer
    evil = {**cookie, "Origin": "http://evil.example"}
    assert api_status(node, "POST", "/api/console/rooms/r/end", evil) == 403
    mine = {**cookie, "Origin": node.base}
    assert api_status(node, "POST", "/api/console/rooms/r/end", mine) == 403  # no X-CSRF-Token
    csrf = json.loads(http("GET", node.url("/api/console/session"), None, cookie)[2])["data"]["csrf"]
    assert api_status(node, "POST", "/api/console/rooms/r/end", {**mine, "X-CSRF-Token": csrf}) == 200
    assert api_status(node, "POST", "/api/console/sessions/12345/kick", {**mine, "X-CSRF-Token": csrf}) == 404
    # Cross-site login is refused too, and huge pages are a 400, not a scan.
    assert login_cookie(node, node.secret, "http://evil.example") == (403, "")
    assert login_cookie(node, "wrong-secret-wrong", node.base) == (401, "")
    assert api_status(node, "GET", "/api/console/events?limit=100000000", cookie) == 400
    assert api_status(node, "GET", "/api/console/peers?page=99999999999", cookie) == 400
