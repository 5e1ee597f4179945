"""The console role and a real Prometheus on one ``trackmesh dev-cluster`` (issue 14), loopback only,
inside the private network namespace: a zone router, the zone's connector, a gateway, two media
nodes and the console, every member a client of the router (``--routers-per-zone 1``), started
once for the module.

1. The console (``trackmesh console``): log in; its zones view shows the gateway, media and
   connector nodes with their load and health; a WHIP publisher (aiortc, through the gateway)
   appears in its rooms view within 5 s; its timeline comes from the zone's connector; a kick
   from the console ends its session on its media node (the connector logs the reason).
2. Debian's ``prometheus`` scrapes every member each second. A WHIP publisher and a WHEP viewer make
   real media; 500 simulated peers (real offers that never complete ICE, as bench/metrics_scale.py
   does) make the sessions. PromQL returns the forwarded-packets rate and the join histogram; every
   member's series count stays under 2,000 (no per-peer, per-track or per-room label).
3. Multi-tenancy: the zone's connector has ``--apps`` (tenant ``acme``); the console takes the
   zone's app list over the cluster, so the tenant logs in with its secret and sees (and acts on)
   its app's rooms, events and recordings only; the cluster secret's login keeps the zones view;
   a wrong tenant secret is refused.
   The cluster secret is the operator over every app: it sees every app's rooms (each with its
   app), reads a tenant's timeline with ?app=, and mutes, kicks and ends rooms across apps; in
   Chromium its page heads each room with its app's name as text (an app named in HTML) and its
   End room ends that app's room. Record / Stop recording from the console reach a media node.
4. The router dies: the console has lost the cluster; it keeps answering, with the last view of the
   rooms marked stale and the nodes marked stale or gone.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.cluster.test_roles import SECRET, TRACKMESH, _free_range
from tests.cluster.test_roles import http as request
from tests.promtool import PROMTOOL, PrometheusServer, promtool_problems
from trackmesh.cli.dev_cluster import die_with_parent
from trackmesh.config import resolve
from trackmesh.security.keys import token_key
from trackmesh.security.tokens import SessionToken, issue

from .conftest import CLIENTS_DIR

pytestmark = pytest.mark.e2e

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")
FIXTURES = Path(__file__).resolve().parents[1] / "sdp" / "fixtures"
KICKED = 3  # DisconnectReason.KICK (connector/events.py)
SIMULATED = 500
MAX_SERIES = 2000
ACME = "acme-console-secret-0123456789"  # the zone connector's tenants (--apps): acme, and an app named in HTML
XSS_APP, XSS_SECRET = "<img src=x onerror=alert(1)>", "xss-console-secret-0123456789"
# dev-cluster's start order, one HTTP port each from --http-port: the zone's router, its connector,
# gateway (node 1), media nodes (2, 3), connector (node 4), then the console (zone 0).
ROUTER, CONNECTOR, GATEWAY, MEDIA1, MEDIA2, CONSOLE = range(6)


@dataclass
class DevCluster:
    proc: subprocess.Popen[str]
    base: int
    lines: list[str]

    def url(self, member: int) -> str:
        return f"http://127.0.0.1:{self.base + member}"

    def log(self) -> str:
        return "".join(self.lines[-80:])

    def token(self, kind: str, room: str, peer: str) -> str:
        key = resolve("media", {"secret": SECRET}, {}).token_key
        return issue(key, SessionToken(kind, room, peer), 600, int(time.time()))

    def client(self, kind: str, member: int, room: str, peer: str, duration: float,
               token: str | None = None) -> subprocess.Popen[str]:  # fmt: skip
        args = [sys.executable, CLIENT, kind, f"{self.url(member)}/{kind}/endpoint", "--token",
                token or self.token(kind, room, peer), "--duration", str(duration), "--timeout", "15"]  # fmt: skip
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(CLIENTS_DIR))


@pytest.fixture(scope="module")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    base, cport = _free_range(6), _free_range(6)
    apps = tmp_path_factory.mktemp("apps") / "apps.json"
    apps.write_text(json.dumps({"apps": [{"app_id": "acme", "app_secret": ACME},
                                         {"app_id": XSS_APP, "app_secret": XSS_SECRET}]}))  # fmt: skip
    # Members read TRACKMESH_* flags from the environment: the simulated sessions stay connecting.
    env = {**os.environ, "TRACKMESH_CONNECT_TIMEOUT": "600", "TRACKMESH_MAX_SESSIONS_PER_TOKEN": "1000"}
    proc = subprocess.Popen(
        [TRACKMESH, "dev-cluster", "--zones", "1", "--media-per-zone", "2", "--routers-per-zone", "1",
         "--http-port", str(base), "--cluster-port", str(cport), "--secret", SECRET, "--apps", str(apps)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent,
        cwd=tmp_path_factory.mktemp("dev-cluster"), env=env,
    )  # fmt: skip
    cluster = DevCluster(proc, base, [])
    threading.Thread(target=lambda: cluster.lines.extend(proc.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not any("processes up" in line for line in cluster.lines):
            assert proc.poll() is None and time.monotonic() < deadline, cluster.log()
            time.sleep(0.1)
        assert f"console (every zone, node and room): {cluster.url(CONSOLE)}/console" in "".join(cluster.lines)
        yield cluster
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
        assert rc == 0, cluster.log()
        assert "Traceback" not in "".join(cluster.lines), cluster.log()


def wait_for(fetch: Callable[[], Any], timeout: float, what: str, cluster: DevCluster) -> Any:
    end = time.monotonic() + timeout
    while True:
        found = fetch()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}\n{cluster.log()}")
        time.sleep(0.1)


def login(base: str, secret: str) -> tuple[int, str]:
    """(status, cookie) of a console login; the 303 is not followed: its Set-Cookie is what we want."""
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("POST", "/console/login", ("secret=" + quote(secret)).encode(),
                     {"Origin": base, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        return resp.status, (resp.getheader("set-cookie") or "").split(";")[0]
    finally:
        conn.close()


class ConsoleClient:
    def __init__(self, base: str, secret: str = SECRET) -> None:
        self.base = base
        status, self.cookie = login(base, secret)
        assert status == 303, status
        self.csrf = self.get("/api/console/session")["csrf"]

    def get(self, path: str) -> Any:
        status, _, body = request("GET", self.base + path, headers={"Cookie": self.cookie})
        assert status == 200, (path, status, body)
        return json.loads(body)["data"]

    def post(self, path: str) -> tuple[int, Any]:
        status, _, body = request("POST", self.base + path, b"", {"Cookie": self.cookie, "Origin": self.base,
                                                                    "X-CSRF-Token": self.csrf})  # fmt: skip
        return status, json.loads(body)

    def roles(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"gateway": [], "media": [], "connector": []}
        for zone in self.get("/api/console/cluster")["zones"]:
            for role in out:
                out[role] += [{**n, "zone": zone["zone"]} for n in zone[role]]
        return out

    def peer(self, room: str, app: str | None = None) -> dict[str, Any] | None:
        """A publisher in ``room`` (of ``app``: the cluster operator's view lists every app's rooms)."""
        data = self.get("/api/console/rooms")
        for r in data["rooms"]:
            for p in r["peers"]:
                if r["room"] == room and app in (None, r["app"]) and any(t["direction"] == "publish"
                                                                         for t in p["tracks"]):  # fmt: skip
                    return {**p, "unanswered": data["unanswered"], "stale": data["stale"]}
        return None


def test_console_role_zones_rooms_timeline_and_kick(dev_cluster: DevCluster) -> None:
    dc = dev_cluster
    # No cookie: every console API is 401 on the console role too.
    assert request("GET", dc.url(CONSOLE) + "/api/console/cluster")[0] == 401
    assert request("GET", dc.url(CONSOLE) + "/api/console/rooms")[0] == 401
    cc = ConsoleClient(dc.url(CONSOLE))

    # Zones -> gateways, media and connector nodes, each with its load, health and report age.
    def all_up() -> dict[str, list[dict[str, Any]]] | None:
        roles = cc.roles()
        counts = {"gateway": 1, "media": 2, "connector": 1}
        ok = all(len(roles[r]) == counts[r] and all(n["state"] == "up" and n["ready"] for n in roles[r])
                 for r in roles)  # fmt: skip
        return roles if ok else None

    roles = wait_for(all_up, 10, "the console to see the gateway, both media nodes and the connector", dc)
    for node, member in zip(roles["media"], (MEDIA1, MEDIA2), strict=True):
        assert (node["zone"], node["capacity"], node["http"]) == (1, 1000, dc.url(member)), node
        assert node["mem_mb"] > 10 and node["cpu"] >= 0 and 0 <= node["age_s"] < 3 and node["sessions"] >= 0, node
    assert [n["node"] for n in roles["media"]] == [2, 3], roles
    assert roles["gateway"][0]["node"] == 1 and roles["gateway"][0]["mem_mb"] > 10, roles
    assert roles["connector"][0]["node"] == 4 and roles["connector"][0]["http"] == dc.url(CONNECTOR), roles

    # A WHIP publisher through the gateway appears in the console's rooms view within 5 s.
    started = time.monotonic()
    pub = dc.client("whip", GATEWAY, "lobby", "alice", 30)
    try:
        peer = wait_for(lambda: cc.peer("lobby"), 5.0, "the publisher in the console's rooms", dc)
        print(f"console role: publisher in the rooms view {time.monotonic() - started:.2f} s after the client started")
        assert (peer["peer"], peer["transport"], peer["zone"]) == ("alice", "whip", 1) and peer["node"] in (2, 3), peer
        assert peer["unanswered"] == [] and peer["stale"] is None, peer
        session = peer["session"]

        # Its timeline, from the zone's connector.
        def timeline() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = cc.get(f"/api/console/events?session={session}")
            names = {e["event"] for e in rows}
            return rows if {"Join", "RouteBegin", "RouteSuccess"} <= names else []

        events = wait_for(timeline, 5, "the publisher's timeline", dc)
        assert all(e["session"] == session for e in events), events
        # The zone gateway's RouteBegin/RouteSuccess and the media node's own events reach the connector
        # over two links, so they interleave; the media node's part starts with Connecting.
        names = [e["event"] for e in events]
        assert names.index("RouteBegin") < names.index("RouteSuccess"), names
        assert next(n for n in names if not n.startswith("Route")) == "Connecting", names
        assert any(p["peer"] == "alice" for p in cc.get("/api/console/peers")), "peers from the connector"

        # Mute and unmute its track from the console role: the query reaches its media node.
        name = next(t["name"] for t in peer["tracks"] if t["direction"] == "publish")
        mute = f"/api/console/sessions/{session}/tracks/{name}/mute"
        assert cc.post(mute) == (200, {"status": True, "data": {"muted": True, "changed": True}})
        assert [t["muted"] for t in (cc.peer("lobby") or {})["tracks"] if t["name"] == name] == [True]
        assert cc.post(mute.replace("/mute", "/unmute"))[1]["data"] == {"muted": False, "changed": True}
        status, body = cc.post(f"/api/console/sessions/{session}/tracks/nope/mute")
        assert status == 404 and body["error"].endswith("this session publishes no such track"), body

        # Kick it from the console: its media node closes it, the connector logs why.
        status, body = cc.post(f"/api/console/sessions/{session}/kick")
        assert status == 200 and body["data"] == {"kicked": 1}, body
        # (aiortc does not notice a DTLS close: the session's end is checked on the cluster's side.)
        wait_for(lambda: cc.peer("lobby") is None, 5, "the kicked session gone from the rooms", dc)
        ended = wait_for(lambda: [e for e in cc.get(f"/api/console/events?session={session}")
                                  if e["event"] == "Disconnected"], 10, "Disconnected in the timeline", dc)
        assert json.loads(ended[0]["meta"])["reason"] == KICKED, ended
        assert cc.post("/api/console/sessions/123456789/kick")[0] == 404
    finally:
        pub.kill()
        pub.communicate()


def test_the_operators_page_names_each_rooms_app_as_text_and_ends_a_tenants_room(
    dev_cluster: DevCluster, chromium: Any
) -> None:
    """Chromium, logged in with the cluster secret: a tenant's room is headed with its app's name
    (an app named in HTML shows as those characters), and its End room acts on that app's room."""
    from tests.e2e.test_console import shot

    dc = dev_cluster
    wait_for(lambda: gauge(dc, CONSOLE, 'trackmesh_console{what="app_lists_total"}') >= 1, 20,
             "the console to take the zone's app list", dc)  # fmt: skip
    token = issue(token_key(XSS_SECRET), SessionToken("whip", "xss-room", "cam", app=XSS_APP), 600, int(time.time()))
    pub = dc.client("whip", MEDIA1, "xss-room", "cam", 30, token)
    try:
        admin = ConsoleClient(dc.url(CONSOLE))
        wait_for(lambda: admin.peer("xss-room", XSS_APP), 10, "the HTML-named app's publisher", dc)
        page = chromium.new_page()
        alerts: list[str] = []
        def on_dialog(dialog: Any) -> None:
            alerts.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(dc.url(CONSOLE) + "/console")
        page.fill("#secret", SECRET)
        page.press("#secret", "Enter")
        page.wait_for_load_state()
        assert sorted(admin.get("/api/console/session")["apps"]) == sorted(["", "acme", XSS_APP])
        head = page.locator("section.room", has_text="xss-room").locator(".app-name")
        head.wait_for(timeout=10_000)
        assert head.inner_text() == "app " + XSS_APP
        assert page.locator("#who").inner_text() == "cluster operator (every app)"
        assert page.locator("img").count() == 0 and not alerts
        shot(page, "console-role-apps")
        # Peers of that app (the operator picks the app), then the peer's session: its timeline.
        page.click("#nav-peers")
        page.select_option("#app-select", XSS_APP)
        page.locator("tr[data-peer='cam'] a.session").first.wait_for(timeout=10_000)
        page.locator("tr[data-peer='cam'] a.session").first.click()
        page.locator("#timeline li[data-event='Join']").wait_for(timeout=10_000)
        assert page.locator("img").count() == 0 and not alerts
        page.goto(dc.url(CONSOLE) + "/console#/rooms")
        end = page.locator("section.room", has_text="xss-room").locator("button[data-action='end-room']")
        end.click()
        end.click()  # the second click within 4 s acts
        page.locator("#status", has_text="Ended the room: 1 peer(s) kicked.").wait_for(timeout=10_000)
        wait_for(lambda: admin.peer("xss-room", XSS_APP) is None, 5, "the tenant's room ended", dc)
        assert not alerts
    finally:
        pub.kill()
        pub.communicate()


def test_prometheus_scrapes_the_dev_cluster_with_500_simulated_peers(dev_cluster: DevCluster) -> None:
    if PROMTOOL is None:
        pytest.skip("Debian's prometheus package is not installed")
    dc = dev_cluster
    targets = [dc.url(m).removeprefix("http://") for m in (CONNECTOR, GATEWAY, MEDIA1, MEDIA2, CONSOLE)]
    prometheus = PrometheusServer(targets)
    clients = [dc.client("whip", GATEWAY, "live", "cam", 15)]
    try:
        # Real media through the gateway: one publisher, one viewer.
        clients.append(dc.client("whep", GATEWAY, "live", "viewer", 15))
        # 500 simulated peers, straight to the media nodes: one in five publishes.
        offers = {"whip": (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes(),
                  "whep": (FIXTURES / "chrome_whep_recvonly.sdp").read_bytes()}  # fmt: skip

        def simulate(i: int) -> int:
            kind = "whip" if i % 5 == 0 else "whep"
            token = dc.token(kind, f"sim-{i % 50}", f"p{i}")
            status, _, _ = request("POST", f"{dc.url(MEDIA1 if i % 2 else MEDIA2)}/{kind}/endpoint", offers[kind],
                                   {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            return status

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(simulate, range(SIMULATED)))
        assert statuses.count(201) == SIMULATED, {s: statuses.count(s) for s in set(statuses)}

        sessions = prometheus.wait("sum(trackmesh_sessions)", lambda v: v >= SIMULATED + 2, timeout=20)
        rate = prometheus.wait("sum(rate(trackmesh_forwarded_packets_total[5s]))", lambda v: v > 0, timeout=20)
        joins = prometheus.wait("sum(trackmesh_join_duration_seconds_count)", lambda v: v >= 2)
        p95 = prometheus.wait("histogram_quantile(0.95, sum by (le) (trackmesh_join_duration_seconds_bucket))",
                              lambda v: v > 0)  # fmt: skip
        # The console role's own metrics: the four members it follows are up.
        assert prometheus.wait('sum(trackmesh_console{what="members_up"})', lambda v: v == 4) == 4
        for member in (CONNECTOR, GATEWAY, MEDIA1, CONSOLE):  # promtool is silent on every role
            text = request("GET", dc.url(member) + "/metrics")[2].decode()
            assert promtool_problems(text) == "", (member, promtool_problems(text))
        # One more scrape: every member's series with all the sessions live.
        time.sleep(1.2)
        series = {str(r["metric"]["instance"]): float(r["value"][1])  # type: ignore[index]
                  for r in prometheus.query("scrape_samples_scraped")}  # fmt: skip
        up = {str(r["metric"]["instance"]): float(r["value"][1]) for r in prometheus.query("up")}  # type: ignore[index]
        print(f"prometheus on a dev-cluster: {sessions:.0f} sessions, forwarded {rate:.0f} packets/s, "
              f"{joins:.0f} joins (p95 {p95:.3f} s), series per member {json.dumps(series, sort_keys=True)}")
        assert up == dict.fromkeys(targets, 1.0), up
        assert set(series) == set(targets) and all(0 < n < MAX_SERIES for n in series.values()), series
    finally:
        for c in clients:
            c.kill()
            c.communicate()
        prometheus.close()


def test_the_console_role_records_a_room_and_downloads_the_media_nodes_files(dev_cluster: DevCluster) -> None:
    dc = dev_cluster
    cc = ConsoleClient(dc.url(CONSOLE))
    room = "taped"

    def record(action: str) -> dict[str, Any]:
        """Record and Stop recording on the console role: a media node's worker takes it, cluster-wide."""
        status, body = cc.post(f"/api/console/rooms/{room}/record/{action}")
        assert status == 200, body
        assert body["data"]["room"] == room, body
        return dict(body["data"])

    def files(complete: bool = False, size: int = 0) -> list[dict[str, Any]]:
        found = [f for f in cc.get(f"/api/console/recordings?room={room}")["files"] if f["room"] == room]
        ok = len(found) == 2 and all(f.get("size", 0) > size and (f["status"] == "complete" or not complete)
                                     for f in found)  # fmt: skip
        return found if ok else []

    # Refused without the CSRF token; stopping a room nobody records is the media node's 404.
    status, _, _ = request("POST", dc.url(CONSOLE) + f"/api/console/rooms/{room}/record/start", b"",
                           {"Cookie": cc.cookie, "Origin": dc.url(CONSOLE)})  # fmt: skip
    assert status == 403
    assert cc.post(f"/api/console/rooms/{room}/record/stop")[0] == 404
    assert record("start")["all_peers"] is True
    pub = dc.client("whip", GATEWAY, room, "cam", 20)
    try:
        wait_for(lambda: files(size=2000), 20, "the recorded video and audio files in the console", dc)
    finally:
        record("stop")  # finalised on the media node while the publisher still sends
        pub.kill()
        pub.communicate()
    listed = wait_for(lambda: files(complete=True), 15, "both files complete", dc)
    data = cc.get("/api/console/recordings")
    assert data["unanswered"] == [], data
    # The two media nodes of a dev-cluster share one record directory: each file is listed once.
    assert len({f["path"] for f in data["files"]}) == len(data["files"]), data
    for f in listed:
        assert (f["zone"], f["peer"]) == (1, "cam") and f["node"] in (2, 3), f
        assert f["download"] == "/api/console/recordings/file?" + urlencode(
            {"path": f["path"], "zone": f["zone"], "node": f["node"]}), f  # fmt: skip
        status, headers, body = request("GET", dc.url(CONSOLE) + f["download"], headers={"Cookie": cc.cookie})
        assert status == 200 and headers["content-disposition"].startswith("attachment"), (status, headers)
        assert len(body) == f["size"], (len(body), f)  # complete: the file no longer grows
        assert body[:4] == b"\x1a\x45\xdf\xa3" or body[4:8] == b"ftyp", body[:16]  # WebM (EBML) or MP4
    # Refusals: no cookie, a path that is not a recorded file of the app, no node.
    first = listed[0]
    assert request("GET", dc.url(CONSOLE) + first["download"])[0] == 401
    for query, refused in (({"path": "../../../etc/passwd", "zone": 1, "node": first["node"]}, 404),
                           ({"path": first["path"] + ".json", "zone": 1, "node": first["node"]}, 404),
                           ({"path": first["path"], "zone": 1, "node": 99}, 504)):  # no such node  # fmt: skip
        status, _, body = request("GET", dc.url(CONSOLE) + "/api/console/recordings/file?" + urlencode(query),
                                  headers={"Cookie": cc.cookie})  # fmt: skip
        assert status == refused, (query, status, body)
    status, _, body = request("GET", dc.url(CONSOLE) + "/api/console/recordings/file?" +
                              urlencode({"path": first["path"]}), headers={"Cookie": cc.cookie})  # fmt: skip
    assert status == 400, body


def gauge(dc: DevCluster, member: int, line_start: str) -> float:
    for line in request("GET", dc.url(member) + "/metrics")[2].decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return -1.0


def test_a_tenant_logs_in_on_the_console_role_and_sees_its_apps_rooms_only(dev_cluster: DevCluster) -> None:
    dc = dev_cluster
    # The zone connector's app list reaches the media node and the console over the cluster.
    wait_for(lambda: gauge(dc, MEDIA1, 'trackmesh_connector_link{what="app_lists"}') >= 1, 20,
             "the media node to take the zone's app list", dc)  # fmt: skip
    wait_for(lambda: gauge(dc, CONSOLE, 'trackmesh_console{what="app_lists_total"}') >= 1, 20,
             "the console to take the zone's app list", dc)  # fmt: skip
    tenant, admin = ConsoleClient(dc.url(CONSOLE), ACME), ConsoleClient(dc.url(CONSOLE))
    assert tenant.get("/api/console/session")["app"] == "acme"
    # Same room name in both apps: two rooms (registry.room_key), each console sees its own.
    acme_token = issue(token_key(ACME), SessionToken("whip", "shared", "carol", app="acme"), 600, int(time.time()))
    pubs = [dc.client("whip", MEDIA1, "shared", "carol", 30, acme_token),
            dc.client("whip", MEDIA1, "shared", "dave", 30)]
    try:
        mine = wait_for(lambda: tenant.peer("shared"), 10, "the tenant's publisher in its console", dc)
        theirs = wait_for(lambda: admin.peer("shared", ""), 10, "the default app's publisher in its console", dc)
        assert (mine["peer"], theirs["peer"]) == ("carol", "dave"), (mine, theirs)
        assert [p["peer"] for r in tenant.get("/api/console/rooms")["rooms"] for p in r["peers"]] == ["carol"]
        # The cluster secret is the operator over every app: both rooms "shared", each with its app.
        assert admin.get("/api/console/session")["all_apps"] is True
        assert tenant.get("/api/console/session")["all_apps"] is False
        shared = {r["app"]: [p["peer"] for p in r["peers"]] for r in admin.get("/api/console/rooms")["rooms"]
                  if r["room"] == "shared"}  # fmt: skip
        assert shared == {"": ["dave"], "acme": ["carol"]}, shared
        # Its timeline from the zone's connector (read with the tenant's secret); not another app's.
        wait_for(lambda: tenant.get(f"/api/console/events?session={mine['session']}"), 10, "the tenant's timeline", dc)
        assert tenant.get(f"/api/console/events?session={theirs['session']}") == []
        assert {e["session"] for e in tenant.get("/api/console/events")} == {mine["session"]}
        # Another app's session and room are out of reach; other apps' recordings are not listed.
        assert tenant.post(f"/api/console/sessions/{theirs['session']}/kick")[0] == 404
        assert tenant.get("/api/console/recordings")["files"] == []
        assert admin.get("/api/console/recordings?app=acme")["unanswered"] == []  # the operator may look
        assert request("GET", dc.url(CONSOLE) + "/api/console/recordings?app=",
                       headers={"Cookie": tenant.cookie})[0] == 403  # fmt: skip
        assert admin.peer("shared", "") is not None  # the default app's publisher is still there
        # A tenant cannot name another app; the operator reads the tenant's timeline with ?app=.
        assert request("GET", dc.url(CONSOLE) + "/api/console/events?app=", headers={"Cookie": tenant.cookie})[0] == 403
        assert tenant.post("/api/console/rooms/shared/end?app=")[0] == 403
        wait_for(lambda: admin.get(f"/api/console/events?session={mine['session']}&app=acme"), 10,
                 "the tenant's timeline for the operator", dc)  # fmt: skip
        assert admin.get(f"/api/console/events?session={mine['session']}") == []  # the default app's log
        # The zones view is the cluster operator's.
        assert request("GET", dc.url(CONSOLE) + "/api/console/cluster", headers={"Cookie": tenant.cookie})[0] == 403
        assert len(admin.roles()["media"]) == 2
        # The operator acts across apps: mutes and kicks the tenant's publisher, ends its room (not dave's).
        track = next(t["name"] for t in mine["tracks"] if t["direction"] == "publish")
        status, body = admin.post(f"/api/console/sessions/{mine['session']}/tracks/{track}/mute")
        assert (status, body["data"]) == (200, {"muted": True, "changed": True}), body
        assert admin.post("/api/console/rooms/shared/end?app=acme") == (200, {"status": True, "data": {"kicked": 1}})
        wait_for(lambda: tenant.peer("shared") is None, 5, "the tenant's room ended", dc)
        assert admin.peer("shared", "") is not None, "the default app's room of the same name stays"
        status, body = admin.post(f"/api/console/sessions/{theirs['session']}/kick")
        assert (status, body["data"]) == (200, {"kicked": 1}), body
    finally:
        for pub in pubs:
            pub.kill()
            pub.wait(10)
    assert login(dc.url(CONSOLE), "globex-secret-0123456789")[0] == 401


def test_a_console_that_loses_the_cluster_shows_the_last_view_marked_stale(dev_cluster: DevCluster) -> None:
    dc = dev_cluster
    cc = ConsoleClient(dc.url(CONSOLE))
    pub = dc.client("whip", GATEWAY, "lobby2", "bob", 30)
    try:
        wait_for(lambda: cc.peer("lobby2"), 10, "bob in the console's rooms", dc)
        # The router every member goes through dies: the console is cut off from everything at once.
        children = [int(p) for p in Path(f"/proc/{dc.proc.pid}/task/{dc.proc.pid}/children").read_text().split()]
        router = next(p for p in children if " router " in Path(f"/proc/{p}/cmdline").read_text().replace("\0", " "))
        os.kill(router, signal.SIGKILL)
        data = wait_for(lambda: (d := cc.get("/api/console/rooms"))["stale"] and d, 10, "a stale view", dc)
        assert "lobby2" in [r["room"] for r in data["rooms"]], data  # the last view, kept
        assert data["stale"]["since"] > 0 and "cluster" in data["stale"]["reason"], data
        def none_up() -> dict[str, list[dict[str, Any]]] | None:
            roles = cc.roles()
            return roles if all(n["state"] != "up" for ns in roles.values() for n in ns) else None

        states = wait_for(none_up, 10, "the nodes marked stale or gone", dc)
        assert all(n["state"] in ("stale", "gone") for ns in states.values() for n in ns), states
        status, _, body = request("GET", dc.url(CONSOLE) + "/api/node/health/ready")
        assert status == 503 and b"cluster" in body, body
        assert request("GET", dc.url(CONSOLE) + "/api/node/health/live")[0] == 200
    finally:
        pub.kill()
        pub.communicate()
