from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.rtp.rtcp import TransportCcFeedback, build_transport_cc, parse_rtcp
from trackmesh.rtp.twcc import BandwidthEstimator, PacketResult, TwccRecorder, TwccSendHistory


def _feedbacks(packets: list[bytes]) -> list[TransportCcFeedback]:
    out = []
    for p in packets:
        for fb in parse_rtcp(p):
            assert isinstance(fb, TransportCcFeedback)
            out.append(fb)
    return out


def test_recorder_reports_arrivals_and_losses() -> None:
    rec = TwccRecorder(1, 2, interval=0.05)
    rec.record(65534, 10.0)
    rec.record(0, 10.010)  # 65535 lost, wraps
    rec.record(1, 10.0105)
    assert rec.handle_timeout(10.01) == []  # not due yet
    assert rec.next_timeout() == pytest.approx(10.05)
    (fb,) = _feedbacks(rec.handle_timeout(10.05))
    assert fb.base_seq == 65534 and fb.fb_pkt_count == 0
    assert fb.statuses == [1, 0, 1, 1]
    got = fb.packets()
    assert [s for s, _ in got] == [65534, 65535, 0, 1]
    arrivals = [a for _, a in got if a is not None]
    # Arrivals are reproduced to the 250 us resolution, relative to one another.
    assert arrivals[1] - arrivals[0] == pytest.approx(0.010, abs=0.00025)
    assert arrivals[2] - arrivals[1] == pytest.approx(0.0005, abs=0.00025)
    # Next feedback continues after the highest reported; a late packet is dropped.
    rec.record(65535, 10.06)
    rec.record(3, 10.07)
    (fb2,) = _feedbacks(rec.handle_timeout(10.2))
    assert rec.late == 1
    assert (fb2.base_seq, fb2.statuses, fb2.fb_pkt_count) == (2, [0, 1], 1)
    assert rec.handle_timeout(11.0) == []


def test_recorder_names_the_latest_media_ssrc() -> None:
    # Chrome hands feedback to its estimator only if the media source SSRC is one it sends
    # on; 0 (unused per the draft) makes it ignore every report and collapse its estimate.
    rec = TwccRecorder(1, interval=0.0)
    rec.record(1, 1.0, 0xAAAA)
    rec.record(2, 1.001, 0xBBBB)
    (fb,) = _feedbacks(rec.handle_timeout(1.01))
    assert fb.media_ssrc == 0xBBBB
    rec.record(3, 1.02)  # no SSRC given: keep the last one
    (fb,) = _feedbacks(rec.handle_timeout(1.03))
    assert fb.media_ssrc == 0xBBBB


def test_recorder_splits_on_large_gap_in_time() -> None:
    rec = TwccRecorder(1, interval=0.05)
    rec.record(10, 0.0)
    rec.record(11, 9.0)  # 9 s later: beyond a signed 16-bit delta of 250 us ticks (8.19 s)
    fbs = _feedbacks(rec.handle_timeout(10.0))
    assert [fb.base_seq for fb in fbs] == [10, 11]
    assert [fb.fb_pkt_count for fb in fbs] == [0, 1]


def test_recorder_reordered_arrivals_use_negative_delta() -> None:
    rec = TwccRecorder(1, interval=0.0)
    rec.record(5, 1.000)
    rec.record(4, 1.010)  # overtaken by 5; not late since nothing was reported yet
    (fb,) = _feedbacks(rec.handle_timeout(1.02))
    assert fb.base_seq == 4
    assert fb.statuses[1] == 2  # negative delta needs the large symbol
    (a4, a5) = [a for _, a in fb.packets()]
    assert a4 is not None and a5 is not None and a5 - a4 == pytest.approx(-0.010)


def test_recorder_caps_statuses_per_packet() -> None:
    rec = TwccRecorder(1, interval=0.0, max_statuses=100)
    for i in range(250):
        rec.record(i, i * 0.001)
    fbs = _feedbacks(rec.handle_timeout(1.0))
    assert [len(fb.statuses) for fb in fbs] == [100, 100, 50]
    assert [fb.base_seq for fb in fbs] == [0, 100, 200]


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 0.02)), min_size=1, max_size=200))
def test_recorder_history_roundtrip(steps: list[tuple[int, float]]) -> None:
    """Every recorded arrival is recovered by the sender side to within one tick."""
    rec = TwccRecorder(1, interval=0.05)
    hist = TwccSendHistory()
    now = 100.0
    seq = 65000
    sent: dict[int, float] = {}
    for gap, dt in steps:
        for _ in range(gap):
            hist.on_sent(seq & 0xFFFF, 100, now)  # sent but lost
            seq += 1
        hist.on_sent(seq & 0xFFFF, 100, now)
        now += dt
        rec.record(seq & 0xFFFF, now)
        sent[seq] = now
        seq += 1
    results: list[PacketResult] = []
    for fb in _feedbacks(rec.handle_timeout(now + 1.0)):
        results += hist.on_feedback(fb)
    got = {r.seq - 65536: r.arrival for r in results if r.arrival is not None}
    assert set(got) == set(sent)
    first = min(sent)
    a0 = got[first]
    assert a0 is not None
    for s, t in sent.items():
        a = got[s]
        assert a is not None
        assert a - a0 == pytest.approx(t - sent[first], abs=0.0006)


def test_send_history_reports_once_and_unknown() -> None:
    hist = TwccSendHistory(size=16)
    for s in range(5):
        hist.on_sent(s, 1000 + s, s * 0.01)
    fb_bytes = build_transport_cc(1, 2, 0, 0, 0, [1, 0, 1], [4, 8])
    (fb,) = parse_rtcp(fb_bytes)
    assert isinstance(fb, TransportCcFeedback)
    res = hist.on_feedback(fb)
    assert [(r.seq - 65536, r.size, r.arrival is None) for r in res] == [
        (0, 1000, False), (1, 1001, True), (2, 1002, False),
    ]
    assert res[2].arrival == pytest.approx(0.003)
    assert hist.on_feedback(fb) == []  # already reported
    (fb_old,) = parse_rtcp(build_transport_cc(1, 2, 60000, 0, 1, [1], [0]))
    assert isinstance(fb_old, TransportCcFeedback)
    assert hist.on_feedback(fb_old) == [] and hist.unknown == 1


def _simulate(
    estimator: BandwidthEstimator, phases: list[tuple[float, float]], *, buffer_s: float = 0.3
) -> list[tuple[float, float]]:
    """Drive sender -> bottleneck -> receiver -> feedback on a 1 ms virtual clock.

    ``phases`` is a list of (end time, bottleneck bps). The sender paces 1200-byte packets at
    the current estimate; the link is FIFO with a drop-tail buffer of ``buffer_s`` seconds at
    the current capacity, 20 ms one-way propagation each way. Returns (time, estimate) samples.
    """
    size = 1200
    prop = 0.020
    hist = TwccSendHistory()
    rec = TwccRecorder(1, 2, interval=0.05)
    in_flight: list[tuple[float, int]] = []  # (arrival at receiver, seq) in FIFO order
    feedback: list[tuple[float, bytes]] = []
    link_free = 0.0
    next_send = 0.0
    seq = 65000  # wraps during the run
    samples = []
    t = 0.0
    end = phases[-1][0]
    step = 0.001
    tick = 0
    while t < end:
        capacity = next(c for until, c in phases if t < until)
        while next_send <= t:
            hist.on_sent(seq & 0xFFFF, size, next_send)
            start = max(next_send, link_free)
            if start - next_send <= buffer_s:
                link_free = start + size * 8 / capacity
                in_flight.append((link_free + prop, seq & 0xFFFF))
            seq += 1
            next_send += size * 8 / estimator.estimate
        while in_flight and in_flight[0][0] <= t:
            arrival, s = in_flight.pop(0)
            rec.record(s, arrival)
        for pkt in rec.handle_timeout(t):
            feedback.append((t + prop, pkt))
        while feedback and feedback[0][0] <= t:
            _, pkt = feedback.pop(0)
            for fb in parse_rtcp(pkt):
                assert isinstance(fb, TransportCcFeedback)
                estimator.on_feedback(hist.on_feedback(fb), t)
        tick += 1
        t = tick * step
        if tick % 100 == 0:
            samples.append((t, estimator.estimate))
    return samples


def _at(samples: list[tuple[float, float]], when: float) -> float:
    return min(samples, key=lambda s: abs(s[0] - when))[1]


def _mean(samples: list[tuple[float, float]], start: float, stop: float) -> float:
    values = [e for t, e in samples if start <= t < stop]
    return sum(values) / len(values)


def test_converges_down_to_bottleneck_and_recovers() -> None:
    est = BandwidthEstimator(1_000_000)
    samples = _simulate(est, [(20.0, 500_000.0), (35.0, 2_000_000.0)])
    assert 350_000 <= _at(samples, 10.0) <= 650_000
    assert 350_000 <= _mean(samples, 5.0, 20.0) <= 650_000
    # Limit lifted at 20 s: the estimate climbs (8%/s compounding) well past the old limit.
    assert _at(samples, 35.0) > 900_000
    assert _at(samples, 35.0) > 1.6 * _at(samples, 20.0)


def test_converges_up_to_bottleneck() -> None:
    est = BandwidthEstimator(200_000)
    samples = _simulate(est, [(20.0, 500_000.0)])
    assert 350_000 <= _mean(samples, 15.0, 20.0) <= 650_000
    assert est.queue_delay < 0.15


def test_heavy_loss_decreases_immediately() -> None:
    est = BandwidthEstimator(1_000_000)
    results = [PacketResult(i, i * 0.001, None if i % 3 == 0 else 0.05 + i * 0.001, 1200) for i in range(300)]
    est.on_feedback(results, 1.0)
    assert est.loss == pytest.approx(1 / 3, abs=0.01)
    assert est.estimate < 0.9 * 1_000_000


def test_clean_feedback_increases_eight_percent_per_second() -> None:
    est = BandwidthEstimator(1_000_000)
    now = 0.0
    seq = 0
    for _ in range(20):  # 1 s of 50 ms feedbacks, ~0.96 Mbps offered and delivered, no queue
        results = []
        for _ in range(5):
            results.append(PacketResult(seq, seq * 0.01, seq * 0.01 + 0.03, 1200))
            seq += 1
        now += 0.05
        est.on_feedback(results, now)
    assert est.estimate == pytest.approx(1_000_000 * 1.08 ** (now - 0.05), rel=0.01)


def _feed(
    est: BandwidthEstimator, start: float, stop: float, bps: float, *, queue: float = 0.0, growth: float = 0.0
) -> float:
    """50 ms feedbacks for 1200-byte packets sent at ``bps`` from ``start`` to ``stop``; the
    one-way delay is 20 ms + ``queue`` + ``growth`` s per s since ``start``. Returns stop."""
    interval = 1200 * 8 / bps
    t = start
    seq = int(start * 10_000)
    sent = start
    while t < stop - 1e-9:
        t = round(t + 0.05, 6)
        results = []
        while sent + interval <= t:
            sent += interval
            delay = 0.02 + queue + growth * (sent - start)
            results.append(PacketResult(seq, sent, sent + delay, 1200))
            seq += 1
        est.on_feedback(results, t)
    return t


def test_application_limited_estimate_is_capped_until_a_probe_lifts_it() -> None:
    est = BandwidthEstimator(300_000)
    now = _feed(est, 0.0, 1.0, 150_000)
    assert est.estimate == pytest.approx(1.5 * 150_000, rel=0.1)
    # Not stable long enough yet (2 s of clean feedback are needed).
    assert not est.probe(600_000, now) and est.estimate < 300_000
    now = _feed(est, now, 3.0, 150_000)
    assert est.probe(600_000, now) and est.estimate == 600_000 and est.probing
    assert not est.probe(900_000, now)  # one probe at a time
    # The cap is held at the probe's rate while the higher rate starts...
    now = _feed(est, now, now + 1.0, 150_000)
    assert est.estimate >= 600_000
    # ...and the estimate follows what is delivered: here the sender moved up.
    now = _feed(est, now, now + 3.5, 550_000)
    assert not est.probing and est.estimate >= 600_000 and est.probes_failed == 0
    # After a successful probe the next step may be tried at once.
    assert est.probe(2_000_000, now)


def test_a_probe_that_never_gets_used_falls_back_to_the_delivered_rate() -> None:
    est = BandwidthEstimator(300_000)
    now = _feed(est, 0.0, 3.0, 150_000)
    assert est.probe(600_000, now)
    now = _feed(est, now, now + 4.0, 150_000)
    assert not est.probing
    assert est.estimate == pytest.approx(1.5 * 150_000, rel=0.1)


def test_a_failed_probe_falls_back_quickly_and_backs_off() -> None:
    est = BandwidthEstimator(300_000)
    now = _feed(est, 0.0, 3.0, 150_000)
    assert est.probe(600_000, now)
    # The higher rate builds a queue (60 ms/s growth): the estimate is cut within ~0.5 s.
    start = now
    now = _feed(est, now, now + 0.5, 550_000, growth=0.06)
    assert est.estimate < 0.9 * 550_000 and not est.probing and est.probes_failed == 1
    # Clean again at the old rate: no new probe before the 4 s backoff ends...
    now = _feed(est, now, start + 3.5, 150_000, queue=0.0)
    assert not est.probe(600_000, now)
    now = _feed(est, now, start + 4.6, 150_000)
    assert est.probe(600_000, now)
    # ...and a second failure doubles the wait.
    failed_at = now
    now = _feed(est, now, now + 0.5, 550_000, growth=0.06)
    assert est.probes_failed == 2
    now = _feed(est, now, failed_at + 7.5, 150_000)
    assert not est.probe(600_000, now)
    now = _feed(est, now, failed_at + 8.6, 150_000)
    assert est.probe(600_000, now)


def test_clean_estimate_never_stays_below_the_delivered_rate() -> None:
    est = BandwidthEstimator(300_000)
    now = _feed(est, 0.0, 1.0, 20_000)
    assert est.estimate == est.min_bitrate  # 1.5 x 20 kbps is under the floor
    # The sender moves up (a higher layer) on a clean path: the estimate follows at once.
    _feed(est, now, now + 1.0, 400_000)
    assert est.estimate >= 390_000


@given(
    start=st.integers(0, 0xFFFF),
    max_statuses=st.sampled_from([16, 500]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("rec"), st.integers(-30, 40)),
            st.tuples(st.just("rec"), st.sampled_from([-1024, 1024, 2048, -700, 900, 3000])),
            st.tuples(st.just("fb"), st.just(0)),
        ),
        max_size=150,
    ),
)
def test_recorder_reports_exactly_what_arrived(start: int, max_statuses: int, ops: list[tuple[str, int]]) -> None:
    """A model check of the recorder: packets arrive reordered, duplicated, across the wrap
    and far ahead, with feedback due in between. Each feedback run starts where the last one
    ended (or, after a gap longer than a feedback, at the first arrival) and ends at the
    highest arrival, skipping only losses; a number is received, with its first arrival's
    time (to the 250 us tick), exactly when it arrived in that interval; a packet whose number
    was already reported is late; every status is counted once."""
    rec = TwccRecorder(1, 2, interval=0.0, max_statuses=max_statuses)
    first: dict[int, float] = {}  # this interval's arrivals (not late): the first time of each
    next_base = -1
    ext, top, now = start + 0x10000, start + 0x10000, 100.0
    late = recorded = received = lost = 0
    for kind, step in [*ops, ("fb", 0)]:
        now += 0.001
        if kind == "rec":
            # Stay within half the 16-bit space of the highest number sent, as senders do.
            ext = max(ext + step, top - 30_000, 0x10000 - 20)
            top = max(top, ext)
            if ext < next_base:
                late += 1
            else:
                first.setdefault(ext, now)
            rec.record(ext & 0xFFFF, now)
            continue
        got = _feedbacks(rec.handle_timeout(now))
        arrived, first = first, {}
        recorded += len(arrived)
        if not arrived:
            assert got == []
            continue
        lo, hi = min(arrived), max(arrived)
        base = lo if next_base < 0 or lo - next_base > max_statuses else next_base
        assert got
        for fb in got:
            # A feedback's worth of losses in a row is skipped, not sent.
            skipped = (fb.base_seq - base) & 0xFFFF
            assert not set(arrived) & set(range(base, base + skipped))
            base += skipped
            assert 0 < len(fb.statuses) <= max_statuses
            for i, (seq, arrival) in enumerate(fb.packets()):
                e = base + i
                assert seq == e & 0xFFFF
                if arrival is None:
                    assert e not in arrived
                    lost += 1
                else:
                    assert arrival == pytest.approx(arrived[e], abs=0.000126)
                    received += 1
            base += len(fb.statuses)
        assert base == hi + 1  # the run ends at the highest arrival, nothing reported twice
        next_base = hi + 1
    assert (rec.late, rec.recorded) == (late, recorded)
    assert (rec.reported_received, rec.reported_lost) == (received, lost)
