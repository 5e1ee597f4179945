"""One room on every core of a standalone node (``trackmesh standalone --workers 2 --room-spread 1``,
docs/cluster.md "One room on every core"): one WHIP publisher, WHEP viewers on both workers, the
room's tracks crossing the link between the workers once per packet. aiortc clients, a real node,
loopback netns.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.promtool import PROMTOOL, promtool_problems, sample

from .conftest import TrackmeshNode
from .test_cluster import client, result
from .test_workers import worker_of

pytestmark = pytest.mark.e2e

VIEWERS = 4


@pytest.fixture(scope="module")
def spread_node(netns_guard: None) -> Iterator[TrackmeshNode]:
    pytest.importorskip("aiortc", reason="pip package aiortc is not installed")
    node = TrackmeshNode("--workers", "2", "--room-spread", "1")
    try:
        yield node
    finally:
        assert node.stop() == 0, node.log_tail()
        assert "Traceback" not in "\n".join(node.lines), node.log_tail(200)


def _workers(node: TrackmeshNode) -> list[dict[str, Any]]:
    return [{**w["spread"], **w["counters"], "endpoints": w["endpoints"]} for w in node.info()["workers"]]


def _metrics(node: TrackmeshNode) -> str:
    with urllib.request.urlopen(node.url("/metrics"), timeout=10) as resp:
        return str(resp.read().decode())


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_rooms_viewers_spread_over_both_workers_and_each_packet_crosses_once(spread_node: TrackmeshNode) -> None:
    from trackmesh.core.ids import ConnIdCodec

    node = spread_node
    room = "spread-sa"
    home, other = worker_of(room, 2), 1 - worker_of(room, 2)
    pub = client("whip", node.url("/whip/endpoint"), node.token("whip", room, "alice"), "--duration", "10")
    _until(lambda: _workers(node)[home]["endpoints"] == 1, 20, "the publisher's session")
    # Four viewers at once: the routing counts each viewer it places (and the publisher from the
    # workers' next report), so from the room's first counted session on they alternate between the
    # workers, whether or not the publisher was counted yet.
    viewers = [
        client("whep", node.url("/whep/endpoint"), node.token("whep", room), "--duration", "6", "--min-frames", "30")
        for _ in range(VIEWERS)
    ]
    # The window starts once the viewers are connected (ICE and DTLS up) and had a second for their
    # first key frame (asked for across workers by the other worker's viewers).
    _until(lambda: sample(_metrics(node), "trackmesh_join_connected_total", transport="whep") >= VIEWERS, 25,
           "the viewers to connect")  # fmt: skip
    time.sleep(1.0)
    before = _workers(node)
    time.sleep(2.0)
    after = _workers(node)
    text = _metrics(node)
    results = [result(v) for v in viewers]
    r_pub = result(pub)
    assert all(r["rc"] == 0 and r["frames"] >= 30 for r in results), results
    assert r_pub["rc"] == 0 and r_pub["delete_status"] == 200, r_pub
    codec = ConnIdCodec(node.secret)
    placed = [codec.decode(r["location"].rsplit("/", 1)[1]).worker for r in results]
    assert codec.decode(r_pub["location"].rsplit("/", 1)[1]).worker == home
    assert set(placed) == {0, 1}, placed
    n_other = placed.count(other)
    a0, a1, b0, b1 = before[home], after[home], before[other], after[other]
    # The home worker sends the track's channels (video + audio) to the other worker once; the other
    # receives them once for all its viewers: every packet crosses once, not once per viewer ...
    assert a1["channels_exported"] == 2 and b1["channels_imported"] == 2, (a1, b1)
    out = a1["packets_out"] - a0["packets_out"]
    got = b1["packets_in"] - b0["packets_in"]
    assert out > 100 and abs(got - out) <= max(10, out // 20), (out, got)
    # ... and the other worker sends each on to each of its viewers.
    sent = b1["udp_tx"] - b0["udp_tx"]
    assert sent > (n_other - 0.5) * got, (sent, got, placed)
    # Key-frame requests of the other worker's viewers reached the publisher's worker; nothing goes back.
    assert a1["feedback_in"] >= 1 and b1["feedback_out"] >= 1, (a1, b1)
    assert a1["packets_in"] == 0 and b1["packets_out"] == 0, (a1, b1)
    assert a1["bad_items"] == b1["bad_items"] == 0 and a1["errors"] == b1["errors"] == 0, (a1, b1)
    assert sample(text, "trackmesh_spread_viewers_total") == n_other
    # The spread's families pass promtool and are in docs/observability.md.
    if PROMTOOL is not None:
        assert promtool_problems(text) == "", promtool_problems(text)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    families = set(re.findall(r"^# TYPE (trackmesh_spread_\S+) ", text, re.M))
    assert len(families) >= 8 and all(f"`{f}`" in doc for f in families), families
    assert sample(text, "trackmesh_spread_packets_sent_total", worker=str(home)) >= a1["packets_out"]
    print(f"\nstandalone spread: worker {home} sent {out} packets in 2 s to worker {other}, which received {got} "
          f"and sent {sent} datagrams to its {n_other} viewers; key-frame requests across: {a1['feedback_in']}; "
          f"link messages {a1['link_messages_out'] - a0['link_messages_out']}, dropped {a1['packets_dropped']}")
