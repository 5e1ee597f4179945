"""SCTP associations back to back on a virtual clock, optionally through a lossy link."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackmesh.transports.webrtc.sctp.association import (
    AssociationClosed,
    AssociationEstablished,
    AssociationState,
    DataReceived,
    IncomingStreamsReset,
    OutgoingStreamsReset,
    SctpAssociation,
)
from trackmesh.transports.webrtc.sctp.packet import (
    CookieEchoChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    build_packet,
    parse_packet,
)


def state_now(assoc: SctpAssociation) -> AssociationState:
    """``assoc.state``, read afresh: mypy keeps an attribute narrowed by an earlier assert across
    the calls that change it."""
    return assoc.state


class Endpoint(Protocol):
    def handle_data(self, now: float, data: bytes) -> None: ...
    def poll_transmit(self, now: float) -> bytes | None: ...
    def handle_timeout(self, now: float) -> None: ...
    def next_deadline(self) -> float | None: ...
    def poll_event(self) -> Any: ...


class Link:
    """Two endpoints connected by a seeded lossy link: drops, duplicates and reorders packets."""

    def __init__(
        self,
        a: Endpoint,
        b: Endpoint,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.01,
        seed: int = 0,
        max_size: int | None = 1163,
    ) -> None:
        self.ends = (a, b)
        self.events: tuple[list[Any], list[Any]] = ([], [])
        self.loss, self.dup, self.reorder, self.delay = loss, dup, reorder, delay
        self.rng = random.Random(seed)
        self.now = 0.0
        self.max_size = max_size
        self.sent = [0, 0]
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._seq = 0
        self.drop: Callable[[int, bytes], bool] | None = None  # per-packet filter for targeted loss

    def _pump(self) -> None:
        for i, src in enumerate(self.ends):
            while (pkt := src.poll_transmit(self.now)) is not None:
                if self.max_size is not None:
                    assert len(pkt) <= self.max_size
                self.sent[i] += 1
                if self.drop is not None and self.drop(i, pkt):
                    continue
                if self.rng.random() < self.loss:
                    continue
                copies = 2 if self.rng.random() < self.dup else 1
                for _ in range(copies):
                    extra = self.rng.random() * 0.05 if self.rng.random() < self.reorder else 0.0
                    self._seq += 1
                    heapq.heappush(self._queue, (self.now + self.delay + extra, self._seq, 1 - i, pkt))

    def _drain(self) -> None:
        for i, end in enumerate(self.ends):
            while (ev := end.poll_event()) is not None:
                self.events[i].append(ev)

    def step(self) -> bool:
        self._pump()
        delivered = False
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, pkt = heapq.heappop(self._queue)
            self.ends[dst].handle_data(self.now, pkt)
            delivered = True
        self._drain()
        if delivered:
            return True
        times = [t for t in (e.next_deadline() for e in self.ends) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        for end in self.ends:
            end.handle_timeout(self.now)
        self._drain()
        return True

    def run(self, until: Callable[[], bool], timeout: float = 120.0) -> None:
        while not until():
            assert self.now < timeout, "timed out on the virtual clock"
            if not self.step():
                break
        assert until()

    def settle(self, duration: float) -> None:
        end = self.now + duration
        while self.now < end and self.step():
            pass


def pair(**kw: Any) -> tuple[SctpAssociation, SctpAssociation]:
    seeds = [random.Random(kw.pop("seed", 1)), random.Random(99)]
    a = SctpAssociation(cookie_key=b"a" * 32, random_bytes=seeds[0].randbytes, **kw)
    b = SctpAssociation(cookie_key=b"b" * 32, random_bytes=seeds[1].randbytes, **kw)
    return a, b


def established(link: Link) -> Callable[[], bool]:
    return lambda: all(any(isinstance(e, AssociationEstablished) for e in evs) for evs in link.events)


def messages(events: list[Any], stream: int | None = None) -> list[bytes]:
    return [e.data for e in events if isinstance(e, DataReceived) and (stream is None or e.stream_id == stream)]


def connected(*, initiator: str = "a", **link_kw: Any) -> tuple[SctpAssociation, SctpAssociation, Link]:
    a, b = pair()
    link = Link(a, b, **link_kw)
    if initiator in ("a", "both"):
        a.connect(0.0)
    if initiator in ("b", "both"):
        b.connect(0.0)
    link.run(established(link))
    return a, b, link


@pytest.mark.parametrize("initiator", ["a", "b", "both"])
def test_handshake(initiator: str) -> None:
    a, b, link = connected(initiator=initiator)
    assert a.state is AssociationState.ESTABLISHED and b.state is AssociationState.ESTABLISHED
    a.send(1, 53, b"ping")
    b.send(2, 53, b"pong")
    link.run(lambda: bool(messages(link.events[1])) and bool(messages(link.events[0])))
    assert messages(link.events[1]) == [b"ping"] and messages(link.events[0]) == [b"pong"]


def test_simultaneous_init_is_one_association() -> None:
    a, b, link = connected(initiator="both")
    assert a._peer_tag == b._local_tag and b._peer_tag == a._local_tag
    assert sum(isinstance(e, AssociationEstablished) for e in link.events[0]) == 1


def test_handshake_survives_lost_init_and_cookie() -> None:
    a, b = pair()
    link = Link(a, b)
    lost: set[str] = set()

    def drop(src: int, pkt: bytes) -> bool:
        kind = type(parse_packet(pkt).chunks[0]).__name__
        if kind in ("InitChunk", "CookieEchoChunk") and kind not in lost:
            lost.add(kind)
            return True
        return False

    link.drop = drop
    a.connect(0.0)
    link.run(established(link))
    assert lost == {"InitChunk", "CookieEchoChunk"}
    assert link.now >= 3.0  # two T1 expiries (1 s, then 2 s)


def test_forged_cookie_is_dropped() -> None:
    _a, b = pair()
    init = build_packet(5000, 5000, 0, (InitChunk(1234, 65536, 10, 10, 1),))
    b.handle_data(0.0, init)
    init_ack = parse_packet(b.poll_transmit(0.0) or b"").chunks[0]
    assert isinstance(init_ack, InitAckChunk)
    cookie, tag = init_ack.state_cookie, init_ack.initiate_tag
    forged = cookie[:-1] + bytes([cookie[-1] ^ 1])
    b.handle_data(0.1, build_packet(5000, 5000, tag, (CookieEchoChunk(forged),)))
    assert b.state is AssociationState.CLOSED and b.stats.packets_dropped == 1
    b.handle_data(61.0, build_packet(5000, 5000, tag, (CookieEchoChunk(cookie),)))
    assert b.state is AssociationState.CLOSED  # stale
    b.handle_data(1.0, build_packet(5000, 5000, tag, (CookieEchoChunk(cookie),)))
    assert state_now(b) is AssociationState.ESTABLISHED


def test_garbage_is_dropped_and_counted() -> None:
    _a, b, link = connected()
    for junk in (b"", b"\x00" * 5, b"\x13" * 40, bytes(range(256))):
        b.handle_data(link.now, junk)
    assert b.stats.packets_dropped == 4
    assert b.state is AssociationState.ESTABLISHED


SIZES = [1, 2, 100, 1131, 1132, 1135, 1136, 5000, 65535, 65536, 100_000, 256 * 1024]


def test_message_sizes_reassembled_intact() -> None:
    a, _b, link = connected(max_size=1163)
    payloads = [bytes(random.Random(n).randbytes(n)) for n in SIZES]
    for p in payloads:
        a.send(1, 53, p)
    link.run(lambda: len(messages(link.events[1])) == len(payloads))
    assert messages(link.events[1]) == payloads


def test_max_packet_size_is_respected() -> None:
    a, b = pair(max_packet_size=600)
    link = Link(a, b, max_size=600)
    a.connect(0.0)
    link.run(established(link))
    a.send(0, 53, b"x" * 10_000)
    link.run(lambda: messages(link.events[1]) == [b"x" * 10_000])


def test_ordered_and_unordered_delivery_with_reordering() -> None:
    a, _b, link = connected(reorder=0.5, seed=3)
    ordered = [f"o{i}".encode() for i in range(200)]
    unordered = [f"u{i}".encode() for i in range(200)]
    for o, u in zip(ordered, unordered, strict=True):
        a.send(1, 51, o)
        a.send(2, 51, u, unordered=True)
    link.run(lambda: len(messages(link.events[1])) == 400)
    assert messages(link.events[1], 1) == ordered
    got_u = messages(link.events[1], 2)
    assert sorted(got_u) == sorted(unordered)
    assert got_u != unordered  # the link reordered some and unordered delivery did not wait
    flags = {e.unordered for e in link.events[1] if isinstance(e, DataReceived) and e.stream_id == 2}
    assert flags == {True}


def test_reliable_channel_recovers_from_20_percent_loss() -> None:
    a, _b, link = connected(loss=0.2, dup=0.05, reorder=0.2, seed=7)
    payloads = [random.Random(i).randbytes(random.Random(i).randint(1, 4000)) for i in range(300)]
    for p in payloads:
        a.send(3, 53, p)
    link.run(lambda: len(messages(link.events[1])) == len(payloads), timeout=600)
    assert messages(link.events[1]) == payloads
    assert a.stats.retransmissions > 0 and a.stats.fast_retransmissions > 0
    link.run(lambda: not a._out.outstanding)


@pytest.mark.parametrize("mode", ["rexmit", "lifetime"])
@pytest.mark.parametrize("unordered", [False, True])
def test_unreliable_channel_with_loss_moves_on(mode: str, unordered: bool) -> None:
    a, b, link = connected(loss=0.2, seed=11)
    kw: dict[str, Any] = {"max_retransmits": 0} if mode == "rexmit" else {"expires": link.now + 0.05}
    payloads = [f"m{i}".encode() * 300 for i in range(300)]  # about 1-2 chunks each
    for p in payloads:
        a.send(4, 53, p, unordered=unordered, **kw)
    link.settle(30.0)
    got = messages(link.events[1], 4)
    assert got and len(got) < len(payloads)
    assert set(got) <= set(payloads)
    if not unordered:
        assert got == [p for p in payloads if p in set(got)]  # still in order
    assert a.stats.messages_abandoned > 0
    # FORWARD TSN moved the receiver's cumulative TSN past every abandoned chunk.
    assert not a._out.outstanding
    assert b._inbound.cumulative_tsn == (a._out.next_tsn - 1) & 0xFFFFFFFF
    link.loss = 0.0
    a.send(4, 53, b"after", unordered=unordered)
    a.send(5, 53, b"reliable")
    link.run(lambda: b"reliable" in messages(link.events[1]) and b"after" in messages(link.events[1]))


def test_stream_reset_restarts_ssn() -> None:
    a, _b, link = connected()
    for i in range(5):
        a.send(7, 51, f"before{i}".encode())
    a.reset_streams([7])
    with pytest.raises(Exception, match="being reset"):
        a.send(7, 51, b"x")
    link.run(lambda: any(isinstance(e, OutgoingStreamsReset) for e in link.events[0]))
    assert OutgoingStreamsReset((7,), True) in link.events[0]
    assert IncomingStreamsReset((7,)) in link.events[1]
    assert messages(link.events[1], 7) == [f"before{i}".encode() for i in range(5)]
    # A reset event comes after all the stream's data.
    idx = link.events[1].index(IncomingStreamsReset((7,)))
    assert all(not isinstance(e, DataReceived) for e in link.events[1][idx + 1 :])
    a.send(7, 51, b"fresh")
    link.run(lambda: b"fresh" in messages(link.events[1], 7))


def test_stream_reset_deferred_under_loss() -> None:
    a, _b, link = connected(loss=0.3, seed=5)
    for i in range(50):
        a.send(9, 51, f"m{i}".encode() * 100)
    a.reset_streams([9])
    link.run(lambda: any(isinstance(e, OutgoingStreamsReset) for e in link.events[0]), timeout=300)
    assert messages(link.events[1], 9) == [f"m{i}".encode() * 100 for i in range(50)]
    assert IncomingStreamsReset((9,)) in link.events[1]


def test_graceful_shutdown_delivers_queued_data() -> None:
    a, b, link = connected(loss=0.1, seed=2)
    for i in range(20):
        a.send(1, 53, bytes([i]) * 3000)
    a.shutdown(link.now)
    with pytest.raises(Exception, match="cannot send"):
        a.send(1, 53, b"late")
    link.run(lambda: all(any(isinstance(e, AssociationClosed) for e in evs) for evs in link.events), timeout=300)
    assert len(messages(link.events[1])) == 20
    assert AssociationClosed(None) in link.events[0] and AssociationClosed(None) in link.events[1]
    assert a.next_deadline() is None and b.next_deadline() is None


def test_shutdown_timer_runs_from_the_given_now() -> None:
    # RFC 4960 s9.2: T2-shutdown starts when SHUTDOWN is sent; the association keeps no clock of its
    # own, so after an idle spell it starts from the now given to shutdown(), not the last input.
    a, b, link = connected()
    deadline = a.next_deadline()
    assert deadline is not None and deadline > link.now + 10.0  # only the heartbeat timer is left
    later = link.now + 5.0
    a.shutdown(later)
    assert a.state is AssociationState.SHUTDOWN_SENT
    assert a.next_deadline() == pytest.approx(later + a._out.rto)
    link.now = later
    link.run(lambda: all(any(isinstance(e, AssociationClosed) for e in evs) for evs in link.events))
    assert AssociationClosed(None) in link.events[0] and AssociationClosed(None) in link.events[1]
    assert b.state is AssociationState.CLOSED


def test_abort() -> None:
    a, b, link = connected()
    a.abort("bye")
    link.run(lambda: any(isinstance(e, AssociationClosed) for e in link.events[1]))
    closed = [e for e in link.events[1] if isinstance(e, AssociationClosed)]
    assert closed[0].reason is not None and "bye" in closed[0].reason
    assert b.state is AssociationState.CLOSED
    assert b.poll_transmit(link.now) is None


def test_peer_unreachable_fails_association() -> None:
    a, _b, link = connected()
    link.loss = 1.0
    a.send(1, 53, b"into the void")
    link.run(lambda: any(isinstance(e, AssociationClosed) for e in link.events[0]), timeout=600)
    assert a.state is AssociationState.CLOSED


def test_delayed_sack_timer() -> None:
    a, b, link = connected()
    a.send(1, 53, b"one")
    pkt = a.poll_transmit(link.now)
    assert pkt is not None
    b.handle_data(link.now, pkt)
    assert b.poll_transmit(link.now) is None  # first packet: SACK is delayed
    deadline = b.next_deadline()
    assert deadline is not None and abs(deadline - (link.now + 0.2)) < 1e-9
    b.handle_timeout(deadline)
    sack = b.poll_transmit(deadline)
    assert sack is not None and type(parse_packet(sack).chunks[0]).__name__ == "SackChunk"


def test_oversized_heartbeat_is_not_echoed() -> None:
    _a, b, link = connected()
    b.handle_data(link.now, build_packet(5000, 5000, b._local_tag, (HeartbeatChunk(b"x" * 1200),)))
    assert b.poll_transmit(link.now) is None
    assert b.stats.oversized_chunks_dropped == 1
    b.handle_data(link.now, build_packet(5000, 5000, b._local_tag, (HeartbeatChunk(b"hb"),)))
    ack = b.poll_transmit(link.now)
    assert ack is not None and parse_packet(ack).chunks == (HeartbeatAckChunk(b"hb"),)


def test_heartbeat_is_answered() -> None:
    a, _b, link = connected()
    link.settle(65.0)
    assert a.state is AssociationState.ESTABLISHED and a._errors == 0
    assert a._out.srtt is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 20_000), min_size=1, max_size=15),
    seed=st.integers(0, 10_000),
)
def test_random_messages_through_lossy_link_arrive_in_order(sizes: list[int], seed: int) -> None:
    a, _b, link = connected(loss=0.15, dup=0.05, reorder=0.3, seed=seed)
    rng = random.Random(seed)
    payloads = [rng.randbytes(n) for n in sizes]
    for p in payloads:
        a.send(1, 53, p)
    link.run(lambda: len(messages(link.events[1])) == len(payloads), timeout=900)
    assert messages(link.events[1]) == payloads


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_input_to_association_never_raises(data: bytes) -> None:
    _, b = pair()
    b.handle_data(0.0, data)
    # Also with a valid header and checksum so the chunk parser and state machine see it.
    b.handle_data(0.0, build_packet(5000, 5000, b._local_tag, [data + b"\x00" * (-len(data) % 4)]))


def test_a_peer_that_floods_fragments_of_an_endless_message_is_aborted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile peer sends in-sequence 1-byte fragments of a message that never ends: past the held-fragment
    limit the association is aborted (ABORT sent, AssociationClosed with the reason), not grown forever."""
    import trackmesh.transports.webrtc.sctp.receiver as receiver
    from trackmesh.transports.webrtc.sctp.packet import DataChunk, build_packet

    monkeypatch.setattr(receiver, "MAX_HELD_CHUNKS", 50)
    _a, b, link = connected()
    tsn = (b._inbound.cumulative_tsn + 1) & 0xFFFFFFFF
    for i in range(60):
        chunk = DataChunk((tsn + i) & 0xFFFFFFFF, 1, 0, 53, b"x", False, i == 0, False)
        b.handle_data(link.now, build_packet(b._remote_port, b._local_port, b._local_tag, (chunk,)))
        if b.state is AssociationState.CLOSED:
            break
    assert b.state is AssociationState.CLOSED and i == 50
    events = []
    while (ev := b.poll_event()) is not None:
        events.append(ev)
    closed = [e for e in events if isinstance(e, AssociationClosed)]
    assert closed and closed[0].reason is not None and "receive limits" in closed[0].reason, events
    abort = b.poll_transmit(link.now)
    assert abort is not None and abort[12] == 6  # chunk type 6: ABORT (RFC 4960 s3.3.7)
