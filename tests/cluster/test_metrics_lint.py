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
from tests.promtool import PROMTOOL, promtool_problems
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
