"""bench/moq_fanout_e2e.py's ``--clients moqrs`` plumbing and bench/moq_rs_subscribers.py's counting.

No relay and no moq-rs here: the subscribers' per-frame counting and result line, the version
count read from moq-ffi's log, the first line's error form, and the ratios with unknown counters.
"""

from __future__ import annotations

import pytest

from bench import moq_fanout_e2e as e2e
from bench import moq_rs_subscribers as rs

# What run_one reads from a subscribers' result line, whichever the clients.
RESULT_KEYS = {
    "subscribed",
    "errors",
    "window",
    "received",
    "late",
    "seqs",
    "p50_ms",
    "p99_ms",
    "client_cpu_share",
    "decode_errors",
    "datagrams_in",
    "bytes_in",
    "packets_out",
    "largest_datagram",
}


def payload(seq: int, sent: float, size: int = 3_500) -> bytes:
    return e2e.STAMP.pack(seq, sent) + bytes(size - e2e.STAMP.size)


def test_the_stamp_is_the_publishers() -> None:
    assert rs.STAMP.format == e2e.STAMP.format and rs.LATE == e2e.LATE
    assert "/".join(part.decode() for part in e2e.NS) == rs.BROADCAST and e2e.TRACK.decode() == rs.TRACK


def test_a_subscriber_counts_the_frames_sent_in_its_window() -> None:
    sub = rs.Subscriber()
    sub.window = (100.0, 110.0)
    sub.frame(payload(1, 99.9), now=100.0)  # sent before the window: not counted
    sub.frame(payload(2, 100.0), now=100.05)  # on time
    sub.frame(payload(3, 105.0), now=105.3)  # late (300 ms)
    sub.frame(payload(4, 110.0), now=110.01)  # sent at the window's end: not counted
    sub.frame(b"short", now=106.0)
    assert (sub.received, sub.late, sub.seen, sub.decode_errors) == (2, 1, {2, 3}, 1)
    assert sub.latencies == pytest.approx([0.05, 0.3])


def test_the_result_line_has_the_aioquic_subscribers_keys() -> None:
    subs = [rs.Subscriber(), rs.Subscriber(), rs.Subscriber()]
    for i, sub in enumerate(subs[:2]):
        sub.window = (0.0, 10.0)
        sub.first_frame.set()
        sub.frame(payload(7, 1.0), now=1.01 + i)
    subs[2].step, subs[2].error = "announcement", "timeout (15 s)"
    out = rs.result(subs, (0.0, 10.0), cpu=2.5, counts=None)
    assert set(out) == RESULT_KEYS
    assert out["subscribed"] == 2 and out["received"] == 2 and out["late"] == 1 and out["seqs"] == [7]
    assert out["errors"] == ["announcement: timeout (15 s)"]
    assert out["client_cpu_share"] == 0.25
    assert out["p50_ms"] == 10.0 and out["p99_ms"] == 10.0  # of [10 ms, 1010 ms], index int(0.99 * 1)
    # quinn's counters unknown, and the largest datagram never known: null, and the ratios too.
    assert out["datagrams_in"] is None and out["largest_datagram"] is None
    assert e2e.ratio(out["datagrams_in"], out["received"], 2) is None
    counted = rs.result(subs, (0.0, 10.0), cpu=2.5, counts=[30, 36_000, 10])
    assert (counted["datagrams_in"], counted["bytes_in"], counted["packets_out"]) == (30, 36_000, 10)
    assert e2e.ratio(counted["datagrams_in"], counted["received"], 2) == 15.0
    assert e2e.ratio(3, 0, 2) is None


def test_without_a_frame_the_error_says_where_they_stopped() -> None:
    subs = [rs.Subscriber() for _ in range(3)]
    for sub in subs:
        sub.error = "Connect: 'timed out'"
    subs[2].step, subs[2].error = "announcement", "timeout (15 s)"
    message = rs.setup_error(subs)
    assert "2 at connect, 1 at announcement" in message
    assert "connect: Connect: 'timed out'" in message and "announcement: timeout (15 s)" in message


def test_the_first_line_is_a_window_or_an_error() -> None:
    assert e2e.window_line('{"window": [1.5, 16.5]}\n') == (1.5, 16.5)
    with pytest.raises(RuntimeError, match="no moq-rs subscriber got a frame"):
        e2e.window_line('{"error": "no moq-rs subscriber got a frame (3 at connect)"}\n')
    with pytest.raises(RuntimeError, match="ended before its window"):
        e2e.window_line("")


def test_the_versions_come_from_moq_ffis_log() -> None:
    esc = "\x1b"
    line = (
        f"{esc}[2m2026-12-08T00:09:57Z{esc}[0m {esc}[32m INFO{esc}[0m {esc}[2mmoq_tokio::client{esc}[0m"
        f"{esc}[2m:{esc}[0m connected {esc}[3mversion{esc}[0m{esc}[2m={esc}[0m{{}}\n"
    )
    debug = "2026-12-08T00:10:10Z DEBUG moq_net::client: connected version=Ietf(Draft16)\n"
    log = line.format("moq-transport-16") * 2 + debug + line.format("moq-lite-06") + "  subscribers: 3 connected\n"
    assert e2e.negotiated_versions(log) == {"moq-transport-16": 2, "moq-lite-06": 1}
    assert e2e.negotiated_versions("") == {}


def test_the_subscribers_command() -> None:
    cmd = e2e.subscribers_command("moqrs", 4443, 100, 15.0)
    assert cmd[:3] == ["taskset", "-c", "0"]
    assert cmd[3:] == [str(e2e.MOQ_PYTHON), str(e2e.MOQRS_SUBSCRIBERS), "moqt://127.0.0.1:4443", "100", "15.0"]
    assert e2e.MOQRS_SUBSCRIBERS.name == "moq_rs_subscribers.py" and e2e.MOQRS_SUBSCRIBERS.exists()
    assert e2e.subscribers_command("aioquic", 4443, 100, 15.0)[-4:] == ["_subs", "4443", "100", "15.0"]
    with pytest.raises(ValueError):
        e2e.subscribers_command("quiche", 4443, 100, 15.0)
