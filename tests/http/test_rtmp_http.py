"""``POST /token/rtmp`` (URL + stream key) and ``GET``/``DELETE /rtmp/conn`` on a node app (no media
workers started: a stand-in worker answers the calls)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from trackmesh.config import resolve
from trackmesh.http.app import create_app
from trackmesh.rpc import RpcError
from trackmesh.runtime.node import Node
from trackmesh.security.tokens import verify

SECRET = "a-secret-of-16-chars"
AUTH = {"Authorization": f"Bearer {SECRET}"}


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.udp_port = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        if method == "rtmp.list":
            return [{"conn_id": "c", "room": "r", "peer": "p", "connected": True, "remote": None, "counters": {}}]
        if method == "rtmp.delete":
            raise RpcError(404, "no such RTMP publisher on this node")
        raise RpcError(404, f"unknown worker call {method!r}")

    async def stop(self, reason: str, timeout: float) -> None:
        pass


def client(workers: int = 2, **flags: str) -> tuple[TestClient, Node]:
    node = Node(resolve("standalone", {"secret": SECRET, "workers": str(workers), **flags}, {}))
    node.workers = [Worker(i) for i in range(workers)]
    return TestClient(create_app(node)), node


def test_an_rtmp_token_comes_with_the_url_of_the_rooms_worker_and_is_the_stream_key() -> None:
    http, node = client(rtmp_port="19350", node_ip="127.0.0.1")
    resp = http.post("/token/rtmp", json={"room": "studio", "peer": "obs", "ttl": 60}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    index = node.worker_for_room("studio").index
    assert data["rtmp_url"] == f"rtmp://127.0.0.1:{19350 + index}/live"
    assert data["stream_key"] == data["token"] and data["publish_url"] == f"{data['rtmp_url']}/{data['token']}"
    token = verify(node.config.token_key, data["stream_key"], "rtmp", int(time.time()))
    assert (token.room, token.peer) == ("studio", "obs")
    # Other kinds keep their one-field shape.
    whep = http.post("/token/whep", json={"room": "studio", "ttl": 60}, headers=AUTH).json()["data"]
    assert set(whep) == {"token"}


def test_an_rtmp_token_needs_room_and_peer_and_rtmp_on() -> None:
    http, _ = client()
    resp = http.post("/token/rtmp", json={"room": "studio", "ttl": 60}, headers=AUTH)
    assert resp.status_code == 400 and "needs room and peer" in resp.json()["error"]
    off, _ = client(rtmp_port="0")
    resp = off.post("/token/rtmp", json={"room": "studio", "peer": "obs", "ttl": 60}, headers=AUTH)
    assert resp.status_code == 503 and "--rtmp-port 0" in resp.json()["error"]
    assert http.post("/token/rtmp", json={"room": "s", "peer": "o", "ttl": 60}).status_code == 401


def test_the_default_rtmp_port_is_1935() -> None:
    http, node = client(workers=1)
    data = http.post("/token/rtmp", json={"room": "studio", "peer": "obs", "ttl": 60}, headers=AUTH).json()["data"]
    assert node.config.rtmp_port is None and data["rtmp_url"] == "rtmp://127.0.0.1:1935/live"


def test_listing_and_deleting_publishers_needs_the_app_secret() -> None:
    http, _ = client()
    assert http.get("/rtmp/conn").status_code == 401
    assert http.get("/rtmp/conn", headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    resp = http.get("/rtmp/conn", headers=AUTH)
    assert resp.status_code == 200 and len(resp.json()["data"]["conns"]) == 2  # one per stand-in worker
    assert http.delete("/rtmp/conn/forged", headers=AUTH).status_code == 404  # not a conn id of this node
    assert http.delete("/rtmp/conn/forged").status_code == 401
    paths = http.get("/openapi.json").json()["paths"]
    assert "delete" in paths["/rtmp/conn/{conn_id}"] and "get" in paths["/rtmp/conn"]
