"""A real Prometheus (Debian's ``prometheus``) scrapes a dev-cluster on loopback (issue 14).

``trackmesh dev-cluster`` (a connector, a gateway, two media nodes and the console) runs inside the
private network namespace; Prometheus scrapes every member each second. A WHIP publisher and a WHEP
viewer (aiortc, through the gateway) make real media; 500 simulated peers (real WHIP/WHEP offers
that never complete ICE, as bench/metrics_scale.py does, spread over both media nodes and 50 rooms)
make the sessions. PromQL then returns the forwarded-packets rate and the join-time histogram, and
the series count of every member stays under 2,000: no per-peer, per-track or per-room label.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster.test_roles import SECRET, TRACKMESH, _free_range, http
from tests.promtool import PROMTOOL, PrometheusServer
from trackmesh.cli.dev_cluster import die_with_parent
from trackmesh.config import resolve
from trackmesh.security.tokens import SessionToken, issue

from .conftest import CLIENTS_DIR

pytestmark = pytest.mark.e2e

CLIENT = str(CLIENTS_DIR / "aiortc_client.py")
FIXTURES = Path(__file__).resolve().parents[1] / "sdp" / "fixtures"
SIMULATED = 500
MAX_SERIES = 2000


def client(kind: str, url: str, token: str, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, CLIENT, kind, url, "--token", token, "--timeout", "15", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(CLIENTS_DIR))


def test_prometheus_scrapes_a_dev_cluster_with_500_simulated_peers(netns_guard: None, tmp_path: Path) -> None:
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    if PROMTOOL is None:
        pytest.skip("Debian's prometheus package is not installed")
    base, cport = _free_range(5), _free_range(5)
    # Every member reads TRACKMESH_* flags from its environment: the simulated sessions stay connecting.
    env = {**os.environ, "TRACKMESH_CONNECT_TIMEOUT": "600", "TRACKMESH_MAX_SESSIONS_PER_TOKEN": "1000"}
    proc = subprocess.Popen(
        [TRACKMESH, "dev-cluster", "--zones", "1", "--media-per-zone", "2", "--http-port", str(base),
         "--cluster-port", str(cport), "--secret", SECRET, "--routers-per-zone", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    # Start order: connector, gateway, media, media, console (docs/cluster.md, dev-cluster).
    conn, gw, media1, media2, console = (f"127.0.0.1:{base + k}" for k in range(5))
    prometheus = PrometheusServer([conn, gw, media1, media2, console])
    pubs: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 60
        while not any("processes up" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        token_key = resolve("media", {"secret": SECRET}, {}).token_key

        def token(kind: str, room: str, peer: str) -> str:
            return issue(token_key, SessionToken(kind, room, peer), 600, int(time.time()))

        # Real media through the gateway: one publisher, one viewer.
        pubs.append(client("whip", f"http://{gw}/whip/endpoint", token("whip", "live", "cam"), "--duration", "20"))
        time.sleep(1.0)
        pubs.append(client("whep", f"http://{gw}/whep/endpoint", token("whep", "live", "viewer"), "--duration", "20"))

        # 500 simulated peers, straight to the media nodes: one in five publishes.
        offers = {"whip": (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes(),
                  "whep": (FIXTURES / "chrome_whep_recvonly.sdp").read_bytes()}  # fmt: skip

        def simulate(i: int) -> int:
            kind = "whip" if i % 5 == 0 else "whep"
            node = media1 if i % 2 else media2
            status, _, _ = http("POST", f"http://{node}/{kind}/endpoint", offers[kind], {
                "Content-Type": "application/sdp", "Authorization": f"Bearer {token(kind, f'sim-{i % 50}', f'p{i}')}"})
            return status

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(simulate, range(SIMULATED)))
        assert statuses.count(201) == SIMULATED, {s: statuses.count(s) for s in set(statuses)}

        sessions = prometheus.wait("sum(trackmesh_sessions)", lambda v: v >= SIMULATED + 2, timeout=20)
        rate = prometheus.wait("sum(rate(trackmesh_forwarded_packets_total[5s]))", lambda v: v > 0, timeout=20)
        joins = prometheus.wait("sum(trackmesh_join_duration_seconds_count)", lambda v: v >= 2)
        p95 = prometheus.wait("histogram_quantile(0.95, sum by (le) (trackmesh_join_duration_seconds_bucket))",
                              lambda v: v > 0)  # fmt: skip
        # The scrape after the sessions were counted: every member's series with them all live.
        time.sleep(1.2)
        series = {str(r["metric"]["instance"]): float(r["value"][1])  # type: ignore[index]
                  for r in prometheus.query("scrape_samples_scraped")}  # fmt: skip
        up = {str(r["metric"]["instance"]): float(r["value"][1]) for r in prometheus.query("up")}  # type: ignore[index]
        print(f"prometheus on a dev-cluster: {sessions:.0f} sessions, forwarded {rate:.0f} packets/s, "
              f"{joins:.0f} joins (p95 {p95:.3f} s), series per member {json.dumps(series, sort_keys=True)}")
        assert up == {m: 1.0 for m in (conn, gw, media1, media2, console)}, up
        assert set(series) == set(up) and all(0 < n < MAX_SERIES for n in series.values()), series
    finally:
        for p in pubs:
            p.kill()
            p.communicate()
        prometheus.close()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    assert rc == 0, "".join(lines[-60:])
    assert "Traceback" not in "".join(lines)
