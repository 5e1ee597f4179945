"""Every role's ``/metrics`` passes ``promtool check metrics`` (Debian's prometheus package) and
``/api/node/health`` tells live from ready, with the reason (docs/observability.md).

Real processes on loopback, inside the private network namespace (conftest's guard): a zone
router, a gateway and a media node of the routers' cluster mode, and a standalone node (which
embeds the connector).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.cluster.test_roles import Cluster, free_port, http
from tests.cluster.test_routers import routed, start_routers
from tests.promtool import PROMTOOL, promtool_problems
from tests.runtime.node_process import NodeProcess


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


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
        text = http("GET", standalone.base + "/metrics")[2].decode()
        assert "trackmesh_hook_queue_depth 0.0" in text, text
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
