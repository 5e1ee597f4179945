from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.rtp.nack import NackGenerator, RetransmitBuffer


def header_of(buf: RetransmitBuffer, seq: int, now: float = 0.0) -> bytes | None:
    entry = buf.get(seq, now)
    return None if entry is None else entry[0]


def test_buffer_put_get_and_stale() -> None:
    buf = RetransmitBuffer(8)
    for seq in range(65530, 65536):
        buf.put(seq, bytes([seq & 0xFF]), b"", 0.0)
    for seq in range(0, 4):
        buf.put(seq, bytes([seq]), b"", 0.0)
    assert header_of(buf, 3) == b"\x03"
    assert header_of(buf, 65535) == b"\xff"
    assert header_of(buf, 65532) == b"\xfc"
    # 65530 and 65531 were overwritten by 2 and 3 (same ring slots).
    assert header_of(buf, 65530) is None
    assert header_of(buf, 65531) is None
    assert header_of(buf, 4) is None  # not sent yet
    assert header_of(buf, 30000) is None  # far away
    assert buf.hits == 3 and buf.misses == 4


def test_buffer_gap_leaves_stale_slot_detected() -> None:
    buf = RetransmitBuffer(4)
    buf.put(0, b"a", b"", 0.0)
    buf.put(1, b"b", b"", 0.0)
    buf.put(5, b"f", b"", 0.0)  # slot 1 now holds seq 5; seq 1 is outside the window anyway
    assert header_of(buf, 1) is None
    assert header_of(buf, 4) is None  # slot 0 still holds seq 0, not 4
    assert header_of(buf, 5) == b"f"


def test_buffer_keeps_the_payload_by_reference_and_expires_by_age() -> None:
    buf = RetransmitBuffer(512, max_age=1.0)
    source = bytes(1000)
    shared = memoryview(source)[12:]
    buf.put(7, b"hdr7", shared, 10.0)
    buf.put(8, b"hdr8", shared, 10.5)
    entry = buf.get(7, 10.9)
    assert entry is not None and entry[0] == b"hdr7" and entry[1] is shared  # no copy per viewer
    assert buf.get(7, 11.0) is not None  # exactly max_age old: still useful
    assert buf.get(7, 11.01) is None  # older than max_age: a late NACK is not answered
    assert buf.get(8, 11.01) is not None
    assert (buf.hits, buf.misses) == (3, 1)


def test_buffer_releases_payloads_older_than_max_age() -> None:
    """5 s of 100 packets/s through a 512 ring: only about the last second's payloads stay referenced (a source's
    buffers are freed after max_age, not after 512 packets), and what is still within max_age is still answered."""
    buf = RetransmitBuffer(512, max_age=1.0)
    for i in range(500):
        buf.put(i, b"h%d" % i, b"p" * 1000, i / 100)
    now = 499 / 100
    held = sum(1 for e in buf._payloads if len(e) == 1000)
    assert 100 <= held <= 100 + 8, held  # released every 8th packet
    for i in range(400, 500):
        entry = buf.get(i, now)
        assert entry is not None and entry[0] == b"h%d" % i and len(entry[1]) == 1000
    assert buf.get(300, now) is None


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 0.05)), min_size=1, max_size=300))
def test_released_slots_are_never_returned(steps: list[tuple[int, float]]) -> None:
    """Whatever the order, a get() never hands out a released (emptied) slot as a packet."""
    buf = RetransmitBuffer(64, max_age=0.2)
    now = 0.0
    for seq, dt in steps:
        now += dt
        buf.put(seq, seq.to_bytes(2, "big"), b"x", now)
    for seq, _ in steps:
        entry = buf.get(seq, now)
        assert entry is None or (entry[0] == seq.to_bytes(2, "big") and entry[1] == b"x")


@given(st.integers(0, 0xFFFF), st.lists(st.floats(0, 0.03), min_size=1, max_size=400))
def test_ring_grows_to_hold_what_is_younger_than_max_age(first: int, gaps: list[float]) -> None:
    """Sent in order at any pace: every packet younger than ``max_age`` and among the last ``size`` sent is
    answered, however small the ring started; it never grows past ``size``."""
    buf = RetransmitBuffer(64, max_age=0.25, initial=4)
    now = 0.0
    sent: list[tuple[int, float]] = []
    for i, dt in enumerate(gaps):
        now += dt
        seq = (first + i) & 0xFFFF
        buf.put(seq, seq.to_bytes(2, "big"), b"p", now)
        sent.append((seq, now))
        for back, (s, t) in enumerate(reversed(sent)):
            if back >= 64 or now - t >= 0.25:
                break
            assert header_of(buf, s, now) == s.to_bytes(2, "big")
    assert buf._mask + 1 <= 64


def test_ring_size_follows_the_rate() -> None:
    """1 Mbps video (about 115 packets/s) with max_age 1 s fits in 128 slots; 400 packets/s takes 512."""
    slow, fast = RetransmitBuffer(512), RetransmitBuffer(512)
    for i in range(1000):
        slow.put(i & 0xFFFF, b"h", b"p", i / 115)
        fast.put(i & 0xFFFF, b"h", b"p", i / 400)
    assert (slow._mask + 1, fast._mask + 1) == (128, 512)
    assert slow.get(999, 999 / 115) is not None and slow.get(999 - 114, 999 / 115) is not None
    with pytest.raises(ValueError):
        RetransmitBuffer(512, initial=48)


def test_empty_buffer() -> None:
    assert header_of(RetransmitBuffer(), 1) is None


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=200))
def test_buffer_never_returns_wrong_packet(seqs: list[int]) -> None:
    """Arbitrary (even wildly reordered) puts never make get() return another seq's packet."""
    buf = RetransmitBuffer(16)
    for s in seqs:
        buf.put(s, s.to_bytes(2, "big"), b"", 0.0)
    for s in set(seqs):
        got = header_of(buf, s)
        assert got is None or got == s.to_bytes(2, "big")


def test_generator_gap_retry_and_recovery() -> None:
    gen = NackGenerator(retry_interval=0.1, reorder_delay=0.01, max_retries=3, max_age=5.0)
    gen.on_packet(65533, 0.0)
    gen.on_packet(1, 0.0)  # 65534, 65535, 0 missing across the wrap
    assert gen.missing == [65534, 65535, 0]
    assert gen.handle_timeout(0.005) == []  # within the reorder delay
    assert gen.next_timeout() == 0.01
    assert gen.handle_timeout(0.01) == [65534, 65535, 0]
    assert gen.handle_timeout(0.05) == []
    gen.on_packet(65535, 0.06)  # retransmission arrives
    assert gen.recovered == 1
    assert gen.handle_timeout(0.11) == [65534, 0]
    assert gen.handle_timeout(0.22) == [65534, 0]
    assert gen.handle_timeout(0.33) == []  # three retries used up
    assert gen.given_up == 2
    assert gen.missing == []
    assert gen.next_timeout() is None


def test_generator_max_age() -> None:
    gen = NackGenerator(reorder_delay=0.0, max_age=0.5, retry_interval=0.1)
    gen.on_packet(10, 0.0)
    gen.on_packet(12, 0.0)
    assert gen.handle_timeout(0.0) == [11]
    assert gen.handle_timeout(0.6) == []
    assert gen.given_up == 1


def test_generator_huge_gap_asks_for_keyframe() -> None:
    gen = NackGenerator(max_gap=100)
    gen.on_packet(0, 0.0)
    gen.on_packet(5000, 0.0)
    assert gen.keyframe_needed
    assert gen.handle_timeout(1.0) == []


def test_reordered_packet_not_nacked() -> None:
    gen = NackGenerator(reorder_delay=0.02)
    gen.on_packet(1, 0.0)
    gen.on_packet(3, 0.0)
    gen.on_packet(2, 0.01)
    assert gen.handle_timeout(0.05) == []
    assert gen.recovered == 1


@given(st.lists(st.integers(0, 5), min_size=1, max_size=100))
def test_generator_only_nacks_never_received(gaps: list[int]) -> None:
    gen = NackGenerator(reorder_delay=0.0)
    seq = 65500
    received = set()
    for g in gaps:
        seq = (seq + 1 + g) & 0xFFFF
        gen.on_packet(seq, 0.0)
        received.add(seq)
    nacked = gen.handle_timeout(0.0)
    assert not set(nacked) & received
    assert len(nacked) == sum(gaps[1:])


@given(st.integers(0, 0xFFFF), st.lists(st.integers(1, 20), min_size=1, max_size=100))
def test_buffer_in_order_window(start: int, steps: list[int]) -> None:
    buf = RetransmitBuffer(32)
    sent = []
    seq = start
    for step in steps:
        seq = (seq + step) & 0xFFFF
        buf.put(seq, seq.to_bytes(2, "big"), b"", 0.0)
        sent.append(seq)
    assert header_of(buf, sent[-1]) == sent[-1].to_bytes(2, "big")
    newest = start + sum(steps)
    for i, s in enumerate(sent):
        ext = start + sum(steps[: i + 1])
        expected = s.to_bytes(2, "big") if newest - ext < 32 else None
        assert header_of(buf, s) == expected


def _uncached_next_timeout(gen: NackGenerator) -> float | None:
    """What next_timeout() must return, computed from scratch (the generator caches it)."""
    best: float | None = None
    for m in gen._missing.values():
        if m.retries >= gen.max_retries:
            t = m.last_sent
        elif m.retries == 0:
            t = m.detected + gen.reorder_delay
        else:
            t = min(m.last_sent + gen.retry_interval, m.detected + gen.max_age)
        best = t if best is None else min(best, t)
    return best


@given(st.lists(st.tuples(st.sampled_from(["pkt", "timeout", "rtt", "ask"]), st.integers(-20, 40),
                          st.floats(0, 0.2)), max_size=120))
def test_cached_next_timeout_is_always_the_fresh_one(ops: list[tuple[str, int, float]]) -> None:
    gen = NackGenerator(max_gap=30, max_retries=3, max_age=0.5)
    seq, now = 1000, 0.0
    for op, n, dt in ops:
        now += dt
        if op == "pkt":
            seq = (seq + n) & 0xFFFF
            gen.on_packet(seq, now)
        elif op == "timeout":
            gen.handle_timeout(now)
        elif op == "rtt":
            gen.retry_interval = 0.01 + dt
        assert gen.next_timeout() == _uncached_next_timeout(gen)
