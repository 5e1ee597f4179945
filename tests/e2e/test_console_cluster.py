"""The console role (``trackmesh console``) on a real cluster: a connector, a gateway, a media node and
a console as separate processes (loopback only, scouting off, inside the private network namespace).

One lean scenario: log in to the console; its zones view shows the gateway, media and connector nodes
with their load and health; a WHIP publisher (aiortc, through the gateway) appears in its rooms view
within 5 s; its timeline comes from the zone's connector; a kick from the console ends its session
on the media node (the connector logs the reason); then the cluster is killed under the console,
which keeps answering, with the last view marked stale.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.cluster.test_roles import SECRET, Cluster, Member
from tests.cluster.test_roles import http as request
from tests.cluster.test_routers import ROUTED

from .conftest import CLIENTS_DIR

pytestmark = pytest.mark.e2e

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")
KICKED = 3  # DisconnectReason.KICK (connector/events.py)


def wait_for(fetch: Callable[[], Any], timeout: float, what: str, *logs: Member) -> Any:
    end = time.monotonic() + timeout
    while True:
        found = fetch()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(m.log(60) for m in logs))
        time.sleep(0.1)


class ConsoleClient:
    def __init__(self, console: Member) -> None:
        self.base = console.base
        conn = http.client.HTTPConnection("127.0.0.1", console.http_port, timeout=10)
        try:  # the login's 303 is not followed: its Set-Cookie is what we want
            conn.request("POST", "/console/login", ("secret=" + quote(SECRET)).encode(),
                         {"Origin": self.base, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            resp = conn.getresponse()
            assert resp.status == 303, resp.read()
            self.cookie = (resp.getheader("set-cookie") or "").split(";")[0]
        finally:
            conn.close()
        self.csrf = self.get("/api/console/session")["csrf"]

    def get(self, path: str) -> Any:
        status, _, body = request("GET", self.base + path, headers={"Cookie": self.cookie})
        assert status == 200, (path, status, body)
        return json.loads(body)["data"]

    def post(self, path: str) -> tuple[int, Any]:
        status, _, body = request("POST", self.base + path, b"", {"Cookie": self.cookie, "Origin": self.base,
                                                                  "X-CSRF-Token": self.csrf})  # fmt: skip
        return status, json.loads(body)


@pytest.fixture
def cluster(netns_guard: None) -> Iterator[Cluster]:
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    c = Cluster()
    try:
        yield c
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


def members_by_role(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"gateway": [], "media": [], "connector": []}
    for zone in view["zones"]:
        for role in out:
            out[role] += [{**n, "zone": zone["zone"]} for n in zone[role]]
    return out


def test_console_role_zones_rooms_timeline_kick_and_stale(cluster: Cluster, tmp_path: Path) -> None:
    # Every member a client of one zone router: killing it cuts the console (and everyone) off at once.
    router = cluster.start("router", 1, 1, seeds=[])
    via = {"seeds": [router.seed]}
    conn = cluster.start("connector", 1, 3, *ROUTED, "--connector-db", f"sqlite:///{tmp_path / 'log.db'}", **via)
    gw = cluster.start("gateway", 1, 1, *ROUTED, **via)
    media = cluster.start("media", 1, 2, *ROUTED, **via)
    console = cluster.start("console", 0, 1, *ROUTED, **via)
    members = [router, conn, gw, media, console]
    # No cookie: every console API is 401 on the console role too.
    assert request("GET", console.base + "/api/console/cluster")[0] == 401
    assert request("GET", console.base + "/api/console/rooms")[0] == 401
    cc = ConsoleClient(console)

    # Zones -> gateways, media and connector nodes, each with its load, health and report age.
    def all_up() -> dict[str, list[dict[str, Any]]] | None:
        roles = members_by_role(cc.get("/api/console/cluster"))
        ok = all(len(roles[r]) == 1 and roles[r][0]["state"] == "up" and roles[r][0]["ready"] for r in roles)
        return roles if ok else None

    roles = wait_for(all_up, 10, "the console to see the gateway, the media node and the connector", *members)
    m = roles["media"][0]
    assert (m["zone"], m["node"], m["capacity"], m["sessions"]) == (1, 2, 1000, 0), m
    assert m["mem_mb"] > 10 and m["cpu"] >= 0 and 0 <= m["age_s"] < 3 and m["http"] == media.base, m
    assert roles["gateway"][0]["node"] == 1 and roles["gateway"][0]["mem_mb"] > 10, roles
    assert roles["connector"][0]["node"] == 3 and roles["connector"][0]["http"] == conn.base, roles

    # A WHIP publisher through the gateway appears in the console's rooms view within 5 s.
    token = cluster.token(gw.base, "whip", "lobby", "alice")
    started = time.monotonic()
    pub = subprocess.Popen([sys.executable, CLIENT, "whip", gw.base + "/whip/endpoint", "--token", token,
                            "--duration", "30", "--timeout", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=str(CLIENTS_DIR))  # fmt: skip
    try:

        def published() -> dict[str, Any] | None:
            data = cc.get("/api/console/rooms")
            for room in data["rooms"]:
                for peer in room["peers"]:
                    if room["room"] == "lobby" and any(t["direction"] == "publish" for t in peer["tracks"]):
                        return {**peer, "unanswered": data["unanswered"], "stale": data["stale"]}
            return None

        peer = wait_for(published, 5.0, "the publisher in the console's rooms", *members)
        print(f"console role: publisher in the rooms view {time.monotonic() - started:.2f} s after the client started")
        assert (peer["peer"], peer["transport"], peer["zone"], peer["node"]) == ("alice", "whip", 1, 2), peer
        assert peer["unanswered"] == [] and peer["stale"] is None, peer
        session = peer["session"]

        # Its timeline, from the zone's connector.
        timeline = wait_for(lambda: [e["event"] for e in cc.get(f"/api/console/events?session={session}")
                                     if e["event"] == "Join"] and cc.get(f"/api/console/events?session={session}"),
                            5, "the publisher's timeline", conn)  # fmt: skip
        assert timeline[0]["event"] == "Connecting" and timeline[0]["session"] == session, timeline
        assert any(p["peer"] == "alice" for p in cc.get("/api/console/peers")), "peers from the connector"

        # Kick it from the console: the media node closes it, the connector logs why.
        status, body = cc.post(f"/api/console/sessions/{session}/kick")
        assert status == 200 and body["data"] == {"kicked": 1}, body
        # (aiortc does not notice a DTLS close: the session's end is checked on the cluster's side.)
        wait_for(lambda: not any(p["session"] == session for r in cc.get("/api/console/rooms")["rooms"]
                                 for p in r["peers"]), 5, "the kicked session gone from the rooms", media)
        ended = wait_for(lambda: [e for e in cc.get(f"/api/console/events?session={session}")
                                  if e["event"] == "Disconnected"], 10, "Disconnected in the timeline", conn)
        assert json.loads(ended[0]["meta"])["reason"] == KICKED, ended
        assert cc.post("/api/console/sessions/123456789/kick")[0] == 404
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.communicate()

    # The console loses the cluster (its router dies): it keeps answering, the last view marked stale,
    # the nodes stale or gone.
    token = cluster.token(media.base, "whip", "lobby2", "bob")
    pub = subprocess.Popen([sys.executable, CLIENT, "whip", media.base + "/whip/endpoint", "--token", token,
                            "--duration", "30", "--timeout", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=str(CLIENTS_DIR))  # fmt: skip
    try:
        wait_for(lambda: any(r["room"] == "lobby2" for r in cc.get("/api/console/rooms")["rooms"]), 10, "bob", media)
        router.kill()
        data = wait_for(lambda: (d := cc.get("/api/console/rooms"))["stale"] and d, 10, "a stale view", console)
        assert [r["room"] for r in data["rooms"]] == ["lobby2"], data  # the last view, kept
        assert data["stale"]["since"] > 0 and "cluster" in data["stale"]["reason"], data
        states = wait_for(lambda: all(n["state"] != "up" for ns in members_by_role(cc.get("/api/console/cluster"))
                                      .values() for n in ns) and members_by_role(cc.get("/api/console/cluster")),
                          10, "the nodes marked stale or gone", console)  # fmt: skip
        assert all(n["state"] in ("stale", "gone") for ns in states.values() for n in ns), states
        status, _, body = request("GET", console.base + "/api/node/health/ready")
        assert status == 503 and b"cluster" in body, body
        assert request("GET", console.base + "/api/node/health/live")[0] == 200
    finally:
        pub.kill()
        pub.communicate()
