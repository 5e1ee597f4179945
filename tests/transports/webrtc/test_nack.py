from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.webrtc.nack import NackGenerator, RetransmitBuffer


def test_buffer_put_get_and_stale() -> None:
    buf = RetransmitBuffer(8)
    for seq in range(65530, 65536):
        buf.put(seq, bytes([seq & 0xFF]))
    for seq in range(0, 4):
        buf.put(seq, bytes([seq]))
    assert buf.get(3) == b"\x03"
    assert buf.get(65535) == b"\xff"
    assert buf.get(65532) == b"\xfc"
    # 65530 and 65531 were overwritten by 2 and 3 (same ring slots).
    assert buf.get(65530) is None
    assert buf.get(65531) is None
    assert buf.get(4) is None  # not sent yet
    assert buf.get(30000) is None  # far away
    assert buf.hits == 3 and buf.misses == 4


def test_buffer_gap_leaves_stale_slot_detected() -> None:
    buf = RetransmitBuffer(4)
    buf.put(0, b"a")
    buf.put(1, b"b")
    buf.put(5, b"f")  # slot 1 now holds seq 5; seq 1 is outside the window anyway
    assert buf.get(1) is None
    assert buf.get(4) is None  # slot 0 still holds seq 0, not 4
    assert buf.get(5) == b"f"


def test_empty_buffer() -> None:
    assert RetransmitBuffer().get(1) is None


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=200))
def test_buffer_never_returns_wrong_packet(seqs: list[int]) -> None:
    """Arbitrary (even wildly reordered) puts never make get() return another seq's packet."""
    buf = RetransmitBuffer(16)
    for s in seqs:
        buf.put(s, s.to_bytes(2, "big"))
    for s in set(seqs):
        got = buf.get(s)
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
        buf.put(seq, seq.to_bytes(2, "big"))
        sent.append(seq)
    assert buf.get(sent[-1]) == sent[-1].to_bytes(2, "big")
    newest = start + sum(steps)
    for i, s in enumerate(sent):
        ext = start + sum(steps[: i + 1])
        expected = s.to_bytes(2, "big") if newest - ext < 32 else None
        assert buf.get(s) == expected
