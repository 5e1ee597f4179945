"""``trackmesh-bench --url``: the scenarios against a trackmesh node the command did not start.

The node is a real ``trackmesh standalone`` started here on 127.0.0.1 (tests/runtime/node_process.py);
the bench runs as a subprocess with ``--url`` (no namespace of its own: it must reach the node, and
scripts/test.sh already runs pytest in a loopback-only one). Real ICE, DTLS, SRTP and real numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest, start_http_server

from trackmesh.loadtest.cli import main
from trackmesh.loadtest.deployment import Deployment, parse_process_metrics
from trackmesh.loadtest.signalling import ServerUrl

from ..runtime.node_process import NodeProcess, free_port

pytestmark = pytest.mark.timeout(90)


def _bench(tmp_path: Path, node: NodeProcess, *args: str, env: dict[str, str] | None = None) -> tuple[Any, str, float]:
    out = tmp_path / "result.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "trackmesh.loadtest.cli", *args, "--url", node.base, "--out", str(out)],
        capture_output=True, text=True, timeout=80, env=dict(os.environ, **(env or {})),
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout, elapsed


def _node(*args: str) -> NodeProcess:
    node = NodeProcess("--node-ip", "127.0.0.1", "--workers", "1", *args, secret="url-bench-secret-0123")
    node.wait_ready()
    return node


def test_s1_against_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = _node()
    try:
        # A wrong secret stops the run before any client, with the reason.
        assert main(["s1", "--url", node.base, "--secret", "not-the-secret-123"]) == 2
        assert "answered HTTP 401 (wrong app secret?)" in capsys.readouterr().err
        doc, stdout, elapsed = _bench(tmp_path, node, "s1", "--duration", "3", "--step", "3", "--max-subs", "3",
                                      "--idle-peers", "1", "--sequential-joins", "1",
                                      env={"TRACKMESH_BENCH_SECRET": node.secret})
    finally:
        node.stop()
    assert elapsed < 40, f"run took {elapsed:.1f} s"
    assert doc["environment"]["target_url"] == node.base
    assert doc["environment"]["netns"].startswith("none")
    assert node.secret not in json.dumps(doc)  # the secret is not written to the report
    target = doc["target"]
    assert target["url"] == node.base and target["role"] == "standalone" and target["metrics_status"] == 200
    # trackmesh's /metrics has the process collector (one worker: the whole server is that process), so
    # server CPU and RSS are measured from it.
    assert not any(m.startswith("server CPU") for m in target["not_measured"]), target
    assert not any(m.startswith("server RSS") for m in target["not_measured"]), target
    assert any("process_cpu_seconds_total" in m for m in target["measured"]), target
    r = doc["results"]["trackmesh"]
    step = r["steps"][-1]
    assert step["subscribers"] == 3 and step["join_failures"] == 0, step
    # Every subscriber got > 90 % of what the publisher sent in the window, matched by payload hash.
    assert step["loss_worst"] < 0.10, step
    assert step["pkts_in_per_s"] > 100, step  # ~165 pkt/s of VP8 + Opus replayed
    assert step["pkts_out_per_s"] > 0.9 * 3 * step["pkts_in_per_s"], step
    assert step["corrupted"] == 0 and step["duplicated"] == 0 and step["srtp_errors"] == 0, step
    lat = step["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 1000, lat
    print("url bench:", {k: step[k] for k in ("server_cpu", "server_us_per_pkt", "rss_kb",
                                              "foreign_load_server_cores")}, r["rss_per_idle_peer_kb"])  # fmt: skip
    assert step["server_cpu"] > 0 and step["server_us_per_pkt"] > 0 and step["rss_kb"] > 1024, step
    assert step["foreign_load_server_cores"] is None, step
    assert r["join_ms"]["idle"]["n"] == 1 and r["join_ms"]["idle"]["p50"] > 0, r["join_ms"]
    assert "not measured:" in stdout and "S1 capacity" in stdout


def test_s3_against_a_running_node_over_the_sdk(tmp_path: Path) -> None:
    """Also: a node whose /metrics and /api/node/info need --metrics-token, given through the environment."""
    metrics_token = "url-bench-metrics-token-42"
    node = _node("--metrics-token", metrics_token)
    try:
        without = Deployment(ServerUrl.parse(node.base), node.secret).coverage()
        doc, stdout, elapsed = _bench(tmp_path, node, "s3", "--secret", node.secret, "--speakers", "3",
                                      "--duration", "2", "--step", "2", "--max-subs", "2", "--sequential-joins", "1",
                                      env={"TRACKMESH_BENCH_METRICS_TOKEN": metrics_token})
    finally:
        node.stop()
    assert elapsed < 40, f"run took {elapsed:.1f} s"
    r = doc["results"]["trackmesh"]
    step = r["steps"][-1]
    assert step["subscribers"] == 2 and step["streams_expected"] == 2 * 3 and step["join_failures"] == 0, step
    assert step["loss_worst"] < 0.10, step
    assert step["corrupted"] == 0 and step["misrouted"] == 0 and step["srtp_errors"] == 0, step
    assert r["sdk"]["attach_ok"] == 2 * 3 and r["sdk"]["attach_err"] == 0, r["sdk"]
    # With the token, /metrics (and its process collector) is read: server CPU and RSS are measured.
    assert r["rss_per_peer_kb"] is not None and step["server_cpu"] is not None and step["server_cpu"] > 0, step
    # Without the token the report says why server CPU and RSS are missing.
    assert without["metrics_status"] == 401 and without["role"] is None, without
    assert any("answered HTTP 401" in m for m in without["not_measured"]), without
    target = doc["target"]
    assert target["url"] == node.base and target["metrics_status"] == 200 and target["role"] == "standalone"
    assert node.secret not in json.dumps(doc) and metrics_token not in json.dumps(doc)
    assert "S3 capacity" in stdout and "not measured:" in stdout


def test_url_needs_the_secret_and_a_trackmesh_target(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKMESH_BENCH_SECRET", raising=False)
    assert main(["s1", "--url", "http://127.0.0.1:9"]) == 2
    assert "TRACKMESH_BENCH_SECRET" in capsys.readouterr().err
    assert main(["s1", "--url", "http://127.0.0.1:9", "--secret", "x", "--against", "both"]) == 2
    assert "--url" in capsys.readouterr().err
    assert main(["s1", "--url", "ftp://127.0.0.1:9", "--secret", "x"]) == 2
    assert "expected http://host:port" in capsys.readouterr().err
    assert main(["s1", "--url", f"http://127.0.0.1:{free_port()}", "--secret", "x"]) == 2  # nothing listens
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err


def test_server_url_parsing() -> None:
    u = ServerUrl.parse("https://media.example/trackmesh/")
    assert (u.host, u.port, u.tls, u.base_path, u.loopback_only) == ("media.example", 443, True, "/trackmesh", False)
    assert str(ServerUrl.parse("http://127.0.0.1:3000")) == "http://127.0.0.1:3000"
    assert ServerUrl.local(5).loopback_only
    for bad in ("127.0.0.1:3000", "http://", "http://h:99999", "http://h:1/?a=b"):
        with pytest.raises(ValueError):
            ServerUrl.parse(bad)


def test_process_collector_metrics_are_used_when_exposed() -> None:
    """A /metrics with prometheus_client's process collector (a real exposition server on loopback)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    Gauge("trackmesh_rooms", "rooms", registry=registry).set(2)
    parsed = parse_process_metrics(generate_latest(registry).decode())
    assert parsed["cpu_s"] > 0 and parsed["rss_bytes"] > 1 << 20 and parsed["open_fds"] > 0
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        dep = Deployment(ServerUrl.parse(f"http://127.0.0.1:{port}"), "unused")
        cpu0 = dep.tree.cpu()
        sum(i * i for i in range(300_000))  # this process is the one the collector describes
        cpu1 = dep.tree.cpu()
        rss = dep.tree.rss_kb()
        coverage = dep.coverage()
    finally:
        server.shutdown()
        thread.join(5)
    assert cpu0 is not None and cpu1 is not None and cpu1 >= cpu0 > 0
    assert rss is not None and rss > 1024
    assert any("process_cpu_seconds_total" in m for m in coverage["measured"]), coverage
    assert not any(m.startswith("server CPU") for m in coverage["not_measured"]), coverage
    assert dep.local_ip() == "127.0.0.1"
