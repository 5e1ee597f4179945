"""Very short soak and chaos runs: the tools produce sane reports with real measured values.

Both run ``python -m trackmesh.loadtest.cli soak|chaos`` as a subprocess, which re-executes itself in a fresh
private network namespace (loopback only) like every ``trackmesh-bench`` run. The figures that matter
(30 minutes, 5 minutes) are benchmarks in docs/benchmarks.md, never timed assertions here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(150)


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    cmd = ["unshare", "-n", "true"] if os.geteuid() == 0 else ["unshare", "-r", "-n", "true"]
    return subprocess.run(cmd, capture_output=True).returncode == 0


needs_netns = pytest.mark.skipif(not _can_unshare(), reason="needs unshare -n (root or user namespaces) and iproute2")


def _run(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "trackmesh.loadtest.cli", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@needs_netns
def test_short_soak_reports_drift_delivery_and_loop_lag(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    doc, stdout = _run(tmp_path, "soak", "--minutes", "0.25", "--viewers", "3", "--sample-every", "5",
                       "--churn-life", "2", "--warmup", "5", "--cores", str(cores[0]))
    assert doc["scenario"] == "soak" and doc["environment"]["netns"].startswith("lo")
    r = doc["result"]
    assert r["steady_joined"] == 3
    samples = r["samples"]
    assert len(samples) == 3
    for s in samples:
        assert s["rss_kb"] > 10_000 and s["fds"] > 3 and s["threads"] >= 1
        assert 0 < s["server_cpu"] < 2
        assert s["health_ms"]["n"] > 0 and s["health_ms"]["p50"] > 0
        # The node's own gauge (worker timer lateness) was scraped from /metrics.
        assert s["loop_lag_max_ms"] is not None and s["loop_lag_max_ms"] >= 0
        assert s["endpoints"] is not None and s["endpoints"] >= 4  # publisher + 3 steady viewers at least
    # Real media, matched by payload hash: > 90 % of what the publisher sent reached every steady viewer.
    assert r["expected"] > 3 * 100 * 10  # ~165 packets/s for ~15 s, three viewers
    assert r["delivered"] / r["expected"] > 0.9
    assert all(d > 0.9 for d in r["delivery_per_viewer"])
    churn = r["churn"]
    assert churn["joins"] >= 8 and churn["join_failures"] <= 1
    assert churn["leaves_delete"] >= 2 and churn["leaves_silent"] >= 2 and churn["delete_errors"] == 0
    assert r["churn_join_ms"]["p50"] is not None and r["churn_join_ms"]["p50"] > 0
    s = r["summary"]
    assert s["samples_after_warmup"] == 3  # at 5, 10 and 15 s: the warm-up ends with the first
    assert s["rss_mb_first_after_warmup"] > 10
    assert set(s["verdicts"]) == {"rss_flat_within_5pct", "no_fd_growth", "delivery_at_least_99_9pct",
                                  "churn_joins_all_ok"}
    assert r["server_exit_code"] == 0
    assert "RSS" in stdout and "delivery" in stdout and "JSON:" in stdout


@needs_netns
def test_short_chaos_kills_a_media_node_and_measures_recovery(tmp_path: Path) -> None:
    doc, stdout = _run(tmp_path, "chaos", "--minutes", "0.25", "--every", "15", "--whep", "2", "--sdk", "1")
    r = doc["result"]
    assert len(r["kills"]) == 1
    kill = r["kills"][0]
    assert kill["role"] == "media"
    assert kill["sessions_before"] >= 1  # the busiest media node was chosen
    rec = kill["recovery_s"]
    assert set(rec) == {"chaos-publisher", "whep1", "whep2", "sdk1"}
    # Every client had media again before the run ended, and the killed node's clients had an outage.
    assert all(v is not None for v in rec.values()), rec
    assert max(v for v in rec.values() if v is not None) > 0.3, rec
    assert kill["processes_gone_after_s"] is not None and kill["left_behind"] == []
    assert kill["restarted_ready_s"] is not None and kill["restarted_ready_s"] > 0
    viewers = {n: c for n, c in r["clients"].items() if c["kind"] != "whip"}
    assert all(c["media_packets"] > 100 for c in viewers.values()), r["clients"]  # matched media packets
    assert r["clients"]["chaos-publisher"]["media_packets"] > 5  # the publisher counts the server's answers
    # Everyone left: no session, room, registry entry or channel on any node; the gateways see both nodes.
    assert r["cleanup"]["clean"], r["cleanup"]
    assert r["verdicts"]["no_stuck_registry_entries"] and r["verdicts"]["no_process_left_behind"]
    assert r["processes"]["left_behind"] == [] and r["processes"]["processes_started"] >= 5
    assert "kill  1" in stdout and "no process left behind" in stdout
