"""Every role's ``/metrics`` passes ``promtool check metrics`` (Debian's prometheus package) and
``/api/node/health`` tells live from ready, with the reason (docs/observability.md).

Real processes on loopback, inside the private network namespace (conftest's guard): a zone
router, a gateway and a media node of the routers' cluster mode, and a standalone node (which
embeds the connector).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.test_roles import Cluster, free_port, http
from tests.cluster.test_routers import routed, start_routers
from tests.promtool import PROMTOOL, promtool_problems, sample
from tests.runtime.node_process import NodeProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing (apt-get install prometheus)")
def test_every_role_exposes_metrics_promtool_accepts(cluster: Cluster) -> None:
    routers = start_routers(cluster, zones=1, per_zone=1)
    gw = routed(cluster, routers, "gateway", 1, 1)
    media = routed(cluster, routers, "media", 1, 10)
    cluster.wait_nodes(gw, 1)
    standalone = NodeProcess()
    try:
        standalone.wait_ready()
        bases = {"router": routers[1][0].base, "gateway": gw.base, "media": media.base, "standalone": standalone.base}
        for role, base in bases.items():
            status, headers, body = http("GET", base + "/metrics")
            text = body.decode()
            assert status == 200 and headers["content-type"].startswith("text/plain"), (role, status, text[:300])
            assert f'role="{role}"' in text, (role, text[:500])
            assert promtool_problems(text) == "", (role, promtool_problems(text))
        # The media roles expose the media families from the start (no missing series before the first peer).
        for base in (media.base, standalone.base):
            text = http("GET", base + "/metrics")[2].decode()
            for family in ("trackmesh_forwarded_packets_total", "trackmesh_packets_received_total",
                           "trackmesh_join_duration_seconds", "trackmesh_viewer_rtt_seconds_bucket",
                           "trackmesh_sessions{"):  # fmt: skip
                assert family in text, (base, family)
        text = http("GET", media.base + "/metrics")[2].decode()
        assert 'trackmesh_cluster_packets_sent_total{worker="0"}' in text, text
        assert 'trackmesh_cluster_channels{direction="import",worker="0"}' in text, text
        text = http("GET", standalone.base + "/metrics")[2].decode()
        assert "trackmesh_hook_queue_depth 0.0" in text, text
        assert "trackmesh_room_" not in text  # per-room labels are opt-in (--metrics-room-labels)
        # docs/observability.md lists every family a role exposes (process_* as a group).
        doc = (DOCS / "observability.md").read_text()
        for role, base in bases.items():
            families = re.findall(r"^# TYPE (\S+) ", http("GET", base + "/metrics")[2].decode(), re.M)
            missing = [f for f in families if not f.startswith("process_") and f"`{f}`" not in doc]
            assert not missing, (role, missing)
        # Health: live and ready apart, with the reason.
        for role, base in bases.items():
            status, _, body = http("GET", base + "/api/node/health/live")
            assert status == 200 and json.loads(body)["data"]["live"] is True, (role, body)
            status, _, body = http("GET", base + "/api/node/health/ready")
            data = json.loads(body)["data"]
            assert status == 200 and data["ready"] is True and data["reason"], (role, body)
            status, _, body = http("GET", base + "/api/node/health")
            data = json.loads(body)["data"]
            assert status == 200 and data["live"] is True and data["ready"] is True, (role, body)
    finally:
        assert standalone.stop() == 0


def test_a_media_node_without_its_cluster_is_live_but_not_ready_with_the_reason(cluster: Cluster) -> None:
    media = cluster.start("media", 1, 10, seeds=[f"tcp/127.0.0.1:{free_port()}"], wait=False)
    deadline = time.monotonic() + 20
    while media.health()[0] == 0 and time.monotonic() < deadline:
        assert media.proc.poll() is None, media.log()
        time.sleep(0.1)
    status, _, body = http("GET", media.base + "/api/node/health/live")
    assert status == 200, body
    status, _, body = http("GET", media.base + "/api/node/health/ready")
    data = json.loads(body)["data"]
    assert status == 503 and data["ready"] is False and "not connected to any cluster seed" in data["reason"], body
    text = http("GET", media.base + "/metrics")[2].decode()
    assert "trackmesh_ready 0.0" in text, text


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing (apt-get install prometheus)")
def test_alerting_rules_and_dashboard_use_documented_metrics() -> None:
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(DOCS / "alerting-rules.yml")], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    doc = (DOCS / "observability.md").read_text()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    used = set(re.findall(r"\b(trackmesh_[a-z_]+)", " ".join(exprs) + (DOCS / "alerting-rules.yml").read_text()))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    missing = sorted(f for f in families if f"`{f}`" not in doc)
    assert not missing, missing


FIXTURES = Path(__file__).resolve().parents[1] / "sdp" / "fixtures"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing (apt-get install prometheus)")
def test_opt_in_room_labels_name_the_busiest_rooms_only() -> None:
    odd = '<img src=x onerror=alert(1)> "quoted"'  # escaped in the exposition, accepted by promtool
    rooms = [odd, odd, odd, "second", "second", "third"]
    node = NodeProcess("--metrics-room-labels", "2", "--connect-timeout", "120")
    try:
        node.wait_ready()
        offer = (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes()
        for i, room in enumerate(rooms):  # real offers; the sessions stay connecting (no ICE), each in its room
            _, tok = node.json("POST", "/token/whip", {"room": room, "peer": f"p{i}", "ttl": 600}, token=node.secret)
            status, _, body = http("POST", f"{node.base}/whip/endpoint", offer, {
                "Content-Type": "application/sdp", "Authorization": f"Bearer {tok['data']['token']}"})  # fmt: skip
            assert status == 201, body
        text = http("GET", node.base + "/metrics")[2].decode()
        assert promtool_problems(text) == "", promtool_problems(text)
        escaped = odd.replace('"', '\\"')
        assert sample(text, "trackmesh_room_sessions", room=escaped) == 3, text
        assert sample(text, "trackmesh_room_sessions", room="second") == 2
        assert 'room="third"' not in text  # beyond the 2 labelled rooms: only counted
        assert sample(text, "trackmesh_room_labels_omitted") == 1
        for family in ("trackmesh_room_rtp_packets_received_total", "trackmesh_room_forwarded_packets_total",
                       "trackmesh_room_forwarded_bytes_total"):  # fmt: skip
            assert f'{family}{{room="second"}} 0.0' in text, family
        doc = (DOCS / "observability.md").read_text()
        families = re.findall(r"^# TYPE (trackmesh_room_\S+) ", text, re.M)
        assert len(families) == 5 and all(f"`{f}`" in doc for f in families), families
    finally:
        assert node.stop() == 0
