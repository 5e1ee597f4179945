"""Multi-tenancy in a cluster (docs/connector.md): the zone's connector owns the app list
(``--apps``) and hands it, sealed with the cluster secret, to the media nodes over zenoh
(runtime/cluster_apps.py). Real processes, loopback only, in the private network namespace.

- a media node started before the connector and one started after both take the list: a
  tenant's secret mints tokens on them and its WHIP session (aiortc) joins the tenant's room;
- the tenant's room and the single-tenant app's room of the same name are apart: the log shows
  each app its own room and session;
- an app the zone's connector does not list is refused (401); garbage put on the list's key is
  refused and counted, the list in use stays.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_roles import SECRET, Cluster, Member, http
from tests.e2e.test_connector_cluster import api, connector, finished, media, wait_until

from .conftest import CLIENTS_DIR

pytestmark = pytest.mark.e2e

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")
ACME = "acme-secret-0123456789"



def mint(m: Member, secret: str, room: str, peer: str) -> tuple[int, Any]:
    body = json.dumps({"room": room, "peer": peer, "ttl": 600}).encode()
    status, _, raw = http("POST", m.base + "/token/whip", body,
                          {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"})  # fmt: skip
    return status, json.loads(raw) if raw else None


def publish(m: Member, secret: str, room: str, peer: str) -> subprocess.Popen[str]:
    status, resp = mint(m, secret, room, peer)
    assert status == 200, resp
    args = [sys.executable, CLIENT, "whip", m.base + "/whip/endpoint", "--token", resp["data"]["token"],
            "--duration", "1", "--timeout", "10"]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(CLIENTS_DIR))


def link_value(m: Member, what: str) -> float:
    _, _, body = http("GET", m.base + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'trackmesh_connector_link{{what="{what}"}} '):
            return float(line.split()[-1])
    return -1.0


def test_the_zone_connectors_apps_verify_on_its_media_nodes_and_rooms_stay_per_app(
    cluster: Cluster, tmp_path: Path
) -> None:
    from trackmesh.cluster.zenoh_session import ClusterConfig, open_node

    apps = tmp_path / "apps.json"
    apps.write_text(json.dumps({"apps": [{"app_id": "acme", "app_secret": ACME}]}))
    early = media(cluster, tmp_path / "m1", [])  # before the connector: takes the list when it appears
    conn = connector(cluster, tmp_path / "c.db", "--apps", str(apps), seeds=[early.seed])
    late = cluster.start("media", 1, 11, "--data-dir", str(tmp_path / "m2"), seeds=[conn.seed])
    for m in (early, late):
        wait_until(lambda m=m: mint(m, ACME, "shared", "probe")[0] == 200, 20, "the tenant's secret accepted", m, conn)
        assert mint(m, "globex-secret-0123456789", "shared", "x")[0] == 401  # no such app in this zone
    # The tenant's and the single-tenant app's room of that name, at once.
    for proc in [publish(early, ACME, "shared", "alice"), publish(late, SECRET, "shared", "alice")]:
        finished(proc)

    def sessions_of(secret: str) -> list[dict[str, Any]]:
        status, _, body = http("GET", conn.base + "/api/connector/log/sessions",
                               headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
        assert status == 200, body
        return list(json.loads(body)["data"])

    wait_until(lambda: len(sessions_of(ACME)) == 1 and len(sessions_of(SECRET)) == 1, 20,
               "each app's session in the log", conn, early, late)  # fmt: skip
    assert [r["room"] for r in api(conn, "/api/connector/log/rooms")] == ["shared"]
    tenant = sessions_of(ACME)[0]
    assert [p["peer"] for p in tenant["peers"]] == ["alice"] and tenant["id"] != sessions_of(SECRET)[0]["id"]
    # Garbage on the list's key: refused and counted, the list in use stays.
    member = open_node(ClusterConfig(SECRET, listen=[], seeds=[early.seed]))
    try:
        wait_until(lambda: member.links() > 0, 10, "a link to the media node", early)
        before = link_value(early, "app_list_rejected")
        deadline = time.monotonic() + 15
        while link_value(early, "app_list_rejected") <= before and time.monotonic() < deadline:
            member.session.put("tm/apps/1", b"\x01" + b"\x00" * 40)
            time.sleep(0.3)
        assert link_value(early, "app_list_rejected") > before, early.log()
    finally:
        member.close()
    assert mint(early, ACME, "shared", "bob")[0] == 200
    assert link_value(early, "app_lists") >= 1
