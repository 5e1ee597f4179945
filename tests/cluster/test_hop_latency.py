"""The cluster hop histogram (cluster/hop_latency.py) on a virtual clock, and across two real zenoh
sessions whose hubs stamp with virtual clocks (so the observed hop is exactly what the test sets)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.cluster.hop_latency import HOP_BUCKETS_US, STAMP_MASK, HopLatency, stamp_of
from trackmesh.cluster.zenoh_channels import ZenohChannelHub

from .conftest import Pump, wait_for
from .test_zenoh_channels import CH, Pub, Sub, linked, pkt


def bucket(hist: HopLatency, seconds: float) -> int:
    """Samples in the bucket whose upper bound is ``seconds``."""
    return hist.counts[hist.bounds.index(round(seconds * 1_000_000))]


def test_hops_land_in_their_le_buckets_on_a_virtual_clock() -> None:
    hop = HopLatency()
    sent = 1000.0  # seconds on the virtual wall clock
    for delay in (0.00005, 0.0001, 0.0003, 0.0003, 0.004, 2.0):
        hop.observe(stamp_of(sent), stamp_of(sent + delay))
    assert bucket(hop, 0.0001) == 2  # 50 us, and 100 us exactly (le: less than or equal)
    assert bucket(hop, 0.0005) == 2 and bucket(hop, 0.005) == 1
    assert hop.counts[-1] == 1  # 2 s: above the last bound (1 s), +Inf
    assert hop.count == 6 and hop.behind == 0
    d = hop.to_dict()
    assert d["bounds"][0] == 0.0001 and d["bounds"][-1] == 1.0
    assert d["sum"] == pytest.approx(2.00475, abs=1e-5)


def test_the_stamp_wraps_every_71_minutes_and_the_hop_still_measures() -> None:
    hop = HopLatency()
    wrap = (STAMP_MASK + 1) / 1_000_000  # 4294.967296 s
    sent = wrap - 0.0002  # 200 us before the wrap
    assert stamp_of(sent) > stamp_of(sent + 0.001)  # the arrival stamp wrapped to a small number
    hop.observe(stamp_of(sent), stamp_of(sent + 0.001))
    assert bucket(hop, 0.001) == 1 and hop.sum_us == pytest.approx(1000, abs=1)


def test_a_receiver_clock_behind_the_sender_is_counted_not_observed() -> None:
    hop = HopLatency()
    hop.observe(stamp_of(50.0), stamp_of(49.997))  # receiver's clock 3 ms behind, more than the hop
    assert hop.behind == 1 and hop.count == 0 and hop.sum_us == 0


@given(st.integers(0, STAMP_MASK), st.integers(0, (1 << 31) - 1))
def test_any_forward_difference_is_one_sample_in_the_right_bucket(send: int, delta: int) -> None:
    hop = HopLatency()
    hop.observe(send, (send + delta) & STAMP_MASK)
    assert hop.count == 1 and hop.behind == 0 and hop.sum_us == delta
    i = hop.counts.index(1)
    assert (i == len(HOP_BUCKETS_US) or delta <= HOP_BUCKETS_US[i]) and (i == 0 or delta > HOP_BUCKETS_US[i - 1])


class VirtualWall:
    """A stamp clock the test moves by hand (``ZenohChannelHub(stamp_clock=...)``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self) -> int:
        return stamp_of(self.seconds)


def test_packets_between_two_hubs_observe_the_hop_of_their_stamp_clocks(nodes) -> None:  # type: ignore[no-untyped-def]
    a = nodes()
    b = nodes(seeds=a.config.listen)
    c = nodes(seeds=[*a.config.listen, *b.config.listen])
    linked(a, b, c)
    wall_a, wall_b = VirtualWall(100.0), VirtualWall(100.003)  # B stamps arrivals 3 ms after A's sends
    pa, pb = Pump(), Pump()
    ha = ZenohChannelHub(a.session, pa, time.monotonic, stamp_clock=wall_a)
    hb = ZenohChannelHub(b.session, pb, time.monotonic, stamp_clock=wall_b)
    # A third hub sending version 1 (a node not upgraded yet): decoded, delivered, not observed.
    hc = ZenohChannelHub(c.session, Pump(), time.monotonic, stamp_clock=wall_a, media_version=1)
    try:
        handle = ha.start_publish(0.0, CH, Pub())
        viewer = Sub()
        hb.subscribe(0.0, CH, viewer)
        pb.until(lambda: viewer.live == [True], 15)
        wait_for(lambda: ha._exports[CH].interest)
        for seq in range(20):
            handle.send(pkt(seq))
        pb.until(lambda: len(viewer.pkts) == 20, 15)
        assert bucket(hb.hop, 0.005) == 20 and hb.hop.count == 20  # 3 ms: the 2.5-5 ms bucket
        assert hb.hop.sum_us == 20 * 3000
        assert ha.hop.count == 0  # the sender observes nothing
        hist = hb.hop_stats()
        assert hist["counts"][hist["bounds"].index(0.005)] == 20 and hist["behind"] == 0
        # The publisher moves to C (version 1, no stamp): its packets still reach B's viewer.
        handle.stop(1.0)
        pb.until(lambda: viewer.live == [True, False], 15)
        handle_c = hc.start_publish(2.0, CH, Pub())
        pb.until(lambda: viewer.live[-1] is True, 15)
        wait_for(lambda: hc._exports[CH].interest)
        for seq in range(100, 110):
            handle_c.send(pkt(seq))
        pb.until(lambda: len(viewer.pkts) == 30, 15)
        assert hb.bad_packets == 0 and hb.hop.count == 20
    finally:
        ha.close()
        hb.close()
        hc.close()
