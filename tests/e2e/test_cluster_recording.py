"""Recording is cluster-wide (docs/recording.md, "In a cluster"): ``/api/record/start`` taken by
media node A (through the zone gateway) records a GStreamer WHIP publisher on media node B, a
publisher that starts after the call; ``/api/record/list`` on A says B records; ``stop`` on A
finalises B's files while the publisher still sends. Real processes, loopback netns."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, http, running_cluster
from tests.recording.probe import decode_errors, needs_ffmpeg, probe

from .conftest import CLIENTS_DIR, run_client

pytestmark = [pytest.mark.e2e, needs_ffmpeg]

ROOM = "cluster-rec"


@pytest.fixture
def cluster(netns_guard: None, gst_client: Any) -> Iterator[Cluster]:
    with running_cluster() as c:
        yield c


def api(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    status, resp_headers, raw = http(method, url, json.dumps(body).encode() if body is not None else None, headers)
    return status, resp_headers, json.loads(raw)


def sidecars(root: Path) -> list[dict[str, Any]]:
    out = []
    for side in sorted(root.rglob("*.json")):
        info = json.loads(side.read_text())
        info["media"] = side.with_name(side.name.removesuffix(".json"))
        out.append(info)
    return out


def test_a_start_on_node_a_records_a_publisher_on_node_b_and_a_stop_finalises_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    gw = cluster.gateway(zone=1)
    cluster.media(1, 10, "--record-dir", str(dir_a))
    cluster.media(1, 11, "--record-dir", str(dir_b))
    cluster.wait_nodes(gw, 2)
    node_a, node_b = 1 << 8 | 10, 1 << 8 | 11

    # Start on A (through the gateway, pinned), before anyone publishes.
    status, headers, started = api("POST", f"{gw.base}/api/record/start?node=10", {"room": ROOM})
    assert status == 200 and started["status"], started
    assert headers["x-trackmesh-served-by"] == "1/10"
    session = started["data"]["session"]
    assert started["data"]["all_peers"] is True and started["data"]["nodes"] == []

    # The publisher on B (GStreamer WHIP, VP8 + Opus), in a thread.
    token = cluster.token(gw.base, "whip", ROOM, "bob")
    done: list[tuple[int, dict[str, Any], str]] = []
    args = [str(CLIENTS_DIR / "gst_webrtc_client.py"), "whip", f"{gw.base}/whip/endpoint?node=11",
            "--token", token, "--codec", "vp8", "--duration", "7"]  # fmt: skip
    pub = threading.Thread(target=lambda: done.append(run_client(args, system_python=True, timeout=40)), daemon=True)
    pub.start()

    # A (asked through the gateway) says B records the room's two tracks, in the same session.
    deadline, recording = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        status, _, listed = api("GET", f"{gw.base}/api/record/list?room={ROOM}&node=10")
        assert status == 200, listed
        recording = listed["data"]["recording"]
        if recording and recording["nodes"] and recording["nodes"][0]["tracks"] == 2:
            break
        time.sleep(0.2)
    assert recording is not None and recording["session"] == session, recording
    assert recording["nodes"] == [{"node": node_b, "zone": 1, "worker": 0, "session": session, "tracks": 2}]
    assert listed["data"]["files"] == []  # A's own disk: nothing (it ingests nothing)
    assert node_a != node_b

    time.sleep(2.0)  # about 2 s of media recorded
    status, _, stopped = api("POST", f"{gw.base}/api/record/stop?node=10", {"room": ROOM})
    assert status == 200 and stopped["data"]["session"] == session, stopped
    # B finalises its files (while the publisher still publishes).
    deadline, files = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        files = sidecars(dir_b)
        if len(files) == 2 and all(f["status"] == "complete" for f in files):
            break
        time.sleep(0.2)
    assert pub.is_alive(), "the publisher ended before the stop: the test proves nothing"
    assert {(f["kind"], f["status"], f["session"], f["peer"]) for f in files} == {
        ("video", "complete", session, "bob"),
        ("audio", "complete", session, "bob"),
    }, files
    for f in files:
        assert str(f["media"]).startswith(str(dir_b / "default" / ROOM / session)), f["media"]
        info = probe(f["media"])
        assert float(info["format"]["duration"]) >= 1.5, info["format"]
        assert decode_errors(f["media"]) == "", f["media"]
    assert not dir_a.exists() or not list(dir_a.rglob("*.webm"))
    status, _, again = api("POST", f"{gw.base}/api/record/stop?node=11", {"room": ROOM})
    assert status == 404, again  # stopped cluster-wide: B knows it too
    status, _, listed = api("GET", f"{gw.base}/api/record/list?room={ROOM}&node=11")
    assert status == 200 and listed["data"]["recording"] is None, listed
    assert len(listed["data"]["files"]) == 2
    wrong = {"Authorization": "Bearer wrong-secret-123456", "Content-Type": "application/json"}
    status, _, raw = http("POST", f"{gw.base}/api/record/start", json.dumps({"room": ROOM}).encode(), wrong)
    assert status == 401, raw  # the node behind checks (and throttles, per client) the secret
    pub.join(30)
    assert done and done[0][0] == 0, done
