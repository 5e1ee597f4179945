"""The media metrics' pure parts: bounded close reasons, histograms, merging the workers' snapshots."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.http.metrics import merge_snapshots
from trackmesh.runtime.console_rpc import KICK_REASON, ROOM_ENDED_REASON
from trackmesh.runtime.media_metrics import CLOSE_REASONS, JOIN_BUCKETS, Histogram, MediaMetrics, close_reason_label


def test_close_reasons_map_to_a_fixed_set() -> None:
    cases = {
        "connect timeout: not connected within 10 s (no ICE nomination)": "connect_timeout",
        "ice: consent expired": "ice",
        "dtls failed: bad certificate": "dtls",
        "dtls closed": "dtls",
        KICK_REASON: "kicked",
        ROOM_ENDED_REASON: "kicked",
        "node stopping": "node_stopping",
        "setup failed": "setup",
        "deleted by the client": "client",
        "whatever else": "other",
    }
    for reason, label in cases.items():
        assert close_reason_label(reason) == label, reason


@given(st.text(max_size=200))
def test_any_reason_gets_a_known_label(reason: str) -> None:
    assert close_reason_label(reason) in CLOSE_REASONS


def test_histogram_buckets_are_upper_bounds() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.counts == [2, 2, 1] and abs(h.sum - 8.65) < 1e-9


def test_merge_adds_workers_up_and_a_fresh_worker_has_every_join_histogram() -> None:
    m = MediaMetrics()
    m.on_requested("whip")
    m.on_connected("whip", 0.3)
    m.on_first_media("whip", 0.4)
    m.on_no_media("whep")
    m.on_requested("whep")
    m.on_failed("whep", "connect timeout: not connected within 10 s")
    snap = m.snapshot()
    assert set(snap["join_seconds"]) == set(snap["first_media_seconds"]) == {"whip", "whep", "sdk"}
    merged = merge_snapshots([snap, snap])
    assert merged["requested"] == {"whip": 2, "whep": 2}
    assert merged["connected"] == {"whip": 2}
    assert merged["failed"] == {("whep", "connect_timeout"): 2}
    assert merged["first_media_missing"] == {"whep": 2}
    first = merged["first_media_seconds"]["whip"]
    assert sum(first["counts"]) == 2 and abs(first["sum"] - 0.8) < 1e-9
    assert sum(merged["first_media_seconds"]["sdk"]["counts"]) == 0
    whip = merged["join_seconds"]["whip"]
    assert sum(whip["counts"]) == 2 and whip["bounds"] == list(JOIN_BUCKETS) and abs(whip["sum"] - 0.6) < 1e-9
    # A worker of another version (other buckets) is never mixed in.
    odd = {"join_seconds": {"whip": {"bounds": [1.0], "counts": [1, 0], "sum": 0.5}}}
    assert sum(merge_snapshots([snap, odd])["join_seconds"]["whip"]["counts"]) == 1
