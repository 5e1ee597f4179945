"""InboundQueue: reassembly (RFC 4960 s6.9) in any arrival order, ordered delivery, FORWARD TSN (RFC 3758 s3.6)."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.webrtc.sctp.packet import DataChunk
from trackmesh.transports.webrtc.sctp.receiver import InboundQueue

PPID = 53


def fragments(
    messages: list[tuple[int, bool, bytes]], first_tsn: int, fragment: int
) -> tuple[list[DataChunk], list[tuple[int, int]]]:
    """DATA chunks for ``messages`` (stream, unordered, payload) with consecutive TSNs from ``first_tsn``, and
    each ordered message's (stream, SSN)."""
    chunks: list[DataChunk] = []
    ssns: dict[int, int] = {}
    keys: list[tuple[int, int]] = []
    tsn = first_tsn
    for stream, unordered, payload in messages:
        ssn = 0 if unordered else ssns.get(stream, 0)
        if not unordered:
            ssns[stream] = (ssn + 1) & 0xFFFF
        keys.append((stream, ssn))
        pieces = [payload[i : i + fragment] for i in range(0, len(payload), fragment)]
        for i, piece in enumerate(pieces):
            chunks.append(DataChunk(tsn, stream, ssn, PPID, piece, unordered, i == 0, i == len(pieces) - 1))
            tsn = (tsn + 1) & 0xFFFFFFFF
    return chunks, keys


def assert_empty(q: InboundQueue) -> None:
    assert q.buffered == 0
    assert not q._chunks and not q._run_end and not q._run_start and not any(q._waiting.values())


def test_in_order_fragments_cost_constant_work_each() -> None:
    # Regression: every fragment used to walk back to its message's first fragment (quadratic). Chrome fills a
    # nearly full congestion window with 50-100 byte fragments: a 256 KB message in 64-byte fragments took 1.3 s.
    n = 4096
    payload = bytes(range(256)) * (n * 64 // 256)
    chunks, _ = fragments([(1, False, payload)], 1000, 64)
    assert len(chunks) == n
    q = InboundQueue(1000, 1 << 20)
    calls = 0
    joins = q._joins

    def counting(a: DataChunk, b: DataChunk) -> bool:
        nonlocal calls
        calls += 1
        return joins(a, b)

    q._joins = counting  # type: ignore[method-assign]
    for c in chunks:
        assert q.receive(c)
    assert calls <= 2 * n
    assert [m.data for m in q.delivered] == [payload]
    assert_empty(q)


def test_reverse_order_fragments_also_join_in_constant_work() -> None:
    n = 2000
    payload = b"".join(struct.pack("!I", i) for i in range(n))
    chunks, _ = fragments([(0, True, payload)], 5, 4)
    q = InboundQueue(5, 1 << 20)
    calls = 0
    joins = q._joins

    def counting(a: DataChunk, b: DataChunk) -> bool:
        nonlocal calls
        calls += 1
        return joins(a, b)

    q._joins = counting  # type: ignore[method-assign]
    for c in reversed(chunks):
        q.receive(c)
    assert calls <= 2 * n
    assert [m.data for m in q.delivered] == [payload]
    assert_empty(q)


message = st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, 2500))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(message, min_size=1, max_size=25),
    st.integers(1, 700),
    st.one_of(st.sampled_from([0, 1, 0xFFFFFFF0, 0xFFFFFFFF, 0x7FFFFFFF]), st.integers(0, 0xFFFFFFFF)),
    st.randoms(use_true_random=False),
)
def test_any_arrival_order_with_duplicates_delivers_every_message_once(
    spec: list[tuple[int, bool, int]], fragment: int, first_tsn: int, rnd: random.Random
) -> None:
    messages = [(s, u, struct.pack("!H", i) * (size // 2 + 1)) for i, (s, u, size) in enumerate(spec)]
    chunks, keys = fragments(messages, first_tsn, fragment)
    arrival = chunks + rnd.sample(chunks, min(len(chunks), 10))  # some arrive twice
    rnd.shuffle(arrival)
    q = InboundQueue(first_tsn, 1 << 24)
    accepted = sum(q.receive(c) for c in arrival)
    assert accepted == len(chunks)
    assert q.cumulative_tsn == chunks[-1].tsn and not q.has_gaps
    got = [(m.stream_id, m.unordered, m.data) for m in q.delivered]
    assert sorted(got) == sorted(messages)
    for stream in range(3):  # ordered messages of a stream come in SSN order, whatever the arrival order
        sent = [m for m, (s, _) in zip(messages, keys, strict=True) if s == stream and not m[1]]
        assert [g for g in got if g[0] == stream and not g[1]] == sent
    assert_empty(q)


def test_forward_tsn_drops_abandoned_fragments_and_unblocks_the_stream() -> None:
    a = (7, False, b"A" * 40)  # SSN 0: four fragments, the last one lost
    b = (7, False, b"B" * 20)  # SSN 1: two fragments
    chunks, _ = fragments([a, b], 100, 10)
    q = InboundQueue(100, 1 << 20)
    for c in chunks[:3] + chunks[4:]:
        q.receive(c)
    assert not q.delivered and q.buffered == 50  # B waits behind A
    q.forward_tsn(103, ((7, 0),))  # the sender abandoned A (RFC 3758 s3.5)
    assert [m.data for m in q.delivered] == [b"B" * 20]
    assert_empty(q)


def test_forward_tsn_short_of_a_message_drops_its_surviving_tail() -> None:
    a = (3, True, b"A" * 30)  # TSN 10..12: the first one lost, 11 and 12 stored
    c = (3, True, b"C" * 5)  # TSN 13
    chunks, _ = fragments([a, c], 10, 10)
    q = InboundQueue(10, 1 << 20)
    for ch in chunks[1:]:
        q.receive(ch)
    assert [m.data for m in q.delivered] == [b"C" * 5] and q.buffered == 20
    q.forward_tsn(10, ())  # skips A's first fragment only: 11-12 can never complete
    assert q.cumulative_tsn == 13
    assert_empty(q)


def test_a_message_that_never_ends_in_tiny_fragments_hits_the_fragment_limit() -> None:
    """In-sequence data is accepted past the window (RFC 4960 s6.2), so a peer that sends 1-byte fragments of one
    message forever must be stopped by a count: MAX_HELD_CHUNKS, then OutOfResource (the association aborts)."""
    from trackmesh.transports.webrtc.sctp.receiver import MAX_HELD_CHUNKS, OutOfResource

    q = InboundQueue(100, window=1 << 20)
    for i in range(MAX_HELD_CHUNKS):
        assert q.receive(DataChunk(100 + i, 0, 0, PPID, b"x", False, i == 0, False))
    try:
        q.receive(DataChunk(100 + MAX_HELD_CHUNKS, 0, 0, PPID, b"x", False, False, False))
    except OutOfResource as exc:
        assert f"{MAX_HELD_CHUNKS} fragments" in str(exc)
    else:
        raise AssertionError("the fragment limit did not hold")


def test_a_message_that_never_ends_in_big_fragments_hits_the_byte_limit() -> None:
    from trackmesh.transports.webrtc.sctp.receiver import HELD_WINDOWS_LIMIT, OutOfResource

    q = InboundQueue(0, window=64 * 1024)
    piece = bytes(1024)
    tsn = 0
    try:
        while True:
            q.receive(DataChunk(tsn, 0, 0, PPID, piece, False, tsn == 0, False))
            tsn += 1
    except OutOfResource:
        pass
    assert q.buffered <= HELD_WINDOWS_LIMIT * q.window + len(piece)
    assert tsn == HELD_WINDOWS_LIMIT * 64 + 1
