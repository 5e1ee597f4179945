"""The soak and chaos runs' arithmetic, on made-up inputs: loop lag, /metrics parsing, drift, recovery."""

from __future__ import annotations

from typing import Any

from trackmesh.loadtest.chaos import recovery_after
from trackmesh.loadtest.probes import parse_metrics, percentile
from trackmesh.loadtest.soak import summarize
from trackmesh.runtime.loop import LoopLag


def test_loop_lag_keeps_the_worst_of_the_last_one_to_two_windows() -> None:
    lag = LoopLag(window=10.0)
    lag.record(0.0, 0.002)
    lag.record(1.0, 0.050)
    lag.record(2.0, -0.001)  # fired early (clock quantization): counts as 0
    assert lag.recent_max(3.0) == 0.050
    lag.record(12.0, 0.001)  # new window: the previous one's worst is still reported
    assert lag.recent_max(12.0) == 0.050
    lag.record(23.0, 0.003)  # two windows on: the 50 ms are forgotten
    assert lag.recent_max(23.0) == 0.003
    assert lag.recent_max(60.0) == 0.0  # nothing fired for long: no lag to report
    st = lag.stats(60.0)
    assert st["timer_fires"] == 5
    assert abs(float(st["late_total_s"]) - 0.056) < 1e-9


def test_parse_metrics_reads_labels_and_skips_comments() -> None:
    text = (
        "# HELP trackmesh_loop_lag_seconds x\n# TYPE trackmesh_loop_lag_seconds gauge\n"
        'trackmesh_loop_lag_seconds{worker="0"} 0.0125\ntrackmesh_loop_lag_seconds{worker="1"} 0.5\n'
        "trackmesh_udp_rx_total 17.0\nnot a metric line\n"
    )
    m = parse_metrics(text)
    assert m["trackmesh_loop_lag_seconds"] == [({"worker": "0"}, 0.0125), ({"worker": "1"}, 0.5)]
    assert m["trackmesh_udp_rx_total"] == [({}, 17.0)]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 99) is None


def _sample(t: float, rss: int, fds: int, delivery: float = 1.0) -> dict[str, Any]:
    return {"t_s": t, "rss_kb": rss, "fds": fds, "delivery_worst_viewer": delivery, "freeze_max_s": 0.1,
            "loop_lag_max_ms": 2.0, "health_ms": {"p50": 1.0, "max": 3.0}, "endpoints": 30, "server_cpu": 0.3,
            "generator_cpu": 0.4, "foreign_cores": 0.2}


def _result(samples: list[dict[str, Any]], delivered: int, expected: int) -> dict[str, Any]:
    return {"samples": samples, "config": {"warmup_s": 20.0}, "delivered": delivered, "expected": expected,
            "delivery_per_viewer": [delivered / expected], "churn": {"join_failures": 0, "joins": 9,
                                                                       "leaves_delete": 4, "leaves_silent": 4}}


def test_summarize_judges_drift_after_the_warm_up_only() -> None:
    # Growth during the warm-up (t < 20 s) does not count; afterwards RSS stays within 1 %.
    flat = [_sample(10, 50_000, 12), _sample(20, 100_000, 14), _sample(30, 100_500, 14), _sample(40, 100_800, 15),
            _sample(50, 100_200, 14)]
    s = summarize(_result(flat, 99_950, 100_000))
    assert s["samples_after_warmup"] == 4
    assert s["rss_max_deviation_pct"] == 0.8
    assert s["fd_growth"] == 0
    assert s["delivery_pct"] == 99.95
    assert s["verdicts"] == {"rss_flat_within_5pct": True, "no_fd_growth": True, "delivery_at_least_99_9pct": True,
                             "churn_joins_all_ok": True}
    # A leak: +12 % after the warm-up, fds climbing, delivery short of 99.9 %.
    leak = [_sample(20, 100_000, 14), _sample(30, 104_000, 20), _sample(40, 108_000, 26), _sample(50, 112_000, 32)]
    s = summarize(_result(leak, 99_800, 100_000))
    assert s["rss_drift_pct"] > 5 and s["rss_slope_mb_per_h"] is not None and s["rss_slope_mb_per_h"] > 0
    assert s["verdicts"]["rss_flat_within_5pct"] is False
    assert s["verdicts"]["no_fd_growth"] is False
    assert s["verdicts"]["delivery_at_least_99_9pct"] is False


def test_recovery_is_the_end_of_the_last_outage_after_the_kill() -> None:
    steady = [i * 0.02 for i in range(500)]  # 50 packets/s for 10 s
    assert recovery_after(steady, 5.0, 10.0) == 0.0  # never stopped
    # Silent from 5.0 to 6.2, one packet, silent again until 7.5 (a reconnect to a room without publisher yet).
    out = [t for t in steady if t < 5.0] + [6.2] + [7.5 + i * 0.02 for i in range(100)]
    r = recovery_after(out, 5.01, 10.0)
    assert r is not None and abs(r - (7.5 - 5.01)) < 1e-9
    assert recovery_after([t for t in steady if t < 5.0], 5.01, 10.0) is None  # never came back
    # An outage that began before the kill (more than a gap earlier) is not this kill's.
    early = [t for t in steady if t < 3.0] + [t for t in steady if t >= 4.0]
    assert recovery_after(early, 5.0, 10.0) == 0.0
