"""The console is scoped to the app whose secret logged in (multi-tenancy, docs/console.md): an app
sees and acts on its own sessions only. Real node, real WHIP offers (the sessions stay connecting:
no ICE needed to list or kick them)."""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import signal
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.promtool import sample
from tests.runtime.node_process import NodeProcess, http

WHIP_OFFER = (Path(__file__).parents[1] / "sdp" / "fixtures" / "chrome_whip_simulcast.sdp").read_bytes()
ACME, GLOBEX = "acme-secret-0123456789", "globex-secret-0123456789"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    apps = tmp_path_factory.mktemp("apps") / "apps.json"
    apps.write_text(json.dumps({"apps": [{"app_id": "acme", "app_secret": ACME},
                                         {"app_id": "globex", "app_secret": GLOBEX}]}))  # fmt: skip
    n = NodeProcess("--apps", str(apps), "--workers", "2")
    n.wait_ready()
    yield n
    assert n.stop(signal.SIGINT) == 0


class Console:
    """A logged-in console client (cookie, CSRF token, our Origin)."""

    def __init__(self, node: NodeProcess, secret: str) -> None:
        self.node = node
        conn = httpclient.HTTPConnection("127.0.0.1", node.port, timeout=10)
        conn.request("POST", "/console/login", urllib.parse.urlencode({"secret": secret}),
                     {"Content-Type": "application/x-www-form-urlencoded", "Origin": node.base})  # fmt: skip
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 303, resp.status
        self.cookie = (resp.getheader("set-cookie") or "").split(";")[0]
        self.session = self.get("/api/console/session")

    def get(self, path: str) -> dict[str, Any]:
        status, _, body = http("GET", self.node.base + path, None, {"Cookie": self.cookie})
        assert status == 200, (path, status, body)
        return dict(json.loads(body)["data"])

    def post(self, path: str) -> tuple[int, dict[str, Any]]:
        headers = {"Cookie": self.cookie, "Origin": self.node.base, "X-CSRF-Token": self.session["csrf"]}
        status, _, body = http("POST", self.node.base + path, b"", headers)
        return status, json.loads(body)

    def peers(self) -> list[tuple[str, str, str]]:
        return [(r["room"], p["peer"], p["session"]) for r in self.get("/api/console/rooms")["rooms"]
                for p in r["peers"]]  # fmt: skip


def worker_of(room: str) -> int:
    """The worker of a room on a 2-worker node (runtime/node.py worker_for_room)."""
    return int.from_bytes(hashlib.blake2b(room.encode(), digest_size=8).digest(), "big") % 2


def whip(node: NodeProcess, secret: str, room: str, peer: str) -> None:
    status, data = node.json("POST", "/token/whip", {"room": room, "peer": peer, "ttl": 600}, token=secret)
    assert status == 200, data
    status, _, body = http("POST", node.base + "/whip/endpoint", WHIP_OFFER,
                           {"Content-Type": "application/sdp", "Authorization": f"Bearer {data['data']['token']}"})
    assert status == 201, body


def test_each_app_sees_and_kicks_only_its_own_sessions(node: NodeProcess) -> None:
    whip(node, ACME, "shared-name", "acme-cam")
    whip(node, GLOBEX, "shared-name", "globex-cam")
    acme, globex, root = Console(node, ACME), Console(node, GLOBEX), Console(node, node.secret)
    assert acme.session["app"] == "acme" and globex.session["app"] == "globex" and root.session["app"] == ""
    [(room, peer, acme_session)] = acme.peers()
    assert (room, peer) == ("shared-name", "acme-cam")
    [(_, peer, globex_session)] = globex.peers()
    assert peer == "globex-cam"
    assert root.peers() == []
    view = acme.get("/api/console/node")
    assert view["ready"] and view["role"] == "standalone" and [w["worker"] for w in view["workers"]] == [0, 1]
    assert sum(w["sessions"] for w in view["workers"]) == 2 and view["rss_bytes"] > 0
    # Another app's session: not found, not kicked; ending "its" room of the same name kicks only its own.
    assert globex.post(f"/api/console/sessions/{acme_session}/kick")[0] == 404
    assert globex.post("/api/console/rooms/shared-name/end") == (200, {"status": True, "data": {"kicked": 1}})
    assert globex.peers() == [] and [p[1] for p in acme.peers()] == ["acme-cam"]
    # A room on the other worker process: the listing and the kicks reach every worker.
    other = next(f"room-{i}" for i in range(100) if worker_of(f"room-{i}") != worker_of("shared-name"))
    whip(node, ACME, other, "acme-cam-2")
    rows = {p["peer"]: p for r in acme.get("/api/console/rooms")["rooms"] for p in r["peers"]}
    assert sorted(rows) == ["acme-cam", "acme-cam-2"] and {p["worker"] for p in rows.values()} == {0, 1}, rows
    # Mute (what it does: tests/e2e/test_console.py): another app's session is not found, nor a track
    # the session does not publish (these never connected: no track yet); only mute and unmute exist.
    mute = f"/api/console/sessions/{acme_session}/tracks/video_main/mute"
    assert globex.post(mute) == (404, {"status": False, "error": "no live session with this id in your app"})
    assert acme.post(mute) == (404, {"status": False, "error": "this session publishes no such track"})
    assert acme.post(mute.replace("/mute", "/louder"))[0] == 400
    assert acme.post(f"/api/console/rooms/{other}/end") == (200, {"status": True, "data": {"kicked": 1}})
    assert acme.post(f"/api/console/sessions/{acme_session}/kick") == (200, {"status": True, "data": {"kicked": 1}})
    assert acme.peers() == []
    assert acme.post(f"/api/console/sessions/{acme_session}/kick")[0] == 404  # gone
    assert globex_session != acme_session
    # The funnel counted both: requested, never connected, ended by the operator.
    text = http("GET", node.base + "/metrics")[2].decode()
    assert sample(text, "trackmesh_join_requests_total", transport="whip") == 3, text
    assert sample(text, "trackmesh_join_failed_total", transport="whip", reason="kicked") == 3, text
    assert sample(text, "trackmesh_sessions_closed_total", transport="whip", reason="kicked") == 3, text
